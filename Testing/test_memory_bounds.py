"""Memory bounded by the box (issue 24, item 11): intensity statistics and windowing without a whole-volume
float64 copy, a box run that windows and walks only the slices its boxes cover (exactly the whole-volume result),
and a clear error, not a traceback, when memory runs out anyway. Peak memory of the real case (512 x 512 x 2000
int16, a 3-slice box) is measured by ``benchmarks/bench_memory.py``; here numpy's own allocations are counted
with ``tracemalloc`` (deterministic, not timed)."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from faults_util import blob_3d, error_line, run_cli, snapshot, write_image
from medseg_backend import intensity
from medseg_backend.intensity import apply_intensity, cut_slab, intensity_stats, parse_preset


def _reference(array, rule):
    """MedSAM's rule as published (pre_CT_MR.py): float64 over the whole volume at once."""
    data = np.asarray(array, dtype=np.float64)
    if rule.kind == "window":
        clipped = np.clip(data, rule.level - rule.width / 2.0, rule.level + rule.width / 2.0)
    else:
        positive = data[data > 0]
        clipped = np.clip(data, np.percentile(positive, 0.5), np.percentile(positive, 99.5))
    lo, hi = clipped.min(), clipped.max()
    out = np.zeros(data.shape) if hi <= lo else (clipped - lo) / (hi - lo) * 255.0
    if rule.kind == "mr":
        out[data == 0] = 0
    return out.astype(np.uint8)


def _volumes():
    rng = np.random.default_rng(7)
    yield "int16 CT", rng.integers(-1024, 2500, (12, 40, 36)).astype(np.int16)
    yield "uint16 MR", rng.integers(0, 3000, (9, 33, 31)).astype(np.uint16)
    yield "float32 MR", (rng.gamma(2.0, 150.0, (10, 30, 30)) * (rng.random((10, 30, 30)) > 0.2)).astype(np.float32)
    yield "float64", rng.normal(100, 300, (7, 20, 25))


@pytest.mark.parametrize("preset", ["mr", "ct-abdomen", "window:500,1200"])
@pytest.mark.parametrize("chunk", [1, 77, 1 << 22])
def test_windowing_in_pieces_and_slabs_is_the_whole_volume_rule_bit_for_bit(monkeypatch, preset, chunk):
    monkeypatch.setattr(intensity, "CHUNK_VOXELS", chunk)
    rule = parse_preset(preset)
    for name, vol in _volumes():
        whole = _reference(vol, rule)
        np.testing.assert_array_equal(apply_intensity(vol, rule), whole, err_msg=name)
        for axis in (0, 1, 2):
            slab = cut_slab(vol, axis, 2, 5, rule)
            np.testing.assert_array_equal(slab.windowed(), whole[slab.index], err_msg=f"{name} axis {axis}")


def test_mr_percentiles_equal_numpy():
    rule = parse_preset("mr")
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 199, 200, 201, 5000):
        for vol in (rng.integers(-5, 4000, n).astype(np.int16), rng.random(n).astype(np.float32) - 0.1):
            if not (vol > 0).any():
                continue
            stats = intensity_stats(vol, rule)
            pos = vol[vol > 0].astype(np.float64)
            assert (stats.clip_lo, stats.clip_hi) == (float(np.percentile(pos, 0.5)), float(np.percentile(pos, 99.5)))


@pytest.mark.parametrize("preset", ["mr", "ct-abdomen"])
def test_no_whole_volume_float64_copy(preset):
    """Statistics + windowing of a 32 MiB int16 volume allocate less than the volume's own size (the uint8 result
    is half of it); the published rule allocates about 4 float64 copies (16x the volume)."""
    vol = np.random.default_rng(0).integers(-1000, 1500, (64, 512, 512)).astype(np.int16)
    rule = parse_preset(preset)
    tracemalloc.start()
    try:
        apply_intensity(vol, rule)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.8 * vol.nbytes, f"{peak / vol.nbytes:.2f} x the volume"
    peaks = []
    for deep in (vol, np.concatenate([vol, vol])):       # a 3-slice slab costs the same in a twice deeper volume
        tracemalloc.start()
        try:
            cut_slab(deep, 0, 30, 32, rule).windowed()
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[0] < 0.25 * vol.nbytes, f"a 3-slice slab allocated {peaks[0] / vol.nbytes:.2f} x the volume"
    assert peaks[1] < 1.1 * peaks[0], peaks


