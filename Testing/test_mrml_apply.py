"""The effects' Apply (``MedSegSlicerLib.editing.apply_result``) against slicer-core's real Segment Editor logic:
undo state, the slab limit (a sub-range re-run or a corrected slice never touches the rest of the segment, in
set / add / remove), refusals that change nothing, and a segmentation on another grid."""
from __future__ import annotations

import numpy as np
import pytest

import slicer
from medseg_backend import slicing
from MedSegSlicerLib import editing, geometry, labelmaps
from MedSegSlicerLib.errors import InputError


@pytest.fixture
def sample(ct_sample):
    return ct_sample


def _setup(ctx, vol, labels, value=5):
    seg = ctx.add_segmentation("seg", vol)
    sid = labelmaps.write_mask(seg, labels == value, vol, name="liver")
    other = labelmaps.write_mask(seg, labels == 1, vol, name="spleen")
    target = editing.EditorLogicTarget(ctx.segment_editor(seg, vol, sid))
    return seg, sid, other, target


def _read(seg, sid, vol):
    return labelmaps.segment_to_array(seg, sid, vol)


@pytest.mark.parametrize("mode", ["set", "add", "remove"])
def test_slab_limits_the_write_in_every_mode(sample, mode):
    ctx, vol, labels = sample
    seg, sid, _, target = _setup(ctx, vol, labels)
    before = _read(seg, sid, vol)
    k0, k1 = 12, 14
    slab = editing.run_slab([(0, 0, k0, 10, 10, k1)], "axial", before.shape)
    assert slab == (0, 0, k0, before.shape[2] - 1, before.shape[1] - 1, k1)
    result = np.zeros_like(before)
    result[k0:k1 + 1, 40:60, 50:80] = 1          # a "re-run" on slices 12..14 only
    report = editing.apply_result(target, result, vol, mode=mode, slab=slab)
    after = _read(seg, sid, vol)
    outside = np.ones(before.shape, bool)
    outside[k0:k1 + 1] = False
    np.testing.assert_array_equal(after[outside], before[outside])   # voxel-identical outside the slab
    inside = slice(k0, k1 + 1)
    expected = {"set": result[inside], "add": before[inside] | result[inside],
                "remove": before[inside] & (1 - result[inside])}[mode]
    np.testing.assert_array_equal(after[inside], expected)
    assert report.extent == (0, before.shape[2] - 1, 0, before.shape[1] - 1, k0, k1)
    assert report.voxels_after == int(after.sum())
    # undo restores the whole segment
    target.logic.Undo()
    np.testing.assert_array_equal(_read(seg, sid, vol), before)


def test_without_slab_set_replaces_the_whole_segment(sample):
    ctx, vol, labels = sample
    seg, sid, other, target = _setup(ctx, vol, labels)
    result = (labels == 2).astype(np.uint8)
    editing.apply_result(target, result, vol, mode="set")
    np.testing.assert_array_equal(_read(seg, sid, vol), result)
    np.testing.assert_array_equal(_read(seg, other, vol), labels == 1)
    assert target.logic.CanUndo()


