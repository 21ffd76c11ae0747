"""Per-slice confidence, flagged slices, the slice report and the opt-in adaptive propagation, on the bundled
abdominal CT with the official LiteMedSAM weights. The left kidney with the benchmark's loose box (GT box + max(5 px,
10 %) in-plane, z-range + 4 slices: it runs 4 slices past the kidney's lower end) is run once per mode and shared."""
import csv
import json

import numpy as np
import pytest

from medseg_backend.cli import main
from medseg_backend.confidence import (FLAG_BELOW, PROFILE_FLAG_BELOW, REPORT_COLUMNS, SliceRecord, intensity_range,
                                       is_flagged, profile_match, report_text)
from medseg_backend.io import read_image
from medseg_backend.choices import DEFAULT_PROPAGATION, PROPAGATIONS
from medseg_backend.medsam import MedSAMEngine
from medseg_backend.slicing import middle_slice, start_window
from medseg_backend.metrics import dice
from medseg_backend.slicing import bbox3d

KIDNEY_LEFT = 3
SPLEEN = 1


@pytest.fixture(scope="module")
def case(data_dir):
    img = read_image(str(data_dir / "totalseg_ct_sm" / "ct.nii.gz"))
    gt = read_image(str(data_dir / "totalseg_ct_sm" / "labels.nii.gz")).array == KIDNEY_LEFT
    b = bbox3d(gt)
    end = b[5]  # last slice with kidney (22 of 0..29)
    mx = max(5, round(0.1 * (b[3] - b[0] + 1)))
    my = max(5, round(0.1 * (b[4] - b[1] + 1)))
    box = (b[0] - mx, b[1] - my, max(0, b[2] - 4), b[3] + mx, b[4] + my, end + 4)
    return img, gt, box, end


