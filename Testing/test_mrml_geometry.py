"""Geometry of the Slicer layer against slicer-core's real MRML: volume round trips vs SimpleITK, ROI -> voxel box
under rotation and parent transforms, outside / partly outside ROIs."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import SimpleITK
from medseg_backend import slicing
from MedSegSlicerLib import geometry
from sitk_frames import ijk_to_ras_from_sitk, sitk_geometry
from MedSegSlicerLib.errors import InputError, MedSegWarning

FIXTURE_VOLUMES = [                              # in Testing/Data (crops keep the source's grid orientation)
    "totalseg_ct_sm/ct.nii.gz",                  # flipped axes (LPS -1,-1)
    "pyradiomics/brain1_crop.nrrd",              # y flipped, anisotropic 6.5 mm slices
    "sct_spinalcord/mt1.nii.gz",                 # oblique
    "sct_spinalcord/t2_crop.nii.gz",             # permuted axes
    "dcmqi_ct3slice/ct_crop.nrrd",               # 200x200x3 crop of a 512x512x3 CT
]


def rot(axis: str, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    m = np.eye(4)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def translate(t) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = t
    return m


def sitk_box(img, corners_ras: np.ndarray):
    """Independent oracle: voxel box of RAS corner points through SimpleITK (LPS) continuous indices."""
    idx = np.array([img.TransformPhysicalPointToContinuousIndex((-p[0], -p[1], float(p[2]))) for p in corners_ras])
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    return tuple(int(v) for v in (*np.ceil(lo - 1e-4), *np.floor(hi + 1e-4)))


def in_sitk_index_order(array_kji: np.ndarray, ijk_to_ras: np.ndarray, sitk_ijk_to_ras: np.ndarray) -> np.ndarray:
    """Re-index a Slicer (array, IJK-to-RAS) into SimpleITK's index order for the same physical voxels.

    Readers may order the axes differently (Slicer's NRRD reader can reverse the slice order); the physical
    placement must agree, so the index map between the two grids must be a signed permutation plus an integer
    shift, and the voxel values must then be identical."""
    m = np.linalg.inv(ijk_to_ras) @ sitk_ijk_to_ras          # SimpleITK index -> Slicer index
    lin = np.round(m[:3, :3])
    assert np.allclose(m[:3, :3], lin, atol=1e-4), f"grids are not a permutation of each other:\n{m}"
    assert np.allclose(m[:3, 3], np.round(m[:3, 3]), atol=1e-3), f"grids are shifted by a fraction:\n{m}"
    assert sorted(np.abs(lin).sum(axis=0)) == [1, 1, 1]
    K, J, I = array_kji.shape
    size_xyz = np.abs(lin.T) @ np.array([I, J, K])           # SimpleITK (x, y, z) sizes
    sx, sy, sz = (int(round(v)) for v in size_xyz)
    k, j, i = np.meshgrid(np.arange(sz), np.arange(sy), np.arange(sx), indexing="ij")
    src = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    dst = np.round(m @ src).astype(int)
    return array_kji[dst[2], dst[1], dst[0]].reshape(sz, sy, sx)


@pytest.mark.parametrize("rel", FIXTURE_VOLUMES)
def test_volume_array_and_ijk_to_ras_match_simpleitk(slicer_scene, data_dir, rel):
    path = data_dir / rel
    node = slicer_scene.load_volume(str(path))
    data = geometry.volume_to_array(node)
    img = SimpleITK.ReadImage(str(path))
    ref = SimpleITK.GetArrayFromImage(img)
    sitk_ijk_to_ras = ijk_to_ras_from_sitk(img.GetSpacing(), img.GetOrigin(), img.GetDirection())
    np.testing.assert_array_equal(in_sitk_index_order(data.array, data.ijk_to_world, sitk_ijk_to_ras), ref)
    # same physical box: the RAS positions of the 8 corner voxels agree as sets
    def corners(shape_kji, m):
        K, J, I = shape_kji
        pts = [[i, j, k] for i in (0, I - 1) for j in (0, J - 1) for k in (0, K - 1)]
        return np.array(sorted(map(tuple, np.round(geometry.apply(m, pts), 3))))
    np.testing.assert_allclose(corners(data.shape, data.ijk_to_world), corners(ref.shape, sitk_ijk_to_ras), atol=2e-3)
    # the geometry handed to the backend is SimpleITK's LPS convention of the node's own grid
    g = sitk_geometry(data.ijk_to_world)
    np.testing.assert_allclose(ijk_to_ras_from_sitk(g.spacing, g.origin, g.direction), data.ijk_to_world,
                               atol=1e-6)
    if np.allclose(data.ijk_to_world, sitk_ijk_to_ras, atol=1e-4):   # same index order: exactly SimpleITK's
        np.testing.assert_array_equal(data.array, ref)
        np.testing.assert_allclose(g.spacing, img.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(g.origin, img.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(g.direction, img.GetDirection(), atol=1e-5)


def test_bundled_sample_round_trip(slicer_scene, data_dir):
    path = data_dir / "totalseg_ct_sm" / "ct.nii.gz"
    node = slicer_scene.load_volume(str(path))
    img = SimpleITK.ReadImage(str(path))
    data = geometry.volume_to_array(node)
    np.testing.assert_array_equal(data.array, SimpleITK.GetArrayFromImage(img))
    assert data.shape == (30, 101, 122)
    np.testing.assert_allclose(geometry.voxel_spacing(node), (3.0, 3.0, 3.0))


def test_parent_transform_is_included_and_nonlinear_refused(slicer_scene, data_dir):
    node = slicer_scene.load_volume(str(data_dir / "totalseg_ct_sm" / "ct.nii.gz"))
    base = geometry.volume_ijk_to_world(node)
    m = translate((10, -5, 2)) @ rot("z", 30)
    t = slicer_scene.add_linear_transform(m)
    node.SetAndObserveTransformNodeID(t.GetID())
    np.testing.assert_allclose(geometry.volume_ijk_to_world(node), m @ base, atol=1e-6)
    # nested transforms compose
    outer = slicer_scene.add_linear_transform(translate((0, 0, 7)))
    t.SetAndObserveTransformNodeID(outer.GetID())
    np.testing.assert_allclose(geometry.volume_ijk_to_world(node), translate((0, 0, 7)) @ m @ base, atol=1e-6)
    grid = slicer_scene.scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    node.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(InputError, match="non-linear transform 'warp'.*harden"):
        geometry.volume_to_array(node)


def test_no_volume_and_vector_volume_errors(slicer_scene):
    with pytest.raises(InputError, match="No volume selected"):
        geometry.check_scalar_volume(None)
    empty = slicer_scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="holds no voxels"):
        geometry.volume_to_array(empty)
    vec = slicer_scene.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    with pytest.raises(InputError, match="vtkMRMLVectorVolumeNode, not a scalar volume"):
        geometry.volume_to_array(vec)
    rgb = slicer_scene.add_volume_from_array(np.zeros((2, 3, 4, 3), np.uint8).reshape(2, 3, 4 * 3), name="flat")
    rgb.GetImageData().SetDimensions(4, 3, 2)
    rgb.GetImageData().GetPointData().GetScalars().SetNumberOfComponents(3)
    with pytest.raises(InputError, match="3 components per voxel"):
        geometry.volume_to_array(rgb)


def test_roi_from_box_round_trip_and_oblique_volume(slicer_scene, data_dir):
    path = data_dir / "sct_spinalcord" / "mt1.nii.gz"   # oblique grid
    vol = slicer_scene.load_volume(str(path))
    roi = slicer_scene.add_roi()
    for box in [(3, 5, 0, 30, 33, 4), (0, 0, 2, 39, 39, 2), (10, 11, 1, 10, 11, 3)]:
        geometry.voxel_box_to_roi(roi, vol, box)
        assert geometry.roi_to_voxel_box(roi, vol) == box
        # the ROI's corners sit half a voxel outside the extreme voxel centres: SimpleITK agrees on the box
        assert sitk_box(SimpleITK.ReadImage(str(path)), geometry.roi_corners_world(roi)) == box


def test_rotated_roi_gives_enclosing_box_with_warning(slicer_scene, data_dir):
    path = data_dir / "totalseg_ct_sm" / "ct.nii.gz"
    vol = slicer_scene.load_volume(str(path))
    img = SimpleITK.ReadImage(str(path))
    roi = slicer_scene.add_roi()
    centre = geometry.apply(geometry.volume_ijk_to_world(vol), [[60, 50, 15]])[0]
    roi.SetAndObserveObjectToNodeMatrix(geometry.numpy_to_matrix(translate(centre) @ rot("z", 30) @ rot("x", 10)))
    roi.SetSize(60.0, 30.0, 20.0)
    with pytest.warns(MedSegWarning, match="rotated 3[0-9] degrees"):
        box = geometry.roi_to_voxel_box(roi, vol)
    # oracle: the corners computed here, mapped through SimpleITK
    half = np.array([30.0, 15.0, 10.0])
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    corners = geometry.apply(translate(centre) @ rot("z", 30) @ rot("x", 10), signs * half)
    assert box == sitk_box(img, corners)
    assert box[3] - box[0] > 60 / 3  # the rotated box is wider than the ROI's own 60 mm x-extent


def test_roi_and_volume_under_transforms(slicer_scene, data_dir):
    path = data_dir / "totalseg_ct_sm" / "ct.nii.gz"
    vol = slicer_scene.load_volume(str(path))
    img = SimpleITK.ReadImage(str(path))
    roi = slicer_scene.add_roi()
    box = (20, 30, 5, 70, 80, 20)
    geometry.voxel_box_to_roi(roi, vol, box)
    # same transform on both: the box does not change
    t = slicer_scene.add_linear_transform(translate((15, 4, -6)) @ rot("z", 20))
    vol.SetAndObserveTransformNodeID(t.GetID())
    roi.SetAndObserveTransformNodeID(t.GetID())
    assert geometry.roi_to_voxel_box(roi, vol) == box
    # only the ROI moved by exactly 2 voxels along x (6 mm in RAS x): the box moves by 2
    vol.SetAndObserveTransformNodeID(None)
    shift = slicer_scene.add_linear_transform(translate((6.0, 0, 0)))
    t.SetAndObserveTransformNodeID(shift.GetID())
    roi.SetAndObserveTransformNodeID(shift.GetID())
    geometry.voxel_box_to_roi(roi, vol, box)  # fit in the ROI's transformed frame
    assert geometry.roi_to_voxel_box(roi, vol) == box
    shift.SetMatrixTransformToParent(geometry.numpy_to_matrix(translate((12.0, 0, 0))))
    assert geometry.roi_to_voxel_box(roi, vol) == (22, 30, 5, 72, 80, 20)
    assert sitk_box(img, geometry.roi_corners_world(roi)) == (22, 30, 5, 72, 80, 20)


def test_roi_outside_volume_is_an_error_and_partly_outside_is_clipped(slicer_scene, data_dir):
    vol = slicer_scene.load_volume(str(data_dir / "totalseg_ct_sm" / "ct.nii.gz"))
    roi = slicer_scene.add_roi("far")
    ijk_to_world = geometry.volume_ijk_to_world(vol)
    roi.SetCenter(*geometry.apply(ijk_to_world, [[500, 50, 15]])[0])
    roi.SetSize(30, 30, 30)
    with pytest.raises(InputError, match="outside the volume.*another coordinate frame"):
        geometry.roi_to_voxel_box(roi, vol)
    # in another frame: a transform puts an ROI drawn on the volume far away
    near = slicer_scene.add_roi("moved")
    geometry.voxel_box_to_roi(near, vol, (10, 10, 5, 20, 20, 10))
    far = slicer_scene.add_linear_transform(translate((0, 0, 1000)))
    near.SetAndObserveTransformNodeID(far.GetID())
    with pytest.raises(InputError, match="outside the volume"):
        geometry.roi_to_voxel_box(near, vol)
    part = slicer_scene.add_roi("part")
    geometry.voxel_box_to_roi(part, vol, (100, 80, 20, 140, 120, 40))  # beyond 121, 100, 29
    with pytest.warns(MedSegWarning, match="clipped to voxels"):
        assert geometry.roi_to_voxel_box(part, vol) == (100, 80, 20, 121, 100, 29)
    with pytest.raises(InputError, match="No ROI selected"):
        geometry.roi_to_voxel_box(None, vol)


def test_flat_roi_selects_nearest_slice_and_box_helpers(slicer_scene, data_dir):
    vol = slicer_scene.load_volume(str(data_dir / "totalseg_ct_sm" / "ct.nii.gz"))
    roi = slicer_scene.add_roi()
    centre = geometry.apply(geometry.volume_ijk_to_world(vol), [[50.0, 40.0, 12.2]])[0]
    roi.SetCenter(*centre)
    roi.SetSize(30.0, 30.0, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        box = geometry.roi_to_voxel_box(roi, vol)
    assert box[2] == box[5] == 12
    assert slicing.restrict_box((0, 0, 0, 9, 9, 20), "axial", 5, 8) == (0, 0, 5, 9, 9, 8)
    assert slicing.restrict_box((0, 0, 0, 9, 9, 20), "sagittal", 3, None) == (3, 0, 0, 9, 9, 20)
    with pytest.raises(InputError, match="does not overlap"):
        slicing.restrict_box((0, 0, 0, 9, 9, 20), "coronal", 12, 14)
    with pytest.raises(InputError, match="inverted"):
        geometry.clip_box((5, 0, 0, 4, 9, 9), (10, 10, 10))
    m = np.zeros((10, 12, 14), np.uint8)
    m[2:5, 3:7, 4:9] = 1
    assert slicing.bbox3d(m) == (4, 3, 2, 8, 6, 4)
    assert slicing.bbox3d(m, margin=3) == (1, 0, 0, 11, 9, 7)
    assert slicing.bbox3d(np.zeros((3, 3, 3))) is None


# ------------------------------------------------- ROIs and volumes under transforms, through a prepared run --
def test_rotated_roi_run_gets_the_enclosing_box_and_one_message(slicer_scene, data_dir):
    """An ROI rotated 45 degrees against the volume: the prepared run's box is the voxel box around the ROI's
    corners (SimpleITK oracle), and the panel gets one line saying so - not an error, not a silent change."""
    from MedSegSlicerLib.segmenter import Segmenter

    path = data_dir / "totalseg_ct_sm" / "ct.nii.gz"
    vol = slicer_scene.load_volume(str(path), "ct")
    roi = slicer_scene.add_roi("tilted")
    centre = geometry.apply(geometry.volume_ijk_to_world(vol), [[60, 50, 15]])[0]
    placed = translate(centre) @ rot("z", 45)
    roi.SetAndObserveObjectToNodeMatrix(geometry.numpy_to_matrix(placed))
    roi.SetSize(45.0, 30.0, 15.0)
    prepared = Segmenter(slicer_scene, worker=False).prepare_medsam(vol, [roi])
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    oracle = sitk_box(SimpleITK.ReadImage(str(path)), geometry.apply(placed, signs * np.array([22.5, 15.0, 7.5])))
    assert prepared.request.params["boxes"] == [list(oracle)]
    assert prepared.messages == ["ROI 'tilted' is rotated 45 degrees relative to the voxel grid of 'ct': using the "
                                 "voxel-aligned box that encloses it."]


@pytest.mark.parametrize("kind", ["vtkMRMLBSplineTransformNode", "vtkMRMLGridTransformNode", "nested"])
@pytest.mark.parametrize("node", ["volume", "roi"])
def test_non_linear_transform_refused_before_any_work(slicer_scene, data_dir, kind, node):
    """A volume or an ROI under a non-linear (B-spline, grid) transform, directly or through a linear transform
    inside one: one line that says to harden it, before any work; the segmentation is unchanged."""
    from MedSegSlicerLib import labelmaps
    from MedSegSlicerLib.segmenter import Segmenter

    vol = slicer_scene.load_volume(str(data_dir / "totalseg_ct_sm" / "ct.nii.gz"), "ct")
    roi = slicer_scene.add_roi("box")
    geometry.voxel_box_to_roi(roi, vol, (30, 30, 10, 60, 60, 14))
    seg = slicer_scene.add_segmentation("seg", vol)
    sid = labelmaps.write_mask(seg, np.ones(geometry.volume_shape(vol), np.uint8), vol, name="all")
    if kind == "nested":
        warp = slicer_scene.scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
        t = slicer_scene.add_linear_transform(translate((1, 2, 3)), "shift")
        t.SetAndObserveTransformNodeID(warp.GetID())
    else:
        t = warp = slicer_scene.scene.AddNewNodeByClass(kind, "warp")
    target = vol if node == "volume" else roi
    target.SetAndObserveTransformNodeID(t.GetID())
    with pytest.raises(InputError) as info:
        Segmenter(slicer_scene, worker=False).prepare_medsam(vol, [roi], segmentation_node=seg)
    name = "ct" if node == "volume" else "box"
    assert str(info.value) == (f"'{name}' is under the non-linear transform '{t.GetName()}': harden the transform "
                               "(Data module, right-click > Harden transform) or remove it, then run again.")
    target.SetAndObserveTransformNodeID(None)
    assert labelmaps.segment_to_array(seg, sid, vol).all()
