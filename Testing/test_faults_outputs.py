"""Fault catalogue, output paths: an output can never replace an input or another output, every output folder is
checked before any work, outputs are written all together or not at all (also on an interrupt), with the
umask's permissions. Each case: exit 2, one `error:` line naming the problem, the folder unchanged."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import SimpleITK as sitk

from medseg_backend.io import writers
from faults_util import blob_2d, blob_3d, error_line, run_cli, snapshot, start_python, write_image

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


@pytest.fixture
def work(tmp_path):
    d = tmp_path / "work"
    d.mkdir()
    write_image(d / "img.png", blob_2d())
    write_image(d / "vol.nrrd", blob_3d(), spacing=(0.7, 0.8, 2.5))
    os.symlink(d / "img.png", d / "link.png")
    os.link(d / "vol.nrrd", d / "hard.nrrd")
    return d


def _unwritable(tmp_path):
    """A folder this process cannot create files in (chmod 0555; /proc/self for root, which ignores modes)."""
    if ROOT:
        return "/proc/self"
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    return str(d)


# (inputs, extra arguments, expected words in the error line); {w} = the work folder, {ro} = unwritable folder
MEDSAM_CASES = [
    ("img.png", ["-o", "{w}/img.png"], "is the input file"),
    ("img.png", ["-o", "{w}/./sub/../img.png"], "is the input file"),
    ("img.png", ["-o", "{w}/link.png"], "is the input file"),                        # symlink to the input
    ("link.png", ["-o", "{w}/img.png"], "is the input file"),                        # input is the symlink
    ("vol.nrrd", ["-o", "{w}/hard.nrrd", "--box", "8,8,0,24,24,2"], "is the input file"),  # hard link
    ("img.png", ["-o", "{w}/a.nrrd", "--probabilities", "{w}/a.nrrd"], "both be written to"),
    ("img.png", ["-o", "{w}/a.png", "--overlay", "{w}/a.png"], "both be written to"),
    ("img.png", ["-o", "{w}/a.nrrd", "--probabilities", "{w}/img.png"], "format"),   # .png is no probability format
    ("img.png", ["-o", "{w}/a.nrrd", "--overlay", "{w}/img.png"], "is the input file"),
    ("img.png", ["-o", "{w}/a.nrrd", "--weights", "{w}/a.nrrd"], "is the input file"),
    ("img.png", ["-o", "{w}"], "format"),
    ("img.png", ["-o", "{w}/dir.nrrd"], "is a folder"),
    ("img.png", ["-o", "{w}/missing/a.nrrd"], "does not exist"),
    ("img.png", ["-o", "{w}/img.png/a.nrrd"], "is not a folder"),
    ("img.png", ["-o", "{ro}/a.nrrd"], "not writable"),
    ("img.png", ["-o", "{w}/a.nrrd", "--probabilities", "{ro}/p.nrrd"], "not writable"),
    ("vol.nrrd", ["-o", "{w}/a.png", "--box", "8,8,0,24,24,2"], "2-D picture format"),
    ("vol.nrrd", ["-o", "{w}/a.tif", "--box", "8,8,0,24,24,2"], "2-D picture format"),
    ("vol.nrrd", ["-o", "{w}/a.nrrd", "--probabilities", "{w}/p.tif", "--box", "8,8,0,24,24,2"],
     "2-D picture format"),
]


@pytest.mark.parametrize("inp,extra,words", MEDSAM_CASES)
def test_medsam_output_path_refused_before_work(capsys, tmp_path, work, inp, extra, words):
    (work / "dir.nrrd").mkdir()
    ro = _unwritable(tmp_path)
    extra = [a.format(w=work, ro=ro) for a in extra]
    if "--box" not in extra:
        extra += ["--box", "8,8,24,24"]
    before = snapshot(work)
    # --model medsam-vit-b is not installed here: reaching the model would end with "not installed" instead
    code, out, err = run_cli(capsys, "medsam", work / inp, "--model", "medsam-vit-b", "--device", "cpu", *extra)
    assert code == 2, err
    assert words in error_line(err)
    assert snapshot(work) == before


@pytest.mark.parametrize("which", ["target", "example image", "example label", "labelled slices", "prob=out"])
def test_universeg_output_on_an_input_refused(capsys, work, which):
    vol, lab = work / "vol.nrrd", work / "lab.nrrd"
    write_image(lab, (blob_3d() > 0).astype(np.uint8))
    out = {"target": vol, "example image": work / "ex.nrrd", "example label": work / "exlab.nrrd",
           "labelled slices": lab, "prob=out": work / "p.nrrd"}[which]
    write_image(work / "ex.nrrd", blob_3d())
    write_image(work / "exlab.nrrd", (blob_3d() > 0).astype(np.uint8))
    src = ["--labelled-slices", lab] if which == "labelled slices" else \
        ["--examples", f"{work / 'ex.nrrd'}:{work / 'exlab.nrrd'}"]
    extra = ["--probabilities", work / "p.nrrd"] if which == "prob=out" else []
    before = snapshot(work)
    code, _, err = run_cli(capsys, "universeg", vol, *src, "-o", out, *extra)
    assert code == 2, err
    assert ("is the input file" if which != "prob=out" else "both be written to") in error_line(err)
    assert snapshot(work) == before


def test_universeg_volume_into_png_refused(capsys, work):
    before = snapshot(work)
    code, _, err = run_cli(capsys, "universeg", work / "vol.nrrd", "--examples",
                           f"{work / 'vol.nrrd'}:{work / 'vol.nrrd'}", "-o", work / "seg.png")
    assert code == 2 and "2-D picture format" in error_line(err) and ".nrrd" in err
    assert snapshot(work) == before


class _FailSecond:
    """SimpleITK stand-in whose WriteImage fails (or is interrupted) on the second file: a disk that fills up
    between the label map and the probabilities."""

    def __init__(self, real, exc):
        self.real, self.exc, self.calls = real, exc, 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def WriteImage(self, *a, **k):  # noqa: N802 (SimpleITK API)
        self.calls += 1
        if self.calls == 2:
            raise self.exc
        return self.real.WriteImage(*a, **k)


@pytest.mark.parametrize("exc,code", [(RuntimeError("ITK ERROR: No space left on device"), 2),
                                      (KeyboardInterrupt(), 130)])
def test_partial_write_leaves_nothing(capsys, monkeypatch, work, exc, code):
    """Label map written, probabilities fail (or Ctrl-C between the two): no output, no temp file remains."""
    fake = _FailSecond(sitk, exc)
    monkeypatch.setattr(writers, "_sitk", lambda: fake)
    before = snapshot(work)
    rc, _, err = run_cli(capsys, "medsam", work / "img.png", "--box", "8,8,24,24", "-o", work / "seg.png",
                         "--probabilities", work / "prob.nrrd", "--device", "cpu")
    assert rc == code, err
    line = error_line(err)
    assert ("Cannot write" in line and "nothing was written" in line) if code == 2 else "interrupted" in line
    assert snapshot(work) == before
    assert fake.calls == 2


def test_existing_outputs_replaced_together_and_umask_respected(capsys, work):
    old = os.umask(0o002)
    try:
        (work / "seg.png").write_bytes(b"old")
        rc, out, err = run_cli(capsys, "medsam", work / "img.png", "--box", "8,8,24,24", "-o", work / "seg.png",
                               "--probabilities", work / "prob.nrrd", "--overlay", work / "ov.png", "--device", "cpu")
    finally:
        os.umask(old)
    assert rc == 0, err
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "seg.png")))
    assert seg[16, 16] == 1 and seg[2, 2] == 0
    for name in ("seg.png", "prob.nrrd", "ov.png"):
        assert (work / name).stat().st_mode & 0o777 == 0o664, name
    assert not [n for n in os.listdir(work) if n.startswith(".medseg-")]


def test_slice_into_png_writes_that_slice(capsys, work):
    rc, _, err = run_cli(capsys, "medsam", work / "vol.nrrd", "--slice", "1", "--box", "8,8,24,24",
                         "-o", work / "s1.png", "--device", "cpu")
    assert rc == 0, err
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "s1.png")))
    assert arr.shape == (32, 32) and arr[16, 16] == 1


def test_sigint_during_run_leaves_no_output(tmp_path):
    """A real Ctrl-C (SIGINT) while the model runs on a volume: exit 130, no output, no temp file."""
    d = tmp_path / "sig"
    d.mkdir()
    write_image(d / "vol.nrrd", blob_3d(slices=40))
    code = ("import sys; from medseg_backend.cli import main; "
            "sys.exit(main(['medsam', sys.argv[1], '--box', '8,8,0,24,24,39', '-o', sys.argv[2], "
            "'--probabilities', sys.argv[3], '--device', 'cpu']))")
    before = snapshot(d)
    proc = start_python(code, tmp_path / "home", [d / "vol.nrrd", d / "seg.nrrd", d / "prob.nrrd"])
    err = ""
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for the first progress line: the model is running
        line = proc.stderr.readline()
        err += line
        if line.startswith("[") or not line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    err += rest
    assert proc.returncode == 130, err
    assert "error: interrupted: nothing was written." in err and "Traceback" not in err
    assert snapshot(d) == before


# ------------------------------------------------------------------------------- NIfTI qform / sform kept --
def _nifti_transform_fields(path):
    """pixdim[0..3], qform/sform codes, quaternion + offsets, srow: the header bytes that place the grid."""
    import gzip

    raw = (gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")).read(348)
    return raw[76:92] + raw[252:328]


def _disagreeing_nifti(path, codes=(1, 1), shift=100.0):
    """A NIfTI-1 volume whose sform is ``shift`` mm along x from its qform (an edited or badly converted file)."""
    import struct

    write_image(path.with_suffix(".tmp.nii"), blob_3d(), spacing=(0.8, 0.9, 3.0), origin=(10.0, 20.0, 30.0))
    raw = bytearray(path.with_suffix(".tmp.nii").read_bytes())
    path.with_suffix(".tmp.nii").unlink()
    srow = list(struct.unpack("<12f", raw[280:328]))
    srow[3] += shift
    struct.pack_into("<12f", raw, 280, *srow)
    struct.pack_into("<2h", raw, 252, *codes)
    path.write_bytes(bytes(raw))
    return path


def _example_on(vol, tmp_path):
    """An example pair on the grid SimpleITK reads for ``vol``."""
    src = sitk.ReadImage(str(vol))
    grid = dict(spacing=src.GetSpacing(), origin=src.GetOrigin(), direction=src.GetDirection())
    img = write_image(tmp_path / "e.nrrd", blob_3d(), **grid)
    lab = write_image(tmp_path / "l.nrrd", (blob_3d() > 50).astype(np.uint8), **grid)
    return f"{img}:{lab}"


@pytest.mark.parametrize("codes,used,command", [((1, 1), "sform", "medsam"), ((1, 2), "qform", "universeg"),
                                                ((2, 4), "qform", "universeg")])
def test_nifti_qform_sform_kept_exactly_with_warning(capsys, tmp_path, standin_universeg, codes, used, command):
    """Issue 24, item 8: SimpleITK reads one of the two and writes it as both; the output must keep the input's
    qform, sform and codes, so that every viewer puts the label map on the image."""
    vol = _disagreeing_nifti(tmp_path / "v.nii", codes)
    if command == "medsam":
        argv = ["medsam", vol, "--box", "8,8,0,24,24,2", "--device", "cpu"]
    else:
        argv = ["universeg", vol, "--examples", _example_on(vol, tmp_path)]
    code, _, err = run_cli(capsys, *argv, "-o", tmp_path / "seg.nii.gz", "--probabilities", tmp_path / "p.nii")
    assert code == 0, err
    assert err.count(f"warning: {vol}: its qform and sform disagree, placing the image up to 100 mm apart "
                     f"(qform code {codes[0]}, sform code {codes[1]}); the {used} is used") == 1, err
    assert "fslorient -copysform2qform" in err
    want = _nifti_transform_fields(vol)
    assert _nifti_transform_fields(tmp_path / "seg.nii.gz") == want
    assert _nifti_transform_fields(tmp_path / "p.nii") == want
    # the label map is still where SimpleITK (and Slicer) put the image
    src, seg = sitk.ReadImage(str(vol)), sitk.ReadImage(str(tmp_path / "seg.nii.gz"))
    np.testing.assert_allclose(seg.GetOrigin(), src.GetOrigin(), atol=1e-4)
    assert sitk.GetArrayFromImage(seg)[1, 16, 16] == 1


def test_nifti_codes_kept_when_only_the_qform_is_set(capsys, tmp_path, standin_universeg):
    vol = _disagreeing_nifti(tmp_path / "v.nii", codes=(1, 0), shift=0.0)
    code, _, err = run_cli(capsys, "universeg", vol, "--examples", _example_on(vol, tmp_path),
                           "-o", tmp_path / "seg.nii")
    assert code == 0, err
    assert "qform and sform" not in err
    assert _nifti_transform_fields(tmp_path / "seg.nii") == _nifti_transform_fields(vol)   # sform_code stays 0


@pytest.fixture
def standin_universeg(monkeypatch):
    import torch

    import medseg_backend.universeg as useg

    class MeanLabel(torch.nn.Module):
        def forward(self, q, si, sl):
            p = sl.mean(1).clamp(1e-4, 1 - 1e-4)
            return torch.log(p / (1 - p))

    real = useg.UniverSegEngine
    monkeypatch.setattr(useg, "UniverSegEngine",
                        lambda weights=None, device="auto", precision="auto", **kw: real(model=MeanLabel(),
                                                                                          device="cpu",
                                                                                          precision=precision))