@pytest.fixture(scope="module")
def engine():
    return MedSAMEngine("lite-medsam", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def runs(case, engine):
    img, _, box, _ = case
    return {mode: engine.segment_volume(img.array, [box], propagation=mode) for mode in ("official", "adaptive")}


def _slices_with_voxels(labels, after):
    return [k for k in range(after + 1, labels.shape[0]) if labels[k].any()]


def test_official_is_the_default_and_adaptive_stops_at_the_objects_end(case, runs):
    _, gt, box, end = case
    # adaptive won on the 20 structures it was tuned on but lost on held-out tumour MR (issue 23, worst -0.34):
    # the published procedure is the default until a mode beats it on held-back data; adaptive stays selectable
    assert DEFAULT_PROPAGATION == "official" and "adaptive" in PROPAGATIONS
    off, ada = runs["official"], runs["adaptive"]
    # official never returns an empty slice with a carried box: it labels every slice past the kidney's end
    assert _slices_with_voxels(off.labels, end) == list(range(end + 1, box[5] + 1))
    past = _slices_with_voxels(ada.labels, end)
    assert len(past) < len(_slices_with_voxels(off.labels, end)), past
    assert ada.per_box[0]["ended_at"]["up"] is not None
    assert dice(ada.labels, gt) >= dice(off.labels, gt)


def test_start_window_is_the_middle_third_of_the_box():
    assert start_window(0, 4) == [2]                                   # under 6 slices: the middle slice only
    assert start_window(10, 15) == [11, 12, 13]                        # middle int(5 / 2 + 10) = 12, +- 6 // 6
    assert start_window(0, 29) == list(range(9, 20))                   # 14 +- 5
    assert start_window(3, 3) == [3]


def test_adaptive_starts_where_the_model_is_surest_and_beats_official_there(engine, data_dir):
    """The bundled CT's spleen with its GT box: the official walk starts on the middle slice and ends at Dice 0.84;
    adaptive starts on a slice of the middle third where the box's mask is more sure (benchmark: 0.96)."""
    img = read_image(str(data_dir / "totalseg_ct_sm" / "ct.nii.gz"))
    gt = read_image(str(data_dir / "totalseg_ct_sm" / "labels.nii.gz")).array == SPLEEN
    box = tuple(bbox3d(gt))
    off = engine.segment_volume(img.array, [box], propagation="official")
    events = []
    ada = engine.segment_volume(img.array, [box], propagation="adaptive",
                                on_slice=lambda obj, k, mask: events.append((k, mask.copy())))
    start, mid = ada.per_box[0]["z_start"], middle_slice(box[2], box[5])
    assert off.per_box[0]["z_start"] == mid == ada.per_box[0]["z_middle"]
    assert start != mid and start in start_window(box[2], box[5])
    assert f"box 1: propagation started at slice {start}" in " ".join(ada.messages)
    assert not any("propagation started" in m for m in off.messages)
    assert dice(off.labels, gt) < 0.88 and dice(ada.labels, gt) > 0.93
    # progressive preview: the middle slice comes first (one encoder pass), provisionally; the walk from the start
    # sends it again with its final mask; the last mask sent for every slice is the result's
    assert events[0][0] == mid and events[1][0] == start
    assert [k for k, _ in events].count(mid) == 2 and not np.array_equal(events[0][1], ada.labels[mid] == 1)
    last = dict(events)
    assert sorted(last) == [r.slice for r in ada.slices]
    for k, mask in last.items():
        np.testing.assert_array_equal(mask, ada.labels[k] == 1)


def test_slice_records_describe_what_was_written(case, runs):
    _, gt, box, end = case
    for mode, res in runs.items():
        recs = res.slices
        assert [r.slice for r in recs] == sorted(k for k in range(box[2], box[5] + 1) if res.labels[k].any()), mode
        assert len(recs) == res.slices_run
        for r in recs:
            assert isinstance(r, SliceRecord) and r.object == 1
            assert r.area == int(np.count_nonzero(res.labels[r.slice] == 1))
            assert 0.0 <= r.confidence <= 1.0
            assert 0.0 <= r.profile <= 1.0
            assert r.flagged == (r.area == 0 or r.confidence < FLAG_BELOW or r.profile < PROFILE_FLAG_BELOW)
            assert r.source in ("roi", "carried")
        assert res.flagged() == [r for r in recs if r.flagged]


def test_confidence_separates_kidney_slices_from_slices_past_its_end(case, runs):
    """Official labels 4 slices where there is no kidney: all of them are flagged, while the well segmented kidney
    slices (Dice >= 0.9) are not, and their confidence is higher."""
    _, gt, box, end = case
    res = runs["official"]
    past = [r for r in res.slices if r.slice > end]
    good = [r for r in res.slices if r.slice <= end and dice(res.labels[r.slice], gt[r.slice]) >= 0.9]
    assert len(past) == 4 and len(good) >= 10
    assert all(r.flagged for r in past)
    assert sum(r.flagged for r in good) <= len(good) // 4
    assert np.mean([r.confidence for r in past]) < np.mean([r.confidence for r in good]) - 0.15


def test_profile_match_measures_how_much_of_a_mask_lies_in_the_objects_intensity_range():
    img = np.zeros((20, 20), np.uint8)
    img[:, :10] = 100 + np.arange(10, dtype=np.uint8)[None, :]   # the object: 100..109
    img[:, 10:] = 200                                            # another tissue
    obj = np.zeros((20, 20), bool)
    obj[:, :10] = True
    rng = intensity_range(img, obj)
    assert rng == pytest.approx((np.percentile(np.arange(100, 110), 10), np.percentile(np.arange(100, 110), 90)))
    assert profile_match(img, obj, rng) == pytest.approx(0.8)           # the 10 % tails fall outside
    slid = np.zeros((20, 20), bool)
    slid[:, 5:15] = True                                                # half on the other tissue
    assert profile_match(img, slid, rng) == pytest.approx(0.4)
    assert profile_match(img, np.zeros_like(obj), rng) == 0.0          # empty mask
    assert profile_match(img, slid, None) == 1.0 and intensity_range(img, np.zeros_like(obj)) is None
    assert is_flagged(50, 0.95, PROFILE_FLAG_BELOW - 0.01) and not is_flagged(50, 0.95, PROFILE_FLAG_BELOW)
    assert is_flagged(0, 1.0) and is_flagged(50, FLAG_BELOW - 0.01)


def test_report_text_csv_and_json():
    recs = [SliceRecord(1, 12, 100, 0.91234, False, "carried", 0.9, 0.9, 0.9, 0.95),
            SliceRecord(1, 11, 0, 0.0, True, "roi", 0.2, 1.0, 1.0, 0.0),
            SliceRecord(2, 3, 10, 0.3, True, "roi", 0.5, 0.5, 0.5, 0.5)]
    rows = list(csv.DictReader(report_text(recs, (0.5, 0.8, 3.0), "axial").splitlines()))
    assert tuple(rows[0]) == REPORT_COLUMNS
    assert [(r["object"], r["slice"], r["area_voxels"], r["flagged"]) for r in rows] == [
        ("1", "11", "0", "1"), ("1", "12", "100", "0"), ("2", "3", "10", "1")]
    assert float(rows[1]["area_mm2"]) == pytest.approx(100 * 0.5 * 0.8)
    assert float(rows[1]["confidence"]) == pytest.approx(0.9123)
    # coronal slices are x-z planes
    cor = json.loads(report_text(recs, (0.5, 0.8, 3.0), "coronal", fmt="json"))
    assert cor["axis"] == "coronal" and cor["flag_below"] == FLAG_BELOW
    assert cor["profile_flag_below"] == PROFILE_FLAG_BELOW and cor["slices"][0]["profile"] == 1.0
    assert cor["slices"][1]["area_mm2"] == pytest.approx(100 * 0.5 * 3.0)


def test_cli_writes_the_slice_report_beside_the_label_map(case, tmp_path, data_dir, capsys):
    img, gt, _, _ = case
    b = bbox3d(gt)
    box = f"{b[0]},{b[1]},{b[5] - 3},{b[3]},{b[4]},{b[5] + 1}"
    ct = str(data_dir / "totalseg_ct_sm" / "ct.nii.gz")
    out = tmp_path / "kidney.nii.gz"
    assert main(["medsam", ct, "--box", box, "-o", str(out), "--device", "cpu"]) == 0
    report = tmp_path / "kidney.slices.csv"
    assert "kidney.slices.csv" in capsys.readouterr().out
    rows = list(csv.DictReader(report.read_text(encoding="utf-8").splitlines()))
    labels = read_image(str(out)).array
    assert [int(r["slice"]) for r in rows] == [k for k in range(labels.shape[0]) if labels[k].any()]
    sx, sy, _ = img.geometry.spacing
    for r in rows:
        k = int(r["slice"])
        assert int(r["area_voxels"]) == int(np.count_nonzero(labels[k]))
        assert float(r["area_mm2"]) == pytest.approx(int(r["area_voxels"]) * sx * sy, rel=1e-6)
        assert r["flagged"] == str(int(float(r["confidence"]) < FLAG_BELOW or int(r["area_voxels"]) == 0))
    # --slice-report chooses the path and the format
    js = tmp_path / "report.json"
    assert main(["medsam", ct, "--box", box, "-o", str(tmp_path / "k2.nrrd"), "--device", "cpu",
                 "--slice-report", str(js)]) == 0
    assert [r["slice"] for r in json.loads(js.read_text(encoding="utf-8"))["slices"]] == [int(r["slice"]) for r in rows]
    assert not (tmp_path / "k2.slices.csv").exists()


def test_cli_refuses_a_bad_report_path_before_any_work(tmp_path, data_dir, capsys):
    ct = str(data_dir / "totalseg_ct_sm" / "ct.nii.gz")
    out = tmp_path / "x.nii.gz"
    rc = main(["medsam", ct, "--box", "30,30,10,40,40,12", "-o", str(out), "--slice-report", str(tmp_path / "r.txt")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "slice report" in err and ".csv" in err
    assert not out.exists() and not list(tmp_path.iterdir())
    rc = main(["medsam", ct, "--box", "30,30,40,40", "--slice", "10", "-o", str(out),
               "--slice-report", str(tmp_path / "r.csv")])
    assert rc == 2 and "--slice-report is for 3-D runs" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_flush_sides_finds_the_box_sides_a_mask_touches():
    from medseg_backend.medsam.propagation import flush_sides

    m = np.zeros((64, 64), bool)
    m[10:20, 30:40] = True                      # rows 10..19, columns 30..39
    assert flush_sides(m, np.array([30, 5, 50, 20], np.float32)) == [True, False, False, True]
    assert flush_sides(m, np.array([20, 0, 60, 40], np.float32)) == [False] * 4
    assert flush_sides(np.zeros_like(m), np.array([0, 0, 64, 64], np.float32)) == [False] * 4
