"""The slicing model (medseg_backend.slicing): axes, box projection, checks and bounding boxes."""
import warnings

import numpy as np
import pytest

from medseg_backend import slicing
from medseg_backend.errors import InputError, MedSegWarning


def _volume():
    return np.arange(4 * 5 * 6).reshape(4, 5, 6)  # K=4, J=5, I=6


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_projection_matches_the_slice_view(axis):
    vol = _volume()
    box = (1, 2, 0, 4, 3, 2)  # x0, y0, z0, x1, y1, z1
    s0, s1, (x0, y0, x1, y1) = slicing.project_box(box, axis)
    work = slicing.to_slices(vol, axis)
    # the voxels of the box, read through the slice view and the projected 2-D box, are exactly the box's voxels
    got = np.sort(work[s0:s1 + 1, y0:y1 + 1, x0:x1 + 1].ravel())
    want = np.sort(vol[0:3, 2:4, 1:5].ravel())
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(slicing.from_slices(work, axis), vol)


def test_axis_names_and_errors():
    assert [slicing.axis_index(a) for a in ("axial", "Coronal", " sagittal", 2)] == [0, 1, 2, 2]
    assert slicing.axis_name(1) == "coronal"
    with pytest.raises(InputError, match="Unknown axis 'oblique'"):
        slicing.axis_index("oblique")
    with pytest.raises(InputError, match="Unknown axis '3'"):
        slicing.axis_index(3)


def test_check_box_rules():
    shape = (10, 20, 30)
    assert slicing.check_box((1, 2, 3, 4, 5, 6), shape) == (1, 2, 3, 4, 5, 6)
    with pytest.raises(InputError, match="inverted along y"):
        slicing.check_box((1, 9, 3, 4, 5, 6), shape)
    with pytest.raises(InputError, match="outside the image along z"):
        slicing.check_box((1, 2, 10, 4, 5, 12), shape)
    with pytest.raises(InputError, match="single pixel in each slice"):
        slicing.check_box((3, 3, 0, 3, 3, 9), shape, axis="axial")
    # the same box is a valid sagittal box: its slice plane is y-z
    assert slicing.check_box((3, 3, 0, 3, 5, 9), shape, axis="sagittal") == (3, 3, 0, 3, 5, 9)
    with pytest.warns(MedSegWarning, match="clipped to"):
        assert slicing.check_box((-2, 2, 3, 40, 5, 6), shape) == (0, 2, 3, 29, 5, 6)
    with pytest.raises(InputError, match="1 voxel wide along y"):
        slicing.check_box((1, 4, 3, 9, 4, 6), shape, each_side=True)
    with pytest.raises(InputError, match="6 numbers for a 2-D image"):
        slicing.check_box((1, 2, 3, 4, 5, 6), (10, 20))


def test_restrict_and_bounding_boxes():
    assert slicing.restrict_box((0, 0, 0, 9, 9, 20), "axial", 5, 8) == (0, 0, 5, 9, 9, 8)
    assert slicing.restrict_box((0, 0, 0, 9, 9, 20), "sagittal", 3, None) == (3, 0, 0, 9, 9, 20)
    with pytest.raises(InputError, match="does not overlap"):
        slicing.restrict_box((0, 0, 0, 9, 9, 20), "coronal", 12, 14)
    m = np.zeros((6, 8, 10), np.uint8)
    m[2:5, 3:7, 4:9] = 1
    assert slicing.bbox3d(m) == (4, 3, 2, 8, 6, 4)
    assert slicing.bbox3d(m, margin=3) == (1, 0, 0, 9, 7, 5)
    assert slicing.bbox3d(np.zeros((3, 3, 3))) is None
    assert slicing.bbox2d(m[3]) == (4, 3, 8, 6)
    assert slicing.bbox2d(np.zeros((3, 3))) is None
    np.testing.assert_array_equal(slicing.labelled_slices(m, "axial"), [2, 3, 4])
    np.testing.assert_array_equal(slicing.labelled_slices(m, "sagittal"), [4, 5, 6, 7, 8])


def test_keep_slices_copies_the_users_slices_exactly():
    pred = np.ones((4, 5, 6), np.uint8)
    user = np.zeros_like(pred)
    user[1, 2, 3] = 1                    # one drawn voxel on axial slice 1
    out = slicing.keep_slices(pred, user, "axial")
    assert out[1].sum() == 1 and out[1, 2, 3] == 1
    assert out[0].all() and out[2:].all()
    out = slicing.keep_slices(pred, user, "sagittal", slices=[0])
    assert out[:, :, 0].sum() == 0 and out[:, :, 1:].all()
