"""Fault catalogue, inputs: files (missing, damaged, truncated NIfTI / NRRD / MetaImage, wrong dimensions, RGB
volume, NaN/Inf, constant), boxes and ROIs (inverted, empty, zero-size, one voxel, outside, partly outside),
intensity windows, UniverSeg examples. Bad input: exit 2, one `error:` line naming the problem, nothing written,
and (boxes, windows) the error comes before any model is loaded."""
from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import medseg_backend.universeg as useg
from faults_util import blob_2d, blob_3d, error_line, run_cli, snapshot, write_image


def _truncate(path, cut=1000):
    os.truncate(path, os.path.getsize(path) - cut)


def _nifti1_big_endian(path, array):
    """A float64 NIfTI-1 file in big-endian byte order (as some scanners' converters write), made byte by byte."""
    import struct

    header = bytearray(352)
    K, J, I = array.shape
    struct.pack_into(">i", header, 0, 348)
    struct.pack_into(">8h", header, 40, 3, I, J, K, 1, 1, 1, 1)
    struct.pack_into(">hh", header, 70, 64, 64)                       # datatype FLOAT64, bitpix
    struct.pack_into(">8f", header, 76, 1, 1, 1, 1, 0, 0, 0, 0)       # pixdim
    struct.pack_into(">f", header, 108, 352.0)                        # vox_offset
    struct.pack_into(">f", header, 112, 1.0)                          # scl_slope
    struct.pack_into(">hh", header, 252, 0, 0)                        # qform_code, sform_code
    header[344:348] = b"n+1\0"
    path.write_bytes(bytes(header) + array.astype(">f8").tobytes())
    return path


