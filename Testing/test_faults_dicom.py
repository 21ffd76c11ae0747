"""Fault catalogue, DICOM folders: a folder holding two series is refused with the list of series (number, UID,
description, slice count) and a way to pick one (``--series N`` or ``--series UID``), in the CLI and in
``medseg_backend.io.read_image`` (issue 24, item 7). The series are written here from the bundled CT crop with
SimpleITK's DICOM writer (no DICOM file is bundled)."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from faults_util import blob_3d, error_line, run_cli, snapshot, write_image
from medseg_backend.errors import InputError
from medseg_backend.io import read_image

UID_A = "1.2.826.0.1.3680043.8.498.10001"
UID_B = "1.2.826.0.1.3680043.8.498.20002"


def write_series(folder, img, uid, description, stem):
    """Write ``img`` (3-D, int16) as one DICOM file per slice of series ``uid``."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = img.GetDirection()
    tags = [("0008|0060", "CT"), ("0020|000d", "1.2.826.0.1.3680043.8.498.1"), ("0020|000e", uid),
            ("0008|103e", description), ("0008|0021", "20260101"), ("0008|0031", "120000"),
            ("0020|0037", "\\".join(f"{v:.6f}" for v in (direction[0], direction[3], direction[6],
                                                             direction[1], direction[4], direction[7])))]
    for k in range(img.GetDepth()):
        s = img[:, :, k]
        for tag, value in tags:
            s.SetMetaData(tag, value)
        s.SetMetaData("0008|0018", f"{uid}.{k + 1}")
        s.SetMetaData("0020|0032", "\\".join(f"{v:.4f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k))))
        s.SetMetaData("0020|0013", str(k + 1))
        writer.SetFileName(str(folder / f"{stem}{k:03d}.dcm"))
        writer.Execute(s)


@pytest.fixture
def two_series(tmp_path, data_dir):
    """A folder with the CT crop as series A (3 slices, 'CT abdomen') and a shifted copy as series B (2 slices,
    'CT abdomen + contrast')."""
    ct = sitk.Cast(sitk.ReadImage(str(data_dir / "dcmqi_ct3slice" / "ct_crop.nrrd")), sitk.sitkInt16)
    folder = tmp_path / "dicom"
    write_series(folder, ct, UID_A, "CT abdomen", "a")
    b = ct[:, :, :2] + 50
    b.SetOrigin(tuple(np.add(ct.GetOrigin(), (0, 0, 100.0))))
    write_series(folder, b, UID_B, "CT abdomen + contrast", "b")
    return folder, sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(b)


def test_two_series_refused_with_the_list(two_series):
    folder, _, _ = two_series
    listed = (f"DICOM folder {folder} holds 2 series: 1) {UID_A} 'CT abdomen', 3 slice(s); 2) {UID_B} "
              "'CT abdomen + contrast', 2 slice(s); ")
    with pytest.raises(InputError) as info:
        read_image(str(folder), series=None)
    assert str(info.value) == listed + "pick one with --series N or --series UID (or give a folder that holds one " \
                                       "series)."
    with pytest.raises(InputError) as info:   # a reader that offers no choice (example images) does not say --series
        read_image(str(folder))
    assert str(info.value) == listed + "give a folder that holds one series (copy that series' files into a " \
                                       "folder of their own)."


def test_series_picked_by_number_or_uid(two_series):
    folder, a, b = two_series
    np.testing.assert_array_equal(read_image(str(folder), series="1").array, a)
    np.testing.assert_array_equal(read_image(str(folder), series=UID_B).array, b)
    with pytest.raises(InputError, match="Series '3' is not in DICOM folder .* give one of those UIDs or a number "
                                         "1..2"):
        read_image(str(folder), series="3")


def test_cli_two_series_refused_then_picked(capsys, tmp_path, two_series):
    folder, a, _ = two_series
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "medsam", folder, "--box", "60,60,0,120,120,2", "-o", tmp_path / "seg.nrrd",
                           "--model", "medsam-vit-b")
    line = error_line(err)
    assert code == 2 and "holds 2 series" in line and "--series N or --series UID" in line
    assert snapshot(tmp_path) == before
    # picked: the run reaches the model (not installed here), past the input checks
    code, _, err = run_cli(capsys, "medsam", folder, "--series", "1", "--box", "60,60,0,120,120,2",
                           "-o", tmp_path / "seg.nrrd", "--model", "medsam-vit-b")
    assert code == 2 and "not installed" in error_line(err)
    code, _, err = run_cli(capsys, "universeg", folder, "--series", "9", "--examples",
                           f"{write_image(tmp_path / 'e.nrrd', blob_3d())}:"
                           f"{write_image(tmp_path / 'l.nrrd', (blob_3d() > 50).astype(np.uint8))}",
                           "-o", tmp_path / "seg.nrrd")
    assert code == 2 and "Series '9' is not in DICOM folder" in error_line(err)


def test_series_on_a_file_refused(capsys, tmp_path):
    vol = write_image(tmp_path / "v.nrrd", blob_3d())
    code, _, err = run_cli(capsys, "medsam", vol, "--series", "1", "--box", "8,8,0,24,24,2",
                           "-o", tmp_path / "seg.nrrd", "--model", "medsam-vit-b")
    assert code == 2 and "--series picks a series of a DICOM folder" in error_line(err)