def test_one_corrected_slice_changes_only_that_slice(sample):
    ctx, vol, labels = sample
    seg, sid, _, target = _setup(ctx, vol, labels)
    before = _read(seg, sid, vol)
    k = int(np.nonzero(before.any(axis=(1, 2)))[0][5])
    fixed = np.zeros_like(before)
    fixed[k] = before[k]
    fixed[k, :, : fixed.shape[2] // 2] = 0         # "erase the leak" on slice k
    editing.apply_result(target, fixed, vol, mode="set", slab=editing.run_slab([(0, 0, k, 0, 0, k)], "axial",
                                                                                 before.shape))
    after = _read(seg, sid, vol)
    changed = np.nonzero((after != before).any(axis=(1, 2)))[0].tolist()
    assert changed == [k]
    np.testing.assert_array_equal(after[k], fixed[k])


@pytest.mark.parametrize("axis", ["coronal", "sagittal"])
def test_slab_along_other_axes(sample, axis):
    ctx, vol, labels = sample
    seg, sid, _, target = _setup(ctx, vol, labels)
    before = _read(seg, sid, vol)
    a = slicing.BOX_INDEX[slicing.axis_index(axis)]
    box = [0, 0, 0, 0, 0, 0]
    box[a], box[a + 3] = 40, 45
    slab = editing.run_slab([box], axis, before.shape)
    result = np.zeros_like(before)
    sl = [slice(None)] * 3
    sl[2 - a] = slice(40, 46)
    result[tuple(sl)] = 1
    editing.apply_result(target, result, vol, mode="set", slab=slab)
    after = _read(seg, sid, vol)
    keep = np.ones(before.shape, bool)
    keep[tuple(sl)] = False
    np.testing.assert_array_equal(after[keep], before[keep])
    np.testing.assert_array_equal(after[tuple(sl)], 1)


@pytest.mark.parametrize("case, match", [
    ("empty", "result is empty"),
    ("outside_slab", "outside the slab"),
    ("wrong_shape", "shape"),
    ("bad_mode", "Unknown modification mode"),
    ("hidden", "hidden"),
    ("no_segment", "not in segmentation"),
])
def test_refusals_change_nothing(sample, case, match):
    ctx, vol, labels = sample
    seg, sid, other, target = _setup(ctx, vol, labels)
    before = _read(seg, sid, vol)
    mask = (labels == 2).astype(np.uint8)
    kwargs = dict(mode="set")
    if case == "empty":
        mask = np.zeros_like(mask)
    elif case == "outside_slab":
        kwargs["slab"] = (0, 0, 0, mask.shape[2] - 1, mask.shape[1] - 1, 1)
    elif case == "wrong_shape":
        mask = mask[:-1]
    elif case == "bad_mode":
        kwargs["mode"] = "replace-all"
    elif case == "hidden":
        seg.GetDisplayNode().SetSegmentVisibility(sid, False)
    elif case == "no_segment":
        target.logic.SetCurrentSegmentID("no-such-segment")
    with pytest.raises(InputError, match=match):
        editing.apply_result(target, mask, vol, **kwargs)
    np.testing.assert_array_equal(_read(seg, sid, vol), before)
    np.testing.assert_array_equal(_read(seg, other, vol), labels == 1)
    assert not target.logic.CanUndo()   # not even an undo state was saved


def test_empty_result_in_add_mode_is_a_no_op_and_allowed(sample):
    ctx, vol, labels = sample
    seg, sid, _, target = _setup(ctx, vol, labels)
    before = _read(seg, sid, vol)
    editing.apply_result(target, np.zeros_like(before), vol, mode="add")
    np.testing.assert_array_equal(_read(seg, sid, vol), before)


def test_slab_on_a_segmentation_with_another_grid(sample):
    """Segmentation on a 2x coarser grid: the slab maps to the coarse slices that hold the fine slab's voxel
    centres; coarse slices outside stay as they were."""
    ctx, vol, labels = sample
    ct = geometry.volume_to_array(vol)
    coarse_m = ct.ijk_to_world.copy()
    coarse_m[:3, :3] *= 2.0
    coarse_m[:3, 3] += ct.ijk_to_world[:3, :3] @ np.array([0.25, 0.25, 0.25])
    coarse = ctx.add_volume_from_array(np.zeros((15, 51, 61), np.int16), coarse_m, "coarse")
    seg = ctx.add_segmentation("coarse seg", coarse)
    full = np.ones((15, 51, 61), np.uint8)
    sid = labelmaps.write_mask(seg, full, coarse, name="t")
    target = editing.EditorLogicTarget(ctx.segment_editor(seg, vol, sid))
    result = np.zeros(labels.shape, np.uint8)
    result[10:14, 20:40, 20:40] = 1
    slab = editing.run_slab([(0, 0, 10, 0, 0, 13)], "axial", labels.shape)
    report = editing.apply_result(target, result, vol, mode="set", slab=slab)
    assert report.extent[4:] == (5, 6)
    after = labelmaps.segment_to_array(seg, sid, coarse)
    np.testing.assert_array_equal(after[:5], 1)
    np.testing.assert_array_equal(after[7:], 1)
    np.testing.assert_array_equal(after[5:7], result[::2, ::2, ::2][5:7, :51, :61])


@pytest.mark.parametrize("masking", ["editable_area", "intensity_range"])
def test_set_within_slab_respects_the_editors_masking(sample, masking):
    """Inside the slab the result is written where the editor allows editing (the editor decides what happens to
    old voxels where it does not); outside the slab the segment is untouched."""
    ctx, vol, labels = sample
    seg, sid, other, target = _setup(ctx, vol, labels)
    node = ctx.segment_editor_node
    ct = geometry.volume_to_array(vol).array
    before = _read(seg, sid, vol).astype(bool)
    region = np.zeros(labels.shape, bool)
    region[:, 30:70, 40:90] = True
    if masking == "editable_area":
        area = labelmaps.write_mask(seg, region, vol, name="editable area")
        target = editing.EditorLogicTarget(ctx.segment_editor(seg, vol, sid))
        node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
        node.SetMaskSegmentID(area)
        node.SetOverwriteMode(node.OverwriteNone)      # keep the editable-area segment itself as it is
        editable = region
    else:
        node.SetSourceVolumeIntensityMask(True)
        node.SetSourceVolumeIntensityMaskRange(0.0, 200.0)
        editable = (ct >= 0) & (ct <= 200)
    k0, k1 = 10, 16
    result = np.zeros(labels.shape, np.uint8)
    result[k0:k1 + 1, 20:80, 30:100] = 1
    editing.apply_result(target, result, vol, mode="set",
                         slab=editing.run_slab([(0, 0, k0, 0, 0, k1)], "axial", labels.shape))
    after = _read(seg, sid, vol).astype(bool)
    s = slice(k0, k1 + 1)
    res = result.astype(bool)
    keep = np.ones(labels.shape, bool)
    keep[s] = False
    np.testing.assert_array_equal(after[keep], before[keep])             # outside the slab: untouched
    assert not (after[s] & ~before[s] & ~editable[s]).any()             # nothing added where editing is not allowed
    assert (after[s] >= (res[s] & editable[s])).all()                    # the result, where editing is allowed
    assert not (after[s] & ~before[s] & ~res[s]).any()                   # nothing from elsewhere
    assert (res[s] & ~editable[s]).sum() > 1000 and (res[s] & editable[s]).sum() > 1000  # the masking mattered
    node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedEverywhere)
    node.SetSourceVolumeIntensityMask(False)
    node.SetOverwriteMode(node.OverwriteAllSegments)