def _make(kind, d):
    """Write the bad input ``kind`` into folder ``d``; return the path to give the CLI."""
    vol = (np.arange(6 * 20 * 30) % 251).astype(np.int16).reshape(6, 20, 30)
    if kind == "missing":
        return d / "nothere.nii.gz"
    if kind == "garbage":
        (d / "x.nrrd").write_bytes(b"\x00garbage" * 10)
        return d / "x.nrrd"
    if kind == "empty file":
        (d / "x.nii").write_bytes(b"")
        return d / "x.nii"
    if kind in ("truncated .nii", "truncated .mha", "truncated .nrrd"):
        p = write_image(d / ("x" + kind.split()[1]), vol)
        _truncate(p)
        return p
    if kind == "truncated .nii.gz (short data)":
        p = write_image(d / "x.nii", vol)
        raw = p.read_bytes()
        p.unlink()
        (d / "x.nii.gz").write_bytes(gzip.compress(raw[:-1000]))
        return d / "x.nii.gz"
    if kind == "truncated .nii.gz (cut stream)":
        p = write_image(d / "x.nii.gz", vol)
        b = p.read_bytes()
        p.write_bytes(b[:len(b) // 2])
        return p
    if kind == "truncated .mhd raw":
        p = write_image(d / "x.mhd", vol)
        _truncate(d / "x.raw")
        return p
    if kind == "missing .mhd raw":
        p = write_image(d / "x.mhd", vol)
        (d / "x.raw").unlink()
        return p
    if kind == "4-D":
        return write_image(d / "x.nrrd", np.random.rand(2, 3, 4, 5).astype(np.float32))
    if kind == "RGB volume":
        return write_image(d / "x.nrrd", np.random.randint(0, 255, (3, 8, 8, 3), dtype=np.uint8), vector=True)
    if kind == "NaN":
        a = np.random.rand(4, 16, 16).astype(np.float32)
        a[1, 3, 3] = np.nan
        return write_image(d / "x.nrrd", a)
    if kind == "Inf":
        a = np.random.rand(4, 16, 16).astype(np.float32)
        a[2, 5, 5] = np.inf
        return write_image(d / "x.mha", a)
    if kind in ("NaN .nii.gz", "Inf .nii", "all-NaN .nii.gz", "all-NaN .nrrd"):
        a = np.random.rand(4, 16, 16).astype(np.float32)
        a[1, 3, 3], a[2, 5, 5] = np.nan, -np.inf
        if kind.startswith("all"):
            a[:] = np.nan
        return write_image(d / ("x" + kind.split()[1]), a)
    if kind == "NaN big-endian float64 .nii":
        a = np.random.rand(4, 16, 16)
        a[0, 0, 0] = np.nan
        return _nifti1_big_endian(d / "x.nii", a)
    if kind == "constant":
        return write_image(d / "x.nrrd", np.full((4, 16, 16), 7, np.int16))
    raise AssertionError(kind)


FILE_CASES = [
    ("missing", "Image not found"),
    ("garbage", "Cannot read"),
    ("empty file", "Cannot read"),
    ("truncated .nii", "is truncated"),
    ("truncated .nii.gz (short data)", "is truncated"),
    ("truncated .nii.gz (cut stream)", "truncated or damaged"),
    ("truncated .nrrd", "Cannot read"),
    ("truncated .mha", "is truncated"),
    ("truncated .mhd raw", "is truncated"),
    ("missing .mhd raw", "is missing"),
    ("4-D", "4-D"),
    ("RGB volume", "RGB volume"),
    ("NaN", "NaN/Inf"),
    ("Inf", "NaN/Inf"),
    ("constant", "constant (every voxel = 7)"),
    # SimpleITK reads NaN / Inf of a NIfTI file as 0: found in the file's raw voxels (issue 24, item 3)
    ("NaN .nii.gz", "has 2 NaN/Inf voxels (1 NaN and 1 Inf)"),
    ("Inf .nii", "has 2 NaN/Inf voxels (1 NaN and 1 Inf)"),
    ("NaN big-endian float64 .nii", "has 1 NaN/Inf voxels (1 NaN)"),
    ("all-NaN .nii.gz", "holds no numbers: every voxel is NaN/Inf (1024 NaN)"),
    ("all-NaN .nrrd", "holds no numbers: every voxel is NaN/Inf (1024)"),
]


@pytest.mark.parametrize("kind,words", FILE_CASES)
def test_bad_file_medsam(capsys, tmp_path, kind, words):
    src = tmp_path / "in"
    src.mkdir()
    path = _make(kind, src)
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "medsam", path, "--box", "1,1,0,5,5,1", "-o", tmp_path / "seg.nrrd",
                           "--model", "medsam-vit-b")
    assert code == 2, err
    line = error_line(err)
    assert words in line
    assert "np." not in line and "No such file or directory" not in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind,words", [c for c in FILE_CASES if c[0].startswith("truncated")])
def test_truncated_file_as_universeg_target(capsys, tmp_path, kind, words):
    path = _make(kind, tmp_path)
    ex = write_image(tmp_path / "ex.nrrd", blob_3d())
    lab = write_image(tmp_path / "exlab.nrrd", (blob_3d() > 0).astype(np.uint8))
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "universeg", path, "--examples", f"{ex}:{lab}", "-o", tmp_path / "seg.nrrd")
    assert code == 2 and words in error_line(err)
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------------- boxes --
# volume (3, 32, 32): x, y in 0..31, z in 0..2
BOX_CASES = [
    ("3d", "20,8,0,10,24,2", "inverted along x"),
    ("3d", "8,20,0,24,10,2", "inverted along y"),
    ("3d", "8,8,2,24,24,0", "inverted along z"),
    ("3d", "12,12,1,12,12,1", "is empty: it covers a single voxel"),            # one voxel (zero-size ROI)
    ("3d", "12,12,0,12,12,2", "is empty: it covers a single pixel in each slice"),
    ("3d", "40,8,0,50,24,2", "outside the image along x"),
    ("3d", "8,8,5,24,24,9", "outside the image along z"),
    ("3d", "-9,-9,0,0,0,2", "is empty: it covers a single pixel in each slice after clipping"),
    ("3d", "31,31,2,60,60,9", "single voxel after clipping"),
    ("3d", "1,2,3", "has 3 numbers"),
    ("3d", "a,b,c,d,e,f", "not a list of numbers"),
    ("2d", "12,12,12,12", "is empty: it covers a single pixel"),
    ("2d", "-5,-5,0,0", "single pixel after clipping"),
    ("2d", "20,8,10,24", "inverted along x"),
    ("2d", "40,40,50,50", "outside the image"),
    ("slice", "12,12,12,12", "is empty"),
]


