"""Segments <-> arrays against slicer-core's real MRML: voxel-exact writes (new / replace / add), reading on
another grid (resampled) and under transforms, hidden segments and segment status, and the Segment Editor's modify path
(editable area, intensity masking, overwrite, undo)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import SimpleITK
import slicer  # slicer-core
from MedSegSlicerLib import editing, geometry, labelmaps, segments
from sitk_frames import sitk_geometry
from MedSegSlicerLib.errors import InputError, MedSegWarning


@pytest.fixture
def sample(ct_sample):
    return ct_sample


def test_new_segment_is_voxel_exact_with_name_and_colour(sample):
    ctx, vol, labels = sample
    seg = ctx.add_segmentation("seg", vol)
    liver = (labels == 5).astype(np.uint8)
    sid = labelmaps.write_mask(seg, liver, vol, name="liver", color=(0.1, 0.2, 0.3))
    segment = seg.GetSegmentation().GetSegment(sid)
    assert segment.GetName() == "liver"
    np.testing.assert_allclose(segment.GetColor(), (0.1, 0.2, 0.3))
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, vol), liver)
    # independent read-back through Slicer's own export (slicer.util -> ExportSegmentsToLabelmapNode)
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(seg, sid, vol), liver)
    # a second segment with a default palette colour leaves the first untouched
    sid2 = labelmaps.write_mask(seg, labels == 1, vol, name="spleen")
    assert seg.GetSegmentation().GetSegment(sid2).GetColor() != segment.GetColor()
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, vol), liver)
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid2, vol), labels == 1)
    assert segments.segment_id_by_name(seg, "spleen") == sid2


def test_replace_add_and_empty_segmentation_without_geometry(sample):
    ctx, vol, labels = sample
    seg = ctx.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "bare")  # no reference geometry, no display
    a = (labels == 2).astype(np.uint8)
    b = (labels == 3).astype(np.uint8)
    sid = labelmaps.write_mask(seg, a, vol, name="kidneys")
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, vol), a)
    labelmaps.write_mask(seg, b, vol, segment_id=sid, mode="add")
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, vol), a | b)
    small = np.zeros_like(a)
    small[10:12, 40:45, 50:60] = 1
    labelmaps.write_mask(seg, small, vol, segment_id=sid, mode="replace")
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, vol), small)
    labelmaps.write_mask(seg, np.zeros_like(a), vol, segment_id=sid, mode="replace")
    assert labelmaps.segment_to_array(seg, sid, vol).sum() == 0


def test_segmentation_on_another_grid_is_resampled(sample):
    ctx, vol, labels = sample
    ct = geometry.volume_to_array(vol)
    # a coarser grid (2x spacing), offset by half a fine voxel so that nearest-neighbour has no ties
    coarse_m = ct.ijk_to_world.copy()
    coarse_m[:3, :3] *= 2.0
    coarse_m[:3, 3] += ct.ijk_to_world[:3, :3] @ np.array([0.5, 0.5, 0.5])
    coarse_shape = (15, 51, 61)
    coarse_vol = ctx.add_volume_from_array(np.zeros(coarse_shape, np.int16), coarse_m, "coarse")
    seg = ctx.add_segmentation("coarse seg", coarse_vol)
    liver_fine = labels == 5
    liver_coarse = liver_fine[::2, ::2, ::2][:15, :51, :61].astype(np.uint8)  # any mask on the coarse grid
    sid = labelmaps.write_mask(seg, liver_coarse, coarse_vol, name="liver")
    got = labelmaps.segment_to_array(seg, sid, vol)
    # oracle 1: SimpleITK nearest-neighbour resampling of the coarse mask onto the CT grid
    def sitk_image(arr, m):
        g = sitk_geometry(m)
        img = SimpleITK.GetImageFromArray(arr)
        g.apply_to(img)
        return img
    ref = SimpleITK.GetArrayFromImage(SimpleITK.Resample(sitk_image(liver_coarse, coarse_m),
                                                         sitk_image(ct.array, ct.ijk_to_world),
                                                         SimpleITK.Transform(), SimpleITK.sitkNearestNeighbor, 0))
    np.testing.assert_array_equal(got, ref)
    # oracle 2: Slicer's own export path
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(seg, sid, vol), ref)
    assert got.sum() > 0.8 * liver_fine.sum()


def test_segmentation_under_transform_and_rotated_grid(sample):
    ctx, vol, labels = sample
    seg = ctx.add_segmentation("moved", vol)
    spleen = (labels == 1).astype(np.uint8)
    sid = labelmaps.write_mask(seg, spleen, vol, name="spleen")
    t = ctx.add_linear_transform(np.array([[1, 0, 0, 6.0], [0, 1, 0, 0], [0, 0, 1, 3.0], [0, 0, 0, 1]]))
    seg.SetAndObserveTransformNodeID(t.GetID())   # +2 voxels in x (column), +1 slice
    got = labelmaps.segment_to_array(seg, sid, vol)
    expected = np.zeros_like(spleen)
    expected[1:, :, 2:] = spleen[:-1, :, :-2]
    np.testing.assert_array_equal(got, expected)
    # writing while the segmentation is transformed lands on the right voxels of the volume
    seg2 = ctx.add_segmentation("rotated frame")
    rt = ctx.add_linear_transform(np.array([[0.8, -0.6, 0, 5], [0.6, 0.8, 0, -3], [0, 0, 1, 2], [0, 0, 0, 1.0]]))
    seg2.SetAndObserveTransformNodeID(rt.GetID())
    kid = (labels == 3).astype(np.uint8)
    sid2 = labelmaps.write_mask(seg2, kid, vol, name="kidney")
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg2, sid2, vol), kid)


def test_completed_status_hidden_missing_inputs_and_bad_mask(sample):
    ctx, vol, labels = sample
    seg = ctx.add_segmentation("seg", vol)
    sid = labelmaps.write_mask(seg, labels == 5, vol, name="liver")
    before = labelmaps.segment_to_array(seg, sid, vol)
    segment = seg.GetSegmentation().GetSegment(sid)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    logic.SetSegmentStatus(segment, logic.Completed)   # a status, not a lock (Segment Editor's rule)
    labelmaps.write_mask(seg, labels == 1, vol, segment_id=sid)
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, vol), labels == 1)
    seg.GetDisplayNode().SetSegmentVisibility(sid, False)
    with pytest.raises(InputError, match="hidden.*eye icon"):
        segments.check_segment_writable(seg, sid)
    segments.check_segment_writable(seg, sid, allow_hidden=True)
    with pytest.raises(InputError, match="No segmentation selected"):
        labelmaps.write_mask(None, labels == 1, vol)
    with pytest.raises(InputError, match="No volume selected"):
        labelmaps.write_mask(seg, labels == 1, None)
    with pytest.raises(InputError, match="not in segmentation"):
        labelmaps.write_mask(seg, labels == 1, vol, segment_id="nope")
    with pytest.raises(InputError, match=r"shape \(3, 3, 3\).*\(30, 101, 122\)"):
        labelmaps.write_mask(seg, np.ones((3, 3, 3)), vol, segment_id=sid, allow_hidden=True)
    with pytest.raises(InputError, match="Unknown write mode"):
        labelmaps.write_mask(seg, labels == 1, vol, mode="merge")
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, vol), labels == 1)  # failures wrote nothing
    assert (before != (labels == 1)).any()


def segments_to_labelmap(segmentation_node, segment_ids, volume_node):
    """Several segments as one label array (1..N in the given order; later segments win on overlap)."""
    n = len(segment_ids)
    labels = np.zeros(geometry.volume_shape(volume_node), dtype=np.uint8 if n < 256 else np.uint16)
    mapping = {}
    for value, sid in enumerate(segment_ids, start=1):
        labels[labelmaps.segment_to_array(segmentation_node, sid, volume_node) > 0] = value
        mapping[value] = sid
    return labels, mapping


def test_segments_to_labelmap(sample):
    ctx, vol, labels = sample
    seg = ctx.add_segmentation("seg", vol)
    ids = [labelmaps.write_mask(seg, labels == v, vol, name=str(v)) for v in (1, 2, 3, 5)]
    lab, mapping = segments_to_labelmap(seg, ids, vol)
    expected = np.zeros_like(labels, np.uint8)
    for n, v in enumerate((1, 2, 3, 5), start=1):
        expected[labels == v] = n
    np.testing.assert_array_equal(lab, expected)
    assert mapping == {1: ids[0], 2: ids[1], 3: ids[2], 4: ids[3]}


# ---- Segment Editor modify path (the effects' Apply: editing.apply_result) ---------------------------------------
def _apply(editor_logic, mask, vol, **kwargs):
    return editing.apply_result(editing.EditorLogicTarget(editor_logic), mask, vol, **kwargs)


def editor_setup(ctx, vol, labels):
    seg = ctx.add_segmentation("seg", vol)
    target = labelmaps.write_mask(seg, np.zeros_like(labels), vol, name="target")
    other = labelmaps.write_mask(seg, labels == 5, vol, name="liver")
    editor = ctx.segment_editor(seg, vol, target)
    return seg, target, other, editor


def test_editor_apply_set_add_and_undo(sample):
    ctx, vol, labels = sample
    seg, target, other, editor = editor_setup(ctx, vol, labels)
    mask = (labels == 1).astype(np.uint8)
    _apply(editor, mask, vol, mode="set")
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, target, vol), mask)
    _apply(editor, labels == 2, vol, mode="add")
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, target, vol), mask | (labels == 2))
    editor.Undo()
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, target, vol), mask)
    editor.Undo()
    assert labelmaps.segment_to_array(seg, target, vol).sum() == 0
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, other, vol), labels == 5)


def test_editor_respects_editable_area_intensity_and_overwrite(sample):
    ctx, vol, labels = sample
    seg, target, other, editor = editor_setup(ctx, vol, labels)
    node = ctx.segment_editor_node
    ct = geometry.volume_to_array(vol).array
    box = np.zeros_like(labels, np.uint8)
    box[5:25, 20:80, 30:110] = 1
    liver = labels == 5
    # editable area: inside the liver segment only
    node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    node.SetMaskSegmentID(other)
    _apply(editor, box, vol, mode="set")
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, target, vol), box & liver)
    editor.Undo()
    # editable intensity range
    node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedEverywhere)
    node.SetSourceVolumeIntensityMask(True)
    node.SetSourceVolumeIntensityMaskRange(0.0, 200.0)
    _apply(editor, box, vol, mode="set")
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, target, vol), box & (ct >= 0) & (ct <= 200))
    editor.Undo()
    node.SetSourceVolumeIntensityMask(False)
    # overwrite other segments: all -> the liver loses the box; none -> it keeps it
    node.SetOverwriteMode(node.OverwriteAllSegments)
    _apply(editor, box, vol, mode="set")
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, other, vol), liver & ~box.astype(bool))
    editor.Undo()
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, other, vol), liver)
    node.SetOverwriteMode(node.OverwriteNone)
    _apply(editor, box, vol, mode="set")
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, other, vol), liver)
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, target, vol), box)


def test_editor_refuses_hidden_segment_and_writes_completed_one(sample):
    ctx, vol, labels = sample
    seg, target, other, editor = editor_setup(ctx, vol, labels)
    seg.GetDisplayNode().SetSegmentVisibility(target, False)
    with pytest.raises(InputError, match="hidden"):
        _apply(editor, labels == 1, vol)
    assert labelmaps.segment_to_array(seg, target, vol).sum() == 0
    _apply(editor, labels == 1, vol, allow_hidden=True)
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, target, vol), labels == 1)
    seg.GetDisplayNode().SetSegmentVisibility(target, True)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    logic.SetSegmentStatus(seg.GetSegmentation().GetSegment(target), logic.Completed)
    _apply(editor, labels == 2, vol)      # Completed is a review status: the Segment Editor edits it too
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, target, vol), labels == 2)


def test_modifier_matches_editor_geometry_when_segmentation_grid_differs(sample):
    """Segmentation drawn on a coarser grid: the modifier is resampled onto the editor's grid, as intensity
    masking requires, and the result equals the mask resampled onto that grid."""
    ctx, vol, labels = sample
    ct = geometry.volume_to_array(vol)
    coarse_m = ct.ijk_to_world.copy()
    coarse_m[:3, :3] *= 2.0
    coarse_m[:3, 3] += ct.ijk_to_world[:3, :3] @ np.array([0.25, 0.25, 0.25])  # no nearest-neighbour ties
    coarse = ctx.add_volume_from_array(np.zeros((15, 51, 61), np.int16), coarse_m, "coarse")
    seg = ctx.add_segmentation("coarse seg", coarse)
    sid = labelmaps.write_mask(seg, np.zeros((15, 51, 61), np.uint8), coarse, name="t")
    editor = ctx.segment_editor(seg, vol, sid)
    mask = (labels == 5).astype(np.uint8)
    modifier = labelmaps.modifier_labelmap(mask, vol, seg, editor.GetModifierLabelmap())
    assert slicer.vtkOrientedImageDataResample.DoGeometriesMatch(modifier, editor.GetModifierLabelmap())
    _apply(editor, mask, vol)
    on_coarse = labelmaps.segment_to_array(seg, sid, coarse)
    np.testing.assert_array_equal(on_coarse, mask[::2, ::2, ::2][:15, :51, :61])


# ---------------------------------------------------------------- a segmentation on another grid (issue 24) --
def test_writing_into_a_segmentation_on_a_coarser_grid_keeps_its_other_segments(sample):
    """The result is resampled onto the segmentation's own grid (as the Segment Editor does) with one warning that
    names both voxel sizes; the segmentation's other segments are not touched (written on the volume's grid as
    it is, Slicer would resample the whole shared labelmap and change them)."""
    ctx, vol, labels = sample
    ct = geometry.volume_to_array(vol)
    coarse_m = ct.ijk_to_world @ np.diag([2.0, 2.0, 2.0, 1.0])        # coarse voxel c sits on fine voxel 2c
    coarse_vol = ctx.add_volume_from_array(np.zeros((15, 51, 61), np.int16), coarse_m, "coarse")
    seg = ctx.add_segmentation("coarse seg", coarse_vol)
    block = np.zeros(labels.shape, np.uint8)
    block[10:20, 30:60, 40:80] = 1
    other = block[::2, ::2, ::2]
    sid0 = labelmaps.write_mask(seg, other, coarse_vol, name="block")
    kidney = np.zeros(labels.shape, np.uint8)                 # odd-sized blocks on the volume's grid
    kidney[11:14, 41:47, 51:58] = kidney[25:29, 90:99, 100:118] = 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sid = labelmaps.write_mask(seg, kidney, vol, name="kidney")
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid0, coarse_vol), other)   # untouched
    assert [str(w.message) for w in caught if issubclass(w.category, MedSegWarning)] == [
        "Segmentation 'coarse seg' has its own grid (6 x 6 x 6 mm voxels), coarser than volume 'ct' (3 x 3 x 3 mm): "
        "the result was resampled onto it, as the Segment Editor does, and lost detail; to keep the volume's "
        "detail, set the segmentation's geometry from the volume first (Segment Editor: Specify geometry)."]
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid0, coarse_vol), other)
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, coarse_vol), kidney[::2, ::2, ::2])


def test_writing_into_a_segmentation_on_a_finer_grid_is_exact(sample):
    ctx, vol, labels = sample
    ct = geometry.volume_to_array(vol)
    fine_m = ct.ijk_to_world @ np.diag([0.5, 0.5, 0.5, 1.0])
    fine_vol = ctx.add_volume_from_array(np.zeros((59, 201, 243), np.int16), fine_m, "fine")
    seg = ctx.add_segmentation("fine seg", fine_vol)
    sid0 = labelmaps.write_mask(seg, np.zeros((59, 201, 243), np.uint8) + 0, fine_vol, name="empty")
    spleen = (labels == 1).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sid = labelmaps.write_mask(seg, spleen, vol, name="spleen")
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, vol), spleen)
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(seg, sid, vol), spleen)
    assert not labelmaps.segment_to_array(seg, sid0, vol).any()


def test_volume_under_a_linear_transform_result_lands_where_it_is_shown(sample):
    """The volume under a rotation + shift, the segmentation not: the mask is written where the volume is displayed
    (Slicer's own export onto the transformed volume gives it back voxel for voxel)."""
    ctx, vol, labels = sample
    t = ctx.add_linear_transform(np.array([[0.8, -0.6, 0, 12.0], [0.6, 0.8, 0, -7.0], [0, 0, 1, 4.5],
                                           [0, 0, 0, 1.0]]))
    vol.SetAndObserveTransformNodeID(t.GetID())
    seg = ctx.add_segmentation("seg")
    liver = (labels == 5).astype(np.uint8)
    sid = labelmaps.write_mask(seg, liver, vol, name="liver")
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, vol), liver)
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(seg, sid, vol), liver)
