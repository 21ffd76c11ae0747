"""`medseg batch` on a real local Ray instance with the bundled cases: a 6-case manifest (LiteMedSAM and UniverSeg
rows) gives the single-case CLI's masks; a failing case is one summary line while the others go on, and the
re-run does only that case; a run interrupted halfway (a real process, SIGINT after two records) leaves only whole
outputs and the re-run finishes only the rest; DICOM SEG read back with highdicom / pydicom on the source geometry.

One local Ray for the module (starting it costs seconds), with its temporary folder in the test's tmp and token
authentication off (no ~/.ray/auth_token is read or written); shut down at the end.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ray = pytest.importorskip("ray")

from medseg_backend.cli import main  # noqa: E402
from medseg_backend.slicing import bbox3d  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    old = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    tmp = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(tmp), logging_level="ERROR")
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = old


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _arr(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def small_ct(data_dir, tmp_path_factory):
    """Slices 10..13 of the bundled abdominal CT and its label map (4 slices keep every case short)."""
    d = tmp_path_factory.mktemp("ct6")
    ct = sitk.ReadImage(str(data_dir / "totalseg_ct_sm" / "ct.nii.gz"))[:, :, 10:14]
    lab = sitk.ReadImage(str(data_dir / "totalseg_ct_sm" / "labels.nii.gz"))[:, :, 10:14]
    sitk.WriteImage(ct, str(d / "ct.nii.gz"))
    sitk.WriteImage(lab, str(d / "labels.nii.gz"))
    return d / "ct.nii.gz", d / "labels.nii.gz"


@pytest.fixture
def universeg_ok(universeg_state):
    from medseg_backend.weights import store

    store.accept_licence("universeg-v1")
    return universeg_state


def _library(tmp_path, ct, lab):
    from medseg_backend.io import read_image
    from medseg_backend.universeg import examples_from_volume
    from medseg_backend.universeg.library import export_library

    ex = examples_from_volume(read_image(str(ct)).array, read_image(str(lab), label=True).array, label=5,
                              axis="axial", max_slices=3, name="ct6")
    return export_library(tmp_path / "liverlib", ex, structure="liver", modality="CT", intensity="auto", label=5)


def test_six_cases_same_masks_as_single_case_cli(ray_local, small_ct, data_dir, universeg_ok, tmp_path, capsys):
    ct, lab = small_ct
    crop = data_dir / "dcmqi_ct3slice" / "ct_crop.nrrd"
    lib = _library(tmp_path, ct, lab)
    w = universeg_ok
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(
        "case_id,image,model,boxes,label,labels,margin,examples,library,value,roi,weights,reference\n"
        f'liverbox,{ct},lite-medsam,"20,20,2,100,80,3",,,,,,,,,\n'
        f"kidneys,{ct},lite-medsam,,{lab},2;3,1,,,,,,{lab}\n"
        f'crop,{crop},,"60,60,0,140,140,2",,,,,,,,,\n'
        f"spleen,{ct},lite-medsam,,{lab},1,0,,,,,,{lab}\n"
        f'ueg_pairs,{ct},universeg,,,,,{ct}:{lab},,5,"10,10,2,110,90,3",{w},{lab}\n'
        f'ueg_lib,{ct},universeg,,,,,,{lib},,"10,10,1,110,90,2",{w},\n', encoding="utf-8")
    out = tmp_path / "out"
    rc, stdout, err = _run(capsys, "batch", manifest, "-o", out, "--workers", 2, "--device", "cpu")
    assert rc == 0, err
    assert "6 case(s): 0 already done, 6 to run" in err and err.count("] ") >= 6 and "cases/h" in err
    assert "6 case(s): 6 done" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [r["case_id"] for r in summary] == ["liverbox", "kidneys", "crop", "spleen", "ueg_pairs", "ueg_lib"]
    by = {r["case_id"]: r for r in summary}
    assert by["kidneys"]["dice"] > 0.7 and by["spleen"]["dice"] > 0.7 and by["kidneys"]["assd_mm"] < 5
    assert by["liverbox"]["flagged"] is not None and by["ueg_pairs"]["dice"] is not None
    # Models loaded once per worker: two workers at most, each loading each model once at most.
    pids = {r["worker_pid"] for r in summary}
    assert 1 <= len(pids) <= 2
    for pid in pids:
        mine = [r for r in summary if r["worker_pid"] == pid]
        assert max(r["model_loads"] for r in mine) == len({r["model"] for r in mine})
    rec = {c: json.loads((out / "records" / f"{c}.json").read_text()) for c in by}
    assert rec["crop"]["spec"]["model"] == "lite-medsam" and len(rec["crop"]["spec"]["weights_sha256"]) == 64
    assert set(rec["kidneys"]["outputs"]) == {"kidneys.nii.gz", "kidneys.slices.csv"}

    # The single-case CLI on each case gives the same label map.
    labels = _arr(lab)
    single = tmp_path / "single"
    single.mkdir()
    runs = {
        "liverbox": ["medsam", ct, "--box", "20,20,2,100,80,3"],
        "kidneys": ["medsam", ct] + sum((["--box", ",".join(map(str, bbox3d(labels == v, 1)))] for v in (2, 3)), []),
        "crop": ["medsam", crop, "--box", "60,60,0,140,140,2"],
        "spleen": ["medsam", ct, "--box", ",".join(map(str, bbox3d(labels == 1)))],
        "ueg_pairs": ["universeg", ct, "--examples", f"{ct}:{lab}", "--label", 5, "--roi", "10,10,2,110,90,3",
                      "--weights", w],
        "ueg_lib": ["universeg", ct, "--library", lib, "--roi", "10,10,1,110,90,2", "--weights", w],
    }
    for case, argv in runs.items():
        rc, _, err = _run(capsys, *argv, "--device", "cpu", "-o", single / f"{case}.nii.gz")
        assert rc == 0, err
        a, b = _arr(out / f"{case}.nii.gz"), _arr(single / f"{case}.nii.gz")
        assert a.shape == b.shape and (a == b).all(), (case, int((a != b).sum()))
        if case.startswith("ueg"):
            assert a.any()

    # A second run skips all six (records and outputs intact) and starts no worker.
    rc, stdout, err = _run(capsys, "batch", manifest, "-o", out, "--workers", 2)
    assert rc == 0 and "6 already done, 0 to run" in err and "6 skipped (done)" in stdout


def test_failing_case_is_one_line_and_rerun_does_only_it(ray_local, small_ct, tmp_path, capsys):
    ct, lab = small_ct
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(Path(ct).read_bytes()[:-200])  # its header reads; its voxels stop short
    manifest = tmp_path / "m.csv"
    manifest.write_text("case_id,image,boxes\n"
                        f'a,{ct},"20,20,2,100,80,3"\n'
                        f'b,{broken},"20,20,2,100,80,3"\n'
                        f'c,{ct},"30,30,1,90,70,2"\n', encoding="utf-8")
    out = tmp_path / "out"
    rc, stdout, err = _run(capsys, "batch", manifest, "-o", out, "--workers", 1, "--device", "cpu")
    assert rc == 1
    rows = {r["case_id"]: r for r in json.loads((out / "summary.json").read_text())}
    assert rows["a"]["status"] == rows["c"]["status"] == "done"
    assert rows["b"]["status"] == "failed" and "truncated" in rows["b"]["error"]
    assert not (out / "b.nii.gz").exists() and not (out / "records" / "b.json").exists()
    assert not [p for p in os.listdir(out) if p.startswith(".medseg-")]
    before = {c: (out / "records" / f"{c}.json").read_bytes() for c in "ac"}
    broken.write_bytes(Path(ct).read_bytes())  # the user fixes the file
    rc, stdout, err = _run(capsys, "batch", manifest, "-o", out, "--workers", 1, "--device", "cpu")
    assert rc == 0, err
    assert "2 already done, 1 to run" in err and "[3/3] b: done" in err
    assert {c: (out / "records" / f"{c}.json").read_bytes() for c in "ac"} == before
    # A changed row is not done any more: its spec differs from the record.
    manifest.write_text(manifest.read_text().replace('"30,30,1,90,70,2"', '"30,30,1,90,70,3"'))
    rc, stdout, err = _run(capsys, "batch", manifest, "-o", out, "--workers", 1, "--device", "cpu")
    assert rc == 0 and "2 already done, 1 to run" in err and "c: done" in err
    # An output altered after its record was written: that case is redone, the others are not.
    seg = out / "a.nii.gz"
    data = bytearray(seg.read_bytes())
    data[-5] ^= 0xFF  # a byte of the gzip checksum
    seg.write_bytes(bytes(data))
    rc, stdout, err = _run(capsys, "batch", manifest, "-o", out, "--workers", 1, "--device", "cpu")
    assert rc == 0 and "2 already done, 1 to run" in err and "a: done" in err
    assert _arr(seg).shape == (4, 101, 122)


def test_interrupted_run_resumes_with_only_the_rest(small_ct, tmp_path, request):
    """A real `medseg batch` process (its own local Ray) gets SIGINT once two cases are recorded."""
    ct, _ = small_ct
    manifest = tmp_path / "m.csv"
    rows = "".join(f'c{i},{ct},"{20 + i},20,{i % 2},100,80,{i % 2 + 1}"\n' for i in range(6))
    manifest.write_text("case_id,image,boxes\n" + rows, encoding="utf-8")
    out = tmp_path / "out"
    raytmp = tempfile.mkdtemp(prefix="mr")  # short: Ray's socket paths must stay under 108 bytes
    request.addfinalizer(lambda: shutil.rmtree(raytmp, ignore_errors=True))
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_AUTH_MODE="disabled", RAY_TMPDIR=raytmp)
    cmd = [sys.executable, "-m", "medseg_backend", "batch", str(manifest), "-o", str(out), "--workers", "1",
           "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = out / "records"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if records.is_dir() and len([p for p in os.listdir(records) if p.endswith(".json")]) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    done = sorted(p[:-5] for p in os.listdir(records) if p.endswith(".json"))
    assert 2 <= len(done) < 6, err
    assert "interrupted" in err and "run the same command again" in err
    summary = {r["case_id"]: r["status"] for r in json.loads((out / "summary.json").read_text())}
    assert sorted(c for c, s in summary.items() if s == "done") == done
    # Only whole outputs: every recorded case's label map reads back; nothing else but temporaries (cleaned next run).
    for c in done:
        assert _arr(out / f"{c}.nii.gz").shape == (4, 101, 122)
    before = {c: (records / f"{c}.json").read_bytes() for c in done}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr
    assert f"{len(done)} already done, {6 - len(done)} to run" in res.stderr
    ran = sorted(line.split("] ")[1].split(":")[0] for line in res.stderr.splitlines() if ": done (" in line)
    assert ran == sorted(set(f"c{i}" for i in range(6)) - set(done))
    assert {c: (records / f"{c}.json").read_bytes() for c in done} == before
    assert not [p for p in os.listdir(out) if p.startswith(".medseg-")]
    assert len(os.listdir(records)) == 6


def _write_dicom_series(image: sitk.Image, folder: Path) -> None:
    """``image`` as a CT series of pydicom files (one per slice, LPS geometry as SimpleITK has it)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    arr = sitk.GetArrayFromImage(image).astype(np.int16)
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    sx, sy, sz = image.GetSpacing()
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    folder.mkdir()
    for k in range(arr.shape[0]):
        meta = FileMetaDataset()
        uid = generate_uid()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Batch^Test", "batch1", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = "20260101", "120000", "", ""
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber, ds.Modality = "1", 1, k + 1, "CT"
        ds.Manufacturer, ds.ImageType, ds.PositionReferenceIndicator = "test", ["ORIGINAL", "PRIMARY", "AXIAL"], ""
        pos = np.asarray(image.GetOrigin()) + d[:, 2] * sz * k
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*d[:, 0], *d[:, 1])]
        ds.PixelSpacing = [f"{sy:.6f}", f"{sx:.6f}"]
        ds.SliceThickness = f"{sz:.6f}"
        ds.Rows, ds.Columns = arr.shape[1], arr.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.PixelData = arr[k].tobytes()
        ds.save_as(str(folder / f"slice{k:03d}.dcm"), enforce_file_format=True)
    assert len(os.listdir(folder)) == arr.shape[0]
    pydicom.dcmread(str(folder / "slice000.dcm"))