@pytest.mark.parametrize("kind,box,words", BOX_CASES)
def test_bad_box_refused_before_model_load(capsys, tmp_path, kind, box, words):
    img = write_image(tmp_path / ("v.nrrd" if kind != "2d" else "i.png"), blob_3d() if kind != "2d" else blob_2d())
    extra = ["--slice", "1"] if kind == "slice" else []
    before = snapshot(tmp_path)
    # medsam-vit-b is not installed: a box checked after the model load would report missing weights instead
    code, _, err = run_cli(capsys, "medsam", img, f"--box={box}", *extra, "-o", tmp_path / "seg.nrrd",
                           "--model", "medsam-vit-b")
    assert code == 2, err
    line = error_line(err)
    assert words in line and "not installed" not in line
    assert snapshot(tmp_path) == before


def test_box_collapsing_in_coronal_plane(capsys, tmp_path):
    """With --axis coronal the slice plane is x-z: a box one pixel wide in x and z is empty there."""
    img = write_image(tmp_path / "v.nrrd", blob_3d())
    code, _, err = run_cli(capsys, "medsam", img, "--box", "12,4,1,12,28,1", "--axis", "coronal",
                           "-o", tmp_path / "seg.nrrd", "--model", "medsam-vit-b")
    assert code == 2 and "is empty" in error_line(err)
    code, _, err = run_cli(capsys, "medsam", img, "--box", "12,4,1,12,28,1", "--axis", "sagittal",
                           "-o", tmp_path / "seg.nrrd", "--model", "medsam-vit-b")
    assert code == 2 and "not installed" in error_line(err)  # y-z plane is 25 x 1: a valid box


def test_partly_outside_box_clipped_with_warning_and_run(capsys, tmp_path):
    img = write_image(tmp_path / "i.png", blob_2d())
    code, out, err = run_cli(capsys, "medsam", img, "--box", "6,6,40,40", "-o", tmp_path / "seg.png",
                             "--device", "cpu")
    assert code == 0, err
    assert err.count("warning: Box (6, 6, 40, 40) extends beyond the image (32, 32): clipped to (6, 6, 31, 31)") == 1
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "seg.png")))[16, 16] == 1


class MeanLabel(torch.nn.Module):
    def forward(self, q, si, sl):
        p = sl.mean(1).clamp(1e-4, 1 - 1e-4)
        return torch.log(p / (1 - p))


@pytest.fixture
def standin(monkeypatch):
    real = useg.UniverSegEngine
    made = []

    def factory(weights=None, device="auto", precision="auto", **kw):
        made.append(1)
        return real(model=MeanLabel(), device="cpu", precision=precision)
    monkeypatch.setattr(useg, "UniverSegEngine", factory)
    return made


ROI_CASES = [
    ("12,12,1,12,12,1", "ROI (12, 12, 1, 12, 12, 1) is empty"),
    ("12,12,0,12,12,2", "is empty"),
    ("-9,-9,0,0,0,2", "after clipping"),
    ("20,8,0,10,24,2", "inverted along x"),
    ("8,8,5,24,24,9", "outside the image along z"),
    ("1,2,3,4", "has 4 numbers"),
]


@pytest.mark.parametrize("roi,words", ROI_CASES)
def test_universeg_bad_roi_before_model(capsys, tmp_path, standin, roi, words):
    vol = write_image(tmp_path / "v.nrrd", blob_3d())
    lab = write_image(tmp_path / "l.nrrd", (blob_3d() > 50).astype(np.uint8))
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "universeg", vol, "--examples", f"{vol}:{lab}", f"--roi={roi}",
                           "-o", tmp_path / "seg.nrrd")
    assert code == 2 and words in error_line(err)
    assert snapshot(tmp_path) == before and not standin


