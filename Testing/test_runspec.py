"""The typed run spec (issue 25): a spec built in the Slicer layer (real slicer-core scene, a volume and an ROI node
from Testing/Data) arrives in the engine unchanged, in-process and through the real worker process; an invalid
spec is refused once, at construction, with the same one-line message in the command line, the worker (over the
protocol) and the Slicer layer; every spec survives its message form."""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

from medseg_backend import slicing
from medseg_backend.cli import main
from medseg_backend.errors import InputError
from medseg_backend.runspec import BoxRun, EncodeRun, ExampleRef, ExamplesRun, Seed, from_message
from medseg_backend.worker.client import WorkerClient
from MedSegSlicerLib import geometry, labelmaps
from MedSegSlicerLib.jobs import Request
from MedSegSlicerLib.segmenter import Segmenter

REPO = Path(__file__).resolve().parents[1]

#: In the worker process: every spec MedSAMEngine.run receives, appended as its repr to $MEDSEG_TEST_CAPTURE.
CAPTURE_SITE = textwrap.dedent("""
    import os
    import medseg_backend.worker.handlers as handlers

    _medsam = handlers.EngineCache.medsam

    def medsam(self, *args, **kwargs):
        engine = _medsam(self, *args, **kwargs)
        cls = type(engine)
        if not getattr(cls, "_captured", False):
            run = cls.run

            def captured(self, spec, volume, **kw):
                with open(os.environ["MEDSEG_TEST_CAPTURE"], "a") as fh:
                    fh.write(type(spec).__module__ + "." + type(spec).__name__ + " " + repr(spec) + "\\n")
                return run(self, spec, volume, **kw)

            cls.run, cls._captured = captured, True
        return engine

    handlers.EngineCache.medsam = medsam
""")


@pytest.fixture
def liver_roi(ct_sample):
    """The CT, an ROI node around 3 slices of the liver, and a segmentation holding the liver."""
    ctx, volume, labels = ct_sample
    box = list(slicing.bbox3d(labels == 5))
    mid = (box[2] + box[5]) // 2
    box[2], box[5] = mid - 1, mid + 1
    roi = ctx.add_roi("liver ROI")
    geometry.voxel_box_to_roi(roi, volume, box)
    seg = ctx.add_segmentation("seg", volume)
    sid = labelmaps.write_mask(seg, labels == 5, volume, name="liver")
    return ctx, volume, roi, seg, sid, tuple(box)


def capture_in_process(monkeypatch):
    from medseg_backend.medsam import MedSAMEngine

    got = []
    run = MedSAMEngine.run

    def captured(self, spec, volume, **kw):
        got.append(spec)
        return run(self, spec, volume, **kw)

    monkeypatch.setattr(MedSAMEngine, "run", captured)
    return got


# --------------------------------------------------------------------------------------------------- round trip --
def test_every_spec_survives_its_message_form():
    box = BoxRun(boxes=[(1, 2, 3, 10, 20, 30), np.array([0, 0, 5, 4, 4, 9])], model="medsam-vit-b",
                 propagation="adaptive", axis="Coronal", seeds=[None, {"slice": 3, "mask": "seed1"}],
                 direction="up", outputs=["labels", "probabilities"], partial=True, intensity="window:40,400")
    assert box.axis == "coronal" and box.boxes[1] == (0, 0, 5, 4, 4, 9) and box.seeds[1] == Seed(3, "seed1")
    two_d = BoxRun(boxes=[(1, 2, 30, 40)])
    encode = EncodeRun.from_box_run(box)
    examples = ExamplesRun(examples=[{"image": "image0", "label": "label0", "name": "a", "kind": "volume",
                                      "max_slices": 5}, ExampleRef("volume", "label1")],
                           roi=(1, 2, 3, 4, 5, 6), support_size=8, ensemble=2, seed=3, tta=True)
    for spec in (box, two_d, encode, examples):
        op, params = spec.to_message()
        wire = json.loads(json.dumps(params))                      # what the worker reads
        assert type(spec).from_message(op, wire) == spec and from_message(op, wire) == spec
    assert encode == EncodeRun(model="medsam-vit-b", intensity="window:40,400", axis="coronal", slices=(0, 20))
    with pytest.raises(InputError, match=r"Unknown field\(s\) boxs in a 'segment_box' request"):
        BoxRun.from_message("segment_box", {"boxs": [[1, 2, 3, 4, 5, 6]]})


# ------------------------------------------------------------------------------- Slicer layer -> the engine --
def test_a_spec_from_the_slicer_layer_reaches_the_engine_unchanged_in_process(liver_roi, monkeypatch):
    ctx, volume, roi, seg, sid, box = liver_roi
    got = capture_in_process(monkeypatch)
    core = Segmenter(ctx, device="cpu", worker=False)
    mid = (box[2] + box[5]) // 2
    prepared = core.prepare_medsam(volume, [roi], intensity="window:40,400", propagation="roi",
                                   segmentation_node=seg, segment_id=sid, seed_slice=mid, direction="up")
    spec = prepared.spec
    assert isinstance(spec, BoxRun) and spec.seeds == (Seed(mid, "seed"),) and spec.propagation == "roi"
    assert (prepared.request.op, prepared.request.params) == spec.to_message()
    outcome = core.run(prepared)
    assert outcome.ok, outcome.message
    assert got == [spec]
    assert outcome.result.labels[mid + 1].any() and not outcome.result.labels[mid - 1].any()   # walked up only


