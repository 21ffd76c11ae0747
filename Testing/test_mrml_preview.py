"""The preview lives in the scene (MedSegSlicerLib.preview): a hidden segmentation node referenced from the Segment
Editor's parameter node, one per effect, carrying what Apply needs; the user's segment is never touched."""
from __future__ import annotations


import numpy as np
import pytest

from MedSegSlicerLib import labelmaps, preview
from MedSegSlicerLib.errors import InputError


@pytest.fixture
def sample(ct_sample):
    slicer_scene, vol, labels = ct_sample
    seg = slicer_scene.add_segmentation("seg", vol)
    sid = labelmaps.write_mask(seg, labels == 5, vol, name="liver", color=(0.2, 0.3, 0.4))
    editor_node = slicer_scene.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", "editor")
    return slicer_scene, vol, labels, seg, sid, editor_node


def _n_seg_nodes(ctx):
    return ctx.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")


def test_preview_node_carries_what_apply_needs_and_leaves_the_segment(sample):
    ctx, vol, labels, seg, sid, editor_node = sample
    before = labelmaps.segment_to_array(seg, sid, vol)
    n = _n_seg_nodes(ctx)
    mask = (labels == 1).astype(np.uint8)
    node = preview.show(ctx.scene, editor_node, seg, sid, mask, vol, slab=(0, 0, 3, 121, 100, 20),
                        messages=["clipped", "ok"], owner="MedSAM box")
    assert node.GetHideFromEditors() and not node.GetSaveWithScene() and preview.is_preview(node)
    assert editor_node.GetNodeReference("MedSegSlicer.Preview.MedSAM box") is node
    np.testing.assert_allclose(node.GetSegmentation().GetNthSegment(0).GetColor(), preview.PREVIEW_COLOR)
    pending = preview.current(ctx.scene, editor_node, owner="MedSAM box")
    assert (pending.volume_id, pending.segmentation_id, pending.segment_id) == (vol.GetID(), seg.GetID(), sid)
    assert pending.slab == (0, 0, 3, 121, 100, 20) and pending.messages == ["clipped", "ok"]
    np.testing.assert_array_equal(pending.mask(vol), mask)
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, vol), before)
    # a second preview of the same effect replaces the first; another effect keeps its own
    preview.show(ctx.scene, editor_node, seg, sid, labels == 2, vol, owner="MedSAM box")
    assert _n_seg_nodes(ctx) == n + 1
    assert preview.current(ctx.scene, editor_node, owner="MedSAM box").slab is None
    preview.show(ctx.scene, editor_node, seg, sid, labels == 3, vol, owner="UniverSeg examples")
    assert _n_seg_nodes(ctx) == n + 2
    np.testing.assert_array_equal(preview.current(ctx.scene, editor_node, owner="MedSAM box").mask(vol), labels == 2)
    np.testing.assert_array_equal(preview.current(ctx.scene, editor_node, owner="UniverSeg examples").mask(vol),
                                  labels == 3)
    # drop removes the node and its display node
    nodes = ctx.scene.GetNumberOfNodes()
    assert preview.drop(ctx.scene, editor_node, owner="MedSAM box")
    assert ctx.scene.GetNumberOfNodes() == nodes - 2
    assert preview.current(ctx.scene, editor_node, owner="MedSAM box") is None
    assert not preview.drop(ctx.scene, editor_node, owner="MedSAM box")
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, vol), before)


def test_the_preview_has_its_own_look(sample):
    """Issue 22 item 6: a re-run over an existing segment must be visible: the preview is a yellow outline (cyan
    when the segment itself is yellowish), no fill, no 3-D, whatever the segment looks like."""
    ctx, vol, labels, seg, sid, editor_node = sample
    target = seg.GetSegmentation().GetSegment(sid)
    seg_display = seg.GetDisplayNode()
    node = preview.show(ctx.scene, editor_node, seg, sid, labels == 1, vol, owner="MedSAM box")
    shown = node.GetSegmentation().GetNthSegment(0)
    assert tuple(shown.GetColor()) != tuple(target.GetColor())
    np.testing.assert_allclose(shown.GetColor(), (1.0, 1.0, 0.0))
    assert shown.GetName() == f"{target.GetName()} (preview)"
    display = node.GetDisplayNode()
    assert not display.GetVisibility2DFill() and display.GetVisibility2DOutline()
    assert display.GetOpacity2DOutline() == 1.0 and not display.GetVisibility3D()
    assert display.GetSliceIntersectionThickness() > seg_display.GetSliceIntersectionThickness()
    assert seg_display.GetVisibility2DFill()                       # the user's segmentation is left as it was
    target.SetColor(0.95, 0.9, 0.1)
    node = preview.show(ctx.scene, editor_node, seg, sid, labels == 1, vol, owner="MedSAM box")
    np.testing.assert_allclose(node.GetSegmentation().GetNthSegment(0).GetColor(), preview.PREVIEW_COLOR_ALT)


def test_preview_of_a_deleted_target_is_not_offered(sample):
    ctx, vol, labels, seg, sid, editor_node = sample
    preview.show(ctx.scene, editor_node, seg, sid, labels == 1, vol)
    assert preview.current(ctx.scene, editor_node) is not None
    seg.GetSegmentation().RemoveSegment(sid)
    assert preview.current(ctx.scene, editor_node) is None


def test_bad_input_adds_no_preview(sample):
    ctx, vol, labels, seg, sid, editor_node = sample
    n = ctx.scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="shape"):
        preview.show(ctx.scene, editor_node, seg, sid, labels[:-1] == 1, vol)
    with pytest.raises(InputError, match="not in segmentation"):
        preview.show(ctx.scene, editor_node, seg, "nope", labels == 1, vol)
    assert ctx.scene.GetNumberOfNodes() == n


def test_saved_scene_does_not_contain_the_preview(sample, tmp_path):
    ctx, vol, labels, seg, sid, editor_node = sample
    node = preview.show(ctx.scene, editor_node, seg, sid, labels == 1, vol)
    url = tmp_path / "scene.mrml"
    ctx.scene.SetURL(str(url))
    ctx.scene.Commit()
    text = url.read_text(encoding="utf-8")
    saved_ids = {line.split('id="')[1].split('"')[0] for line in text.splitlines() if ' id="' in line}
    assert seg.GetID() in saved_ids
    assert node.GetID() not in saved_ids and node.GetDisplayNode().GetID() not in saved_ids   # no orphan
    # the saved editor node may name the preview's ID: a scene without that node offers no preview
    ctx.scene.RemoveNode(node)
    assert preview.current(ctx.scene, editor_node) is None
