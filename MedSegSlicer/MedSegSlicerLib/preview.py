"""The preview of a run: an MRML segmentation node referenced from the effect's parameter node.

As Slicer's own auto-complete effects keep their preview, the result waiting for Apply lives in the scene, not in
a Python attribute: a hidden segmentation node (not saved with the scene, not offered in node selectors),
referenced from the Segment Editor's parameter node under :data:`REFERENCE_ROLE`, holding the mask as its one
segment and, as node attributes, what Apply needs (the target segmentation, segment and volume, the slab the run
covered, the run's messages). Closing the scene removes it with the reference; saving skips it; an Undo in the
editor restores segments and leaves the preview alone; leaving the Segment Editor keeps it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import geometry, labelmaps, segments

#: The preview's own look, so that it never looks like the segment it may replace: an outline (no fill) in the
#: slice views, in yellow - or cyan when the target segment itself is yellowish - thicker than a segment's outline,
#: and not shown in 3-D.
PREVIEW_COLOR = (1.0, 1.0, 0.0)
PREVIEW_COLOR_ALT = (0.0, 1.0, 1.0)
PREVIEW_OUTLINE_THICKNESS = 3

REFERENCE_ROLE = "MedSegSlicer.Preview"
PREVIEW_ATTRIBUTE = "MedSegSlicer.Preview"
_PREFIX = "MedSegSlicer.Preview."


@dataclass
class Pending:
    """A preview waiting for Apply, read back from the scene."""
    node: object
    volume_id: str
    segmentation_id: str
    segment_id: str
    slab: Optional[Tuple[int, ...]]
    messages: List[str]

    def mask(self, volume_node) -> np.ndarray:
        """The previewed mask on ``volume_node``'s grid."""
        seg = self.node.GetSegmentation()
        if seg.GetNumberOfSegments() == 0:
            return np.zeros(geometry.volume_shape(volume_node), np.uint8)
        return labelmaps.segment_to_array(self.node, seg.GetNthSegmentID(0), volume_node)


def preview_color(target_color: Sequence[float]) -> Tuple[float, float, float]:
    """:data:`PREVIEW_COLOR`, or :data:`PREVIEW_COLOR_ALT` when the target segment's colour is close to it."""
    distance = float(np.linalg.norm(np.asarray(target_color, dtype=float)[:3] - np.asarray(PREVIEW_COLOR)))
    return PREVIEW_COLOR_ALT if distance < 0.5 else PREVIEW_COLOR


def is_preview(node) -> bool:
    return node is not None and bool(node.GetAttribute(PREVIEW_ATTRIBUTE))


def _role(owner: str) -> str:
    return f"{REFERENCE_ROLE}.{owner}" if owner else REFERENCE_ROLE


def show(scene, editor_node, segmentation_node, segment_id: str, mask: np.ndarray, volume_node, *,
         slab: Optional[Sequence[int]] = None, messages: Sequence[str] = (), name: Optional[str] = None,
         owner: str = ""):
    """Show ``mask`` as the preview for ``segment_id`` of ``segmentation_node`` (replacing an older preview of
    this editor and ``owner`` - the effect's name, so two effects keep separate previews), as an outline in the
    preview colour (:func:`preview_color`); nothing of the user's segmentation changes. Returns the preview
    node."""
    segments.check_segmentation(segmentation_node)
    target = segments.get_segment(segmentation_node, segment_id)
    geometry.check_scalar_volume(volume_node)
    binary = labelmaps.check_mask(mask, volume_node)
    geometry.volume_ijk_to_frame(volume_node, segmentation_node)    # transform checks before any change
    node = editor_node.GetNodeReference(_role(owner))
    if node is None or not scene.IsNodePresent(node):
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{segmentation_node.GetName()} preview")
        node.SetAttribute(PREVIEW_ATTRIBUTE, "1")
        node.SetHideFromEditors(True)
        node.SetSaveWithScene(False)
        node.CreateDefaultDisplayNodes()
        if node.GetDisplayNode() is not None:
            node.GetDisplayNode().SetSaveWithScene(False)
        editor_node.SetNodeReferenceID(_role(owner), node.GetID())
    node.SetName(f"{segmentation_node.GetName()} preview")
    node.SetAndObserveTransformNodeID(segmentation_node.GetTransformNodeID())
    node.GetSegmentation().RemoveAllSegments()
    labelmaps.ensure_reference_geometry(node, volume_node)
    sid = labelmaps.write_mask(node, binary, volume_node, name=f"{name or target.GetName()} (preview)",
                              color=preview_color(target.GetColor()))
    attributes = {
        "SegmentationID": segmentation_node.GetID(), "SegmentID": segment_id, "VolumeID": volume_node.GetID(),
        "Slab": " ".join(str(int(v)) for v in slab) if slab is not None else "",
        "Messages": "\n".join(str(m) for m in messages),
    }
    for key, value in attributes.items():
        node.SetAttribute(_PREFIX + key, value)
    display = node.GetDisplayNode()
    if display is not None:
        display.SetVisibility2DFill(False)
        display.SetVisibility2DOutline(True)
        display.SetOpacity2DOutline(1.0)
        display.SetSliceIntersectionThickness(PREVIEW_OUTLINE_THICKNESS)
        display.SetVisibility3D(False)
        display.SetSegmentVisibility(sid, True)
    return node


def current(scene, editor_node, owner: str = "") -> Optional[Pending]:
    """The preview of this editor and owner, or None (also when its target segmentation, segment or volume is
    gone)."""
    if editor_node is None:
        return None
    node = editor_node.GetNodeReference(_role(owner))
    if node is None or not scene.IsNodePresent(node) or not is_preview(node):
        return None

    def attr(key):
        return node.GetAttribute(_PREFIX + key) or ""

    slab_text = attr("Slab").split()
    pending = Pending(node=node, volume_id=attr("VolumeID"), segmentation_id=attr("SegmentationID"),
                      segment_id=attr("SegmentID"),
                      slab=tuple(int(v) for v in slab_text) if len(slab_text) == 6 else None,
                      messages=[m for m in attr("Messages").split("\n") if m])
    seg = scene.GetNodeByID(pending.segmentation_id)
    if scene.GetNodeByID(pending.volume_id) is None or seg is None or \
            seg.GetSegmentation().GetSegment(pending.segment_id) is None:
        return None
    return pending


def drop(scene, editor_node, owner: str = "") -> bool:
    """Remove this editor's (and owner's) preview (Cancel, after Apply). False when there was none."""
    if editor_node is None:
        return False
    node = editor_node.GetNodeReference(_role(owner))
    editor_node.SetNodeReferenceID(_role(owner), None)
    if node is None or not scene.IsNodePresent(node):
        return False
    display = node.GetDisplayNode()
    scene.RemoveNode(node)
    if display is not None and scene.IsNodePresent(display):
        scene.RemoveNode(display)
    return True