# -------------------------------------------------------------------------------------------- intensities --
WINDOW_CASES = [
    ("window:5000,100", "covers 4950..5050 but the image values are -1000..100"),
    ("window:-3000,200", "covers -3100..-2900"),
    ("ct-brain", None),  # 0..80 overlaps the data: accepted (reaches the model)
    ("window:40,0", "width must be > 0"),
    ("bone", "Unknown intensity preset"),
    ("raw", "needs 8-bit data"),
]


@pytest.mark.parametrize("preset,words", WINDOW_CASES)
def test_intensity_window(capsys, tmp_path, preset, words):
    vol = write_image(tmp_path / "v.nrrd", blob_3d())
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "medsam", vol, "--box", "8,8,0,24,24,2", "--intensity", preset,
                           "-o", tmp_path / "seg.nrrd", "--model", "medsam-vit-b")
    line = error_line(err)
    assert code == 2
    assert (words in line) if words else ("not installed" in line)
    assert snapshot(tmp_path) == before


def test_window_outside_data_universeg(capsys, tmp_path, standin):
    vol = write_image(tmp_path / "v.nrrd", blob_3d())
    lab = write_image(tmp_path / "l.nrrd", (blob_3d() > 50).astype(np.uint8))
    code, _, err = run_cli(capsys, "universeg", vol, "--examples", f"{vol}:{lab}", "--intensity", "window:3000,10",
                           "-o", tmp_path / "seg.nrrd")
    assert code == 2 and "blank image" in error_line(err) and not standin


def test_blank_slices_in_box_warn(capsys, tmp_path):
    a = blob_3d(slices=3)
    a[0] = 500  # slice 0 is all above the window
    vol = write_image(tmp_path / "v.nrrd", a)
    code, _, err = run_cli(capsys, "medsam", vol, "--box", "8,8,0,24,24,2", "--intensity", "ct-abdomen",
                           "-o", tmp_path / "seg.nrrd", "--device", "cpu")
    assert code == 0, err
    assert "warning: 1 slice(s) inside the box(es) are uniform after the intensity window" in err


# -------------------------------------------------------------------------------------------------- examples --
def _example(tmp_path, name, image, label):
    return f"{write_image(tmp_path / (name + '.nrrd'), image)}:{write_image(tmp_path / (name + '_l.nrrd'), label)}"


def test_empty_example_label_skipped_with_warning(capsys, tmp_path, standin):
    vol = write_image(tmp_path / "v.nrrd", blob_3d())
    good = _example(tmp_path, "good", blob_2d(), (blob_2d() > 100).astype(np.uint8))
    empty = _example(tmp_path, "empty", blob_2d(), np.zeros((32, 32), np.uint8))
    code, out, err = run_cli(capsys, "universeg", vol, "--examples", good, empty, "--intensity", "ct-abdomen",
                             "-o", tmp_path / "seg.nrrd")
    assert code == 0, err
    assert "warning: 1 example(s) with an empty label for value 1 were skipped: empty.nrrd" in err


EXAMPLE_CASES = [
    ("all labels empty", "the label is empty"),
    ("shape mismatch", "differ in shape"),
    ("constant image", "is constant"),
    ("RGB label", "RGB image"),
    ("missing label", "not found"),
]


@pytest.mark.parametrize("kind,words", EXAMPLE_CASES)
def test_bad_examples(capsys, tmp_path, standin, kind, words):
    vol = write_image(tmp_path / "v.nrrd", blob_3d())
    img, lab = blob_2d(), (blob_2d() > 100).astype(np.uint8)
    if kind == "all labels empty":
        pair = _example(tmp_path, "e", img, np.zeros_like(lab))
    elif kind == "shape mismatch":
        pair = _example(tmp_path, "e", img, lab[:20])
    elif kind == "constant image":
        pair = _example(tmp_path, "e", np.full_like(img, 9), lab)
    elif kind == "RGB label":
        pair = f"{write_image(tmp_path / 'e.png', img)}:" \
               f"{write_image(tmp_path / 'e_l.png', np.stack([lab] * 3, -1) * 255, vector=True)}"
    else:
        pair = f"{write_image(tmp_path / 'e.nrrd', img)}:{tmp_path / 'nolabel.nrrd'}"
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "universeg", vol, "--examples", pair, "--intensity", "ct-abdomen",
                           "-o", tmp_path / "seg.nrrd")
    assert code == 2 and words in error_line(err)
    assert snapshot(tmp_path) == before