def test_box_run_on_a_slab_equals_the_whole_volume_run(data_dir):
    """LiteMedSAM on the bundled CT: the run on the slab the boxes cover (the engine's own, or one cut by the
    caller, who may then free the volume) gives the whole-volume result: labels, probabilities, slice records."""
    import SimpleITK as sitk

    from medseg_backend.medsam import MedSAMEngine

    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(data_dir / "totalseg_ct_sm" / "ct.nii.gz")))
    engine = MedSAMEngine("lite-medsam", device="cpu")
    boxes = [(30, 25, 12, 70, 60, 16), (60, 30, 14, 100, 70, 18)]
    for axis, bxs in (("axial", boxes), ("coronal", [(30, 40, 5, 70, 44, 25)])):
        ref = engine.segment_volume(ct, bxs, axis=axis, propagation="official")
        rule, why = intensity.resolve_preset("auto", ct)
        ax = {"axial": 0, "coronal": 1}[axis]
        lo = min(b[(2, 1)[ax]] for b in bxs)
        hi = max(b[(5, 4)[ax]] for b in bxs)
        part = engine.segment_volume(cut_slab(ct, ax, lo, hi, rule, why, copy=True), bxs, axis=axis,
                                     propagation="official")
        assert ref.labels.any() and ref.labels.shape == part.labels.shape == ct.shape
        np.testing.assert_array_equal(part.labels, ref.labels)
        np.testing.assert_array_equal(part.probabilities, ref.probabilities)
        assert [(r.object, r.slice, r.area) for r in part.slices] == [(r.object, r.slice, r.area) for r in ref.slices]
        assert [(p["z_start"], p["z_middle"]) for p in part.per_box] == [(p["z_start"], p["z_middle"])
                                                                          for p in ref.per_box]
        assert part.messages == ref.messages


def test_slab_not_covering_the_boxes_refused(data_dir):
    from medseg_backend.errors import InputError
    from medseg_backend.medsam import MedSAMEngine

    vol = blob_3d(slices=6)
    slab = cut_slab(vol, 0, 1, 2, parse_preset("ct-abdomen"))
    with pytest.raises(InputError, match="the volume slab holds 1-2: cut the slab around every box"):
        MedSAMEngine("lite-medsam", device="cpu").segment_volume(slab, [(8, 8, 0, 24, 24, 4)])


@pytest.mark.parametrize("command", ["medsam", "universeg"])
def test_out_of_memory_is_one_error_line_and_nothing_written(capsys, monkeypatch, tmp_path, command):
    vol = write_image(tmp_path / "v.nrrd", blob_3d())

    def exhausted(*a, **k):
        raise MemoryError()
    monkeypatch.setattr(intensity, "intensity_stats", exhausted)
    before = snapshot(tmp_path)
    if command == "medsam":
        argv = ["medsam", vol, "--box", "8,8,0,24,24,2", "--device", "cpu"]
    else:
        lab = write_image(tmp_path / "l.nrrd", (blob_3d() > 50).astype(np.uint8))
        before = snapshot(tmp_path)
        argv = ["universeg", vol, "--examples", f"{vol}:{lab}", "--weights", tmp_path / "none.pt"]
        monkeypatch.setattr("medseg_backend.intensity.resolve_preset", exhausted)
    code, _, err = run_cli(capsys, *argv, "-o", tmp_path / "seg.nrrd")
    assert code == 2
    assert error_line(err) == (f"error: Out of memory while segmenting {vol}: nothing was written; close other "
                               "programs, use a smaller box or ROI, or crop the volume first.")
    assert snapshot(tmp_path) == before
