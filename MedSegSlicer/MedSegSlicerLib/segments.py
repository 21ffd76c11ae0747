"""Segments of a segmentation node: lookup, IDs, adding, visibility and the checks made before any write.

Editable segments follow the Segment Editor's own rule: every segment can be written (its status - Not started,
In progress, Completed, Flagged - is a label for review, not a lock); a hidden segment is written only after the
user confirmed (the editor's ``confirmCurrentSegmentVisible``), so the checks refuse hidden targets unless
``allow_hidden``.

The voxels of segments (reading them onto a volume's grid, writing masks) live in :mod:`.labelmaps`.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

from medseg_backend.segnrrd import check_name

from .errors import InputError


# A colour-blind-friendly palette for new segments (RGB 0..1) when no colour is given.
PALETTE = [(0.90, 0.62, 0.0), (0.34, 0.71, 0.91), (0.0, 0.62, 0.45), (0.94, 0.89, 0.26), (0.0, 0.45, 0.70),
           (0.84, 0.37, 0.0), (0.80, 0.47, 0.65)]


# ----------------------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------------------
def check_segmentation(segmentation_node) -> None:
    if segmentation_node is None:
        raise InputError("No segmentation selected: choose or create a segmentation in the Segment Editor "
                         "(or pass a segmentation node) and run again.")
    if not segmentation_node.IsA("vtkMRMLSegmentationNode"):
        raise InputError(f"'{segmentation_node.GetName()}' is not a segmentation node: pick a segmentation.")


def get_segment(segmentation_node, segment_id: str):
    check_segmentation(segmentation_node)
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id) if segment_id else None
    if segment is None:
        raise InputError(f"Segment '{segment_id}' is not in segmentation '{segmentation_node.GetName()}': "
                         "select an existing segment or add one.")
    return segment


def is_segment_visible(segmentation_node, segment_id: str) -> bool:
    display = segmentation_node.GetDisplayNode()
    if display is None:
        return True
    return bool(display.GetVisibility()) and bool(display.GetSegmentVisibility(segment_id))


def check_segment_writable(segmentation_node, segment_id: str, *, allow_hidden: bool = False) -> None:
    """The segment exists; refuse a hidden one unless ``allow_hidden`` (the effects ask the user first)."""
    segment = get_segment(segmentation_node, segment_id)
    if not allow_hidden and not is_segment_visible(segmentation_node, segment_id):
        raise InputError(f"Segment '{segment.GetName()}' is hidden: show it (eye icon in the Segments table) so "
                         "that you can see what is written, or choose another segment.")


def check_write_targets(segmentation_node, segment_ids: Sequence[Optional[str]], *,
                        allow_hidden: bool = True) -> None:
    """Every existing target segment (IDs that are not None) is in the segmentation and writable; raises before
    anything is written."""
    if segmentation_node is None:
        return
    check_segmentation(segmentation_node)
    for sid in segment_ids:
        if sid is not None:
            check_segment_writable(segmentation_node, sid, allow_hidden=allow_hidden)


# ----------------------------------------------------------------------------------------------------------
# Lookup and adding
# ----------------------------------------------------------------------------------------------------------
def segment_ids(segmentation_node, *, visible_only: bool = False) -> List[str]:
    check_segmentation(segmentation_node)
    seg = segmentation_node.GetSegmentation()
    ids = [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]
    if visible_only:
        ids = [s for s in ids if is_segment_visible(segmentation_node, s)]
    return ids


def segment_id_by_name(segmentation_node, name: str) -> Optional[str]:
    check_segmentation(segmentation_node)
    sid = segmentation_node.GetSegmentation().GetSegmentIdBySegmentName(name)
    return sid or None


def add_segment(segmentation_node, name: str, color: Optional[Sequence[float]] = None) -> str:
    """Add an empty segment called ``name`` (colour from :data:`PALETTE` unless given); returns its ID. A name with
    a control character (newline, tab ...) is refused (:func:`medseg_backend.segnrrd.check_name`)."""
    check_segmentation(segmentation_node)
    check_name(name or "Segment")
    seg = segmentation_node.GetSegmentation()
    if color is None:
        color = PALETTE[seg.GetNumberOfSegments() % len(PALETTE)]
    return seg.AddEmptySegment("", name or "Segment", list(float(c) for c in color[:3]))