# -------------------------------------------------------------------------------------------------- geometry --
def test_oblique_anisotropic_geometry_kept_2d_slice_and_universeg(capsys, tmp_path, standin):
    c, s = np.cos(0.4), np.sin(0.4)
    direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    vol = write_image(tmp_path / "v.nrrd", blob_3d(), spacing=(0.6, 0.9, 4.0), origin=(10.0, -5.0, 3.0),
                      direction=direction)
    lab = write_image(tmp_path / "l.nrrd", (blob_3d() > 50).astype(np.uint8), spacing=(0.6, 0.9, 4.0),
                      origin=(10.0, -5.0, 3.0), direction=direction)
    code, _, err = run_cli(capsys, "universeg", vol, "--examples", f"{vol}:{lab}", "-o", tmp_path / "seg.nii.gz")
    assert code == 0, err
    src, seg = sitk.ReadImage(str(vol)), sitk.ReadImage(str(tmp_path / "seg.nii.gz"))
    np.testing.assert_allclose(seg.GetSpacing(), src.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(seg.GetDirection(), src.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(seg.GetOrigin(), src.GetOrigin(), atol=1e-4)


# Same shape, another grid: a label of another placement would be taken voxel for voxel (issue 24, item 9).
GRID_CASES = [
    ("spacing", dict(spacing=(0.6, 0.9, 2.0)), "another spacing"),
    ("origin", dict(origin=(0.0, 0.0, 50.0)), "another origin"),
    ("direction", dict(direction=(-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)), "another direction"),
]


@pytest.mark.parametrize("route", ["examples", "labelled-slices", "library export"])
@pytest.mark.parametrize("kind,change,words", GRID_CASES)
def test_label_on_another_grid_refused(capsys, tmp_path, standin, route, kind, change, words):
    grid = dict(spacing=(0.6, 0.9, 4.0), origin=(10.0, -5.0, 3.0), direction=tuple(np.eye(3).ravel()))
    vol = write_image(tmp_path / "v.nrrd", blob_3d(), **grid)
    lab = write_image(tmp_path / "l.nrrd", (blob_3d() > 50).astype(np.uint8), **dict(grid, **change))
    before = snapshot(tmp_path)
    if route == "examples":
        argv = ["universeg", vol, "--examples", f"{vol}:{lab}", "-o", tmp_path / "seg.nrrd"]
    elif route == "labelled-slices":
        argv = ["universeg", vol, "--labelled-slices", lab, "-o", tmp_path / "seg.nrrd"]
    else:
        argv = ["library", "export", tmp_path / "lib", "--volume", vol, "--labelmap", lab, "--structure", "x"]
    code, _, err = run_cli(capsys, *argv)
    line = error_line(err)
    assert code == 2 and words in line and f"{lab} has the shape of {vol}" in line
    assert "image: spacing (0.6, 0.9, 4), origin (10, -5, 3), direction (1, 0, 0, 0, 1, 0, 0, 0, 1)" in line
    assert "; label: spacing" in line and "resample the label" in line
    assert snapshot(tmp_path) == before and not standin


def test_label_grid_within_float32_precision_accepted(capsys, tmp_path, standin):
    """A NIfTI header stores float32: a label saved there and read back places the same grid."""
    c, s = np.cos(0.3), np.sin(0.3)
    grid = dict(spacing=(0.7, 0.7, 3.3), origin=(123.456789, -98.7654321, 45.6789),
                direction=(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    vol = write_image(tmp_path / "v.nrrd", blob_3d(), **grid)
    lab = write_image(tmp_path / "l.nii.gz", (blob_3d() > 50).astype(np.uint8), **grid)
    code, _, err = run_cli(capsys, "universeg", vol, "--examples", f"{vol}:{lab}", "-o", tmp_path / "seg.nrrd")
    assert code == 0, err
