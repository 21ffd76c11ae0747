"""Controls in the viewer's terms (issue 16), Qt-free: a box drawn on one slice gets a full depth, the slicing
axis follows the slice view (Red / Yellow / Green) whatever the acquisition, the current slice of a view, sizes
in millilitres."""
from __future__ import annotations

import numpy as np
import pytest

import slicer
from MedSegSlicerLib import geometry
from MedSegSlicerLib.errors import InputError


@pytest.fixture
def sample(ct_sample):
    return ct_sample


@pytest.mark.parametrize("value, name", [(1, "spleen"), (2, "kidney_right"), (3, "kidney_left"), (5, "liver")])
def test_box_drawn_on_the_middle_slice_gets_the_structures_depth(sample, value, name):
    ctx, vol, labels = sample
    m = labels == value
    z = np.nonzero(m.any(axis=(1, 2)))[0]
    k = int((z[0] + z[-1]) // 2)
    ys, xs = np.nonzero(m[k])
    drawn = (int(xs.min()), int(ys.min()), k, int(xs.max()), int(ys.max()), k)
    box = geometry.full_depth_box(drawn, "axial", vol)
    assert box[:2] == drawn[:2] and box[3:5] == drawn[3:5]            # in-plane as drawn
    assert box[2] <= z[0] and box[5] >= z[-1], f"{name}: depth {box[2]}-{box[5]} misses {z[0]}-{z[-1]}"
    assert box[2] <= k <= box[5]


def test_full_depth_is_in_millimetres_and_clipped(slicer_scene):
    ijk = np.diag([0.5, 0.5, 5.0, 1.0])                 # thick slices: 20 voxels of 0.5 mm = 10 mm wide
    vol = slicer_scene.add_volume_from_array(np.zeros((40, 64, 64), np.int16), ijk, "thick")
    box = geometry.full_depth_box((10, 10, 20, 29, 29, 20), "axial", vol)
    assert box[5] - box[2] + 1 == 3                     # 1.2 x 10 mm = 12 mm -> 3 slices of 5 mm
    box = geometry.full_depth_box((0, 0, 0, 63, 63, 0), "axial", vol)
    assert box[2] == 0 and box[5] < 40                   # clipped at the volume's first slice
    with pytest.raises(InputError, match="Unknown axis"):
        geometry.full_depth_box((0, 0, 0, 3, 3, 0), "oblique", vol)


# Slicer's default presets (vtkMRMLSliceNode): columns = slice x, slice y, normal in RAS
PRESETS = {"Axial": [[-1, 0, 0], [0, 1, 0], [0, 0, 1]], "Sagittal": [[0, 0, 1], [-1, 0, 0], [0, 1, 0]],
           "Coronal": [[-1, 0, 0], [0, 0, 1], [0, 1, 0]]}


def _slice_node(orientation):
    node = slicer.vtkMRMLSliceNode()
    m = np.eye(4)
    m[:3, :3] = PRESETS[orientation]
    node.GetSliceToRAS().DeepCopy(geometry.numpy_to_matrix(m))
    return node


@pytest.mark.parametrize("orientation, axial_acq, sagittal_acq", [
    ("Axial", "axial", "coronal"), ("Coronal", "coronal", "sagittal"), ("Sagittal", "sagittal", "axial")])
def test_slicing_axis_follows_the_view(slicer_scene, orientation, axial_acq, sagittal_acq):
    axial = slicer_scene.add_volume_from_array(np.zeros((10, 20, 30), np.int16), np.diag([1.0, 1, 2, 1]), "ax")
    # a sagittal acquisition: i runs anterior-posterior, j superior-inferior, k (slices) left-right
    sag_m = np.array([[0, 0, 3.0, 0], [1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1.0]])
    sagittal = slicer_scene.add_volume_from_array(np.zeros((10, 20, 30), np.int16), sag_m, "sag")
    node = _slice_node(orientation)
    assert geometry.axis_for_slice_node(axial, node) == axial_acq
    assert geometry.axis_for_slice_node(sagittal, node) == sagittal_acq
    with pytest.raises(InputError, match="no valid orientation"):
        geometry.axis_for_view_normal(axial, (0, 0, 0))


def test_slice_index_of_a_view(sample):
    ctx, vol, labels = sample
    node = _slice_node("Axial")
    world = geometry.apply(geometry.volume_ijk_to_world(vol), np.array([[40.0, 50.0, 17.0]]))[0]
    m = geometry.matrix_to_numpy(node.GetSliceToRAS())
    m[:3, 3] = world
    node.GetSliceToRAS().DeepCopy(geometry.numpy_to_matrix(m))
    assert geometry.slice_index_for_view(vol, node, "axial") == 17
    m[:3, 3] = world + np.array([0, 0, 1e4])
    node.GetSliceToRAS().DeepCopy(geometry.numpy_to_matrix(m))
    assert geometry.slice_index_for_view(vol, node, "axial") in (0, labels.shape[0] - 1)   # clamped


def test_sizes_in_millilitres(sample):
    ctx, vol, labels = sample
    spacing = geometry.voxel_spacing(vol)
    np.testing.assert_allclose(spacing, [3.0, 3.0, 3.0], atol=1e-3)
    kidney = labels == 3
    assert geometry.mask_volume_ml(kidney, vol) == pytest.approx(kidney.sum() * 27.0 / 1000.0, rel=1e-4)