class _Recording:
    """Wraps a real target and records the order of the editor calls (the editor logic does the work)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.segmentation_node, self.segment_id = inner.segmentation_node, inner.segment_id

    def reference_labelmap(self):
        self.calls.append("reference")
        return self.inner.reference_labelmap()

    def save_state_for_undo(self):
        self.calls.append("undo-state")
        self.inner.save_state_for_undo()

    def modify(self, modifier, mode, extent):
        self.calls.append(f"modify:{mode}")
        self.inner.modify(modifier, mode, extent)


@pytest.mark.parametrize("slab", [None, (0, 0, 10, 121, 100, 12)])
def test_undo_state_is_saved_once_before_any_modification(sample, slab):
    ctx, vol, labels, = sample
    seg, sid, _, target = _setup(ctx, vol, labels)
    rec = _Recording(target)
    result = np.zeros(labels.shape, np.uint8)
    result[10:13, 30:60, 40:80] = 1
    editing.apply_result(rec, result, vol, mode="set", slab=slab)
    assert rec.calls[0] == "reference" and rec.calls[1] == "undo-state"
    assert rec.calls.count("undo-state") == 1 and all(c.startswith("modify") for c in rec.calls[2:])
    # one Undo restores the state before the whole Apply (Remove + Add count as one step)
    target.undo()
    np.testing.assert_array_equal(_read(seg, sid, vol), labels == 5)


def test_editor_logic_guard_for_slicer_before_5_10(sample, monkeypatch):
    """vtkSlicerSegmentEditorLogic exists from Slicer 5.10: without it the headless editor says so (the app's
    self-test then goes through the Segment Editor widget's active effect, ScriptedEffectTarget)."""
    from MedSegSlicerLib import scene as scene_mod

    ctx, vol, labels = sample
    seg = ctx.add_segmentation("seg", vol)
    sid = labelmaps.write_mask(seg, labels == 5, vol, name="liver")
    assert scene_mod.has_editor_logic()
    assert isinstance(ctx.editor_target(seg, vol, sid), editing.EditorLogicTarget)
    monkeypatch.delattr(slicer, "vtkSlicerSegmentEditorLogic")
    assert not scene_mod.has_editor_logic()
    with pytest.raises(InputError, match="appeared in Slicer 5.10"):
        ctx.editor_target(seg, vol, sid)