def test_dicom_seg_reads_back_on_the_source_geometry(ray_local, data_dir, tmp_path, capsys):
    pytest.importorskip("highdicom")
    import highdicom as hd
    import pydicom

    src = sitk.ReadImage(str(data_dir / "dcmqi_ct3slice" / "ct_crop.nrrd"))
    dcm = tmp_path / "dicom"
    _write_dicom_series(src, dcm)
    manifest = tmp_path / "m.csv"
    manifest.write_text('case_id,image,boxes,structures\n'
                        f'ct3,{dcm},"60,60,0,140,140,2;20,20,0,50,50,2",liver;left kidney\n', encoding="utf-8")
    out = tmp_path / "out"
    rc, stdout, err = _run(capsys, "batch", manifest, "-o", out, "--format", "dicom-seg", "--device", "cpu")
    assert rc == 0, err
    seg_path = out / "ct3.seg.dcm"
    assert seg_path.exists() and (out / "ct3.slices.csv").exists()
    # The same case through the single-case CLI on the DICOM folder, as a label map.
    rc, _, err = _run(capsys, "medsam", dcm, "--box", "60,60,0,140,140,2", "--box", "20,20,0,50,50,2",
                      "-o", tmp_path / "single.nrrd", "--device", "cpu")
    assert rc == 0, err
    expected = _arr(tmp_path / "single.nrrd")
    assert (expected == 1).any() and (expected == 2).any()

    ds = pydicom.dcmread(str(seg_path))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"         # Segmentation Storage
    sources = sorted((pydicom.dcmread(str(dcm / f)) for f in os.listdir(dcm)), key=lambda s: s.InstanceNumber)
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    segs = ds.SegmentSequence
    assert [s.SegmentLabel for s in segs] == ["liver", "left kidney"]
    assert segs[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert segs[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "64033007"
    assert segs[1].SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "7771000"
    assert segs[0].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
    shared = ds.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
                               [float(v) for v in sources[0].ImageOrientationPatient], atol=1e-6)
    np.testing.assert_allclose([float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing],
                               [float(v) for v in sources[0].PixelSpacing], atol=1e-6)

    seg = hd.seg.segread(str(seg_path))
    by_uid = {s.SOPInstanceUID: k for k, s in enumerate(sources)}
    for frame in ds.PerFrameFunctionalGroupsSequence:
        ref = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = by_uid[ref]
        np.testing.assert_allclose([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
                                   [float(v) for v in sources[k].ImagePositionPatient], atol=1e-4)
    masks = seg.get_pixels_by_source_instance(source_sop_instance_uids=[s.SOPInstanceUID for s in sources],
                                              segment_numbers=[1, 2])
    assert masks.shape == (3, 200, 200, 2)
    assert (masks[..., 0].astype(bool) == (expected == 1)).all()
    assert (masks[..., 1].astype(bool) == (expected == 2)).all()