def test_a_spec_from_the_slicer_layer_reaches_the_engine_unchanged_in_the_worker(liver_roi, tmp_path):
    ctx, volume, roi, seg, sid, box = liver_roi
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CAPTURE_SITE)
    capture = tmp_path / "specs.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]), MEDSEG_TEST_CAPTURE=str(capture))
    client = WorkerClient(env=env, hang_timeout=300)
    core = Segmenter(ctx, device="cpu", worker=client)
    try:
        prepared = core.prepare_medsam(volume, [roi], intensity="window:40,400")
        encode = core.prepare_encode(prepared)
        assert isinstance(encode.spec, EncodeRun) and encode.spec.slices == prepared.spec.slices()
        outcome = core.run(prepared)
        assert outcome.ok, outcome.message
    finally:
        client.shutdown()
    lines = capture.read_text().splitlines()
    assert lines == [f"medseg_backend.runspec.BoxRun {prepared.spec!r}"]
    assert outcome.result.labels.any()


# ---------------------------------------------------------------------- an invalid spec: one message, everywhere --
INVALID = {
    "propagation": dict(propagation="sideways"),
    "axis": dict(axis="oblique"),
    "inverted box": dict(box="inverted"),
    "seed outside the box": dict(seed="outside"),
}


def _case(box, change):
    """(spec keywords, the box) for one invalid case, from a valid 3-D box."""
    change = dict(change)
    if change.pop("box", None) == "inverted":
        box = (box[3],) + tuple(box[1:3]) + (box[0],) + tuple(box[4:])
    seed = change.pop("seed", None)
    if seed == "outside":
        change["seeds"] = (Seed(box[5] + 3, "seed"),)
    return change, box


@pytest.mark.parametrize("name", list(INVALID))
def test_an_invalid_spec_is_refused_at_construction_with_one_message_everywhere(name, liver_roi, tmp_path, capsys):
    ctx, volume, roi, seg, sid, box = liver_roi
    change, bad_box = _case(box, INVALID[name])
    with pytest.raises(InputError) as made:
        BoxRun(boxes=[bad_box], **change)
    message = str(made.value)
    assert "\n" not in message and ": " in message                  # one line: the problem, then the fix

    # The Slicer layer: prepare_medsam builds the spec (nothing sent, no array made).
    core = Segmenter(ctx, device="cpu", worker=False)
    options = {k: v for k, v in change.items() if k != "seeds"}
    if "seeds" in change:
        options.update(seed_slice=change["seeds"][0].slice, segmentation_node=seg, segment_id=sid)
    with pytest.raises(InputError) as slicer_error:
        core.prepare_medsam(volume, [bad_box], **options)
    assert str(slicer_error.value) == message

    # The worker: the same request's params sent over the protocol (as another client would), refused there.
    params = dict(boxes=[list(bad_box)], **{k: v for k, v in change.items() if k != "seeds"})
    arrays = {"volume": np.zeros((4, 4, 4), np.int16)}
    if "seeds" in change:
        params["seeds"] = [{"slice": change["seeds"][0].slice, "mask": "seed"}]
        arrays["seed"] = np.zeros((4, 4), np.uint8)
    client = WorkerClient(hang_timeout=300)
    worker = Segmenter(ctx, device="cpu", worker=client)
    try:
        worker.runner.start(Request("segment_box", params, arrays=arrays), label="invalid")
        outcome = worker.runner.wait(300)
    finally:
        client.shutdown()
    assert outcome.status == "failed" and isinstance(outcome.error, InputError)
    assert str(outcome.error) == message

    # The command line (it has no corrected-slice option: the seed is refused by the Python API there).
    if "seeds" in change:
        from medseg_backend.medsam import MedSAMEngine

        engine = MedSAMEngine("lite-medsam", device="cpu")
        misses = engine.predictor.cache.misses
        with pytest.raises(InputError) as api_error:
            engine.segment_volume(np.zeros((40, 40, 40), np.int16), [bad_box],
                                  seeds=[(change["seeds"][0].slice, np.zeros((40, 40)))])
        assert str(api_error.value) == message and engine.predictor.cache.misses == misses   # nothing encoded
        return
    image = tmp_path / "missing-on-purpose.nrrd"                  # refused before the image is read
    argv = ["medsam", str(image), "--box", ",".join(str(v) for v in bad_box), "-o", str(tmp_path / "out.nrrd")]
    for key, value in change.items():
        argv += [f"--{key}", value]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and [line for line in err.splitlines() if line.startswith("error:")] == [f"error: {message}"]
    assert not (tmp_path / "out.nrrd").exists()
