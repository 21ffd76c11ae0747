"""Apply a result to the selected segment through the Segment Editor's own modify-segment path.

This is the effects' **Apply**, Qt-free, so that the effect, the headless tests and the module's self-test run the
same function (:func:`apply_result`):

1. checks first (segment exists and is writable, mask on the volume's grid, non-empty result, slab inside the
   volume) - a call that fails changes nothing;
2. the mask becomes a modifier labelmap on the editor's grid (which intensity masking requires);
3. an undo state is saved;
4. the editor's modify call writes it with the editor's masking (editable area, editable intensity range) and
   overwrite settings. With a ``slab`` (the slices the run covered) only the slab is modified, so a re-run on a
   sub-range or a corrected slice never touches the segment outside it - in any mode. (The editor's own Set mode
   replaces the whole segment whatever extent it is given, so *set within a slab* is Remove(slab) then
   Add(result), under one undo state.)

Two targets speak to the editor:

* :class:`ScriptedEffectTarget` - the running effect (``scriptedEffect.saveStateForUndo`` /
  ``defaultModifierLabelmap`` / ``modifySelectedSegmentByLabelmap(modifier, mode, extent)``), Slicer 5.6 to 5.12;
* :class:`EditorLogicTarget` - a ``vtkSlicerSegmentEditorLogic`` (Slicer >= 5.10 and the headless slicer-core),
  the C++ logic behind the same effect call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from medseg_backend import slicing

from . import geometry, labelmaps, segments
from .errors import InputError

MODES = ("set", "add", "remove")
_MODE_NAMES = {"set": "ModificationModeSet", "add": "ModificationModeAdd", "remove": "ModificationModeRemove"}


def _slicer():
    import slicer

    return slicer


@dataclass
class ApplyReport:
    segment_id: str
    mode: str
    extent: Optional[Tuple[int, ...]]     # modification extent on the editor's grid (None: whole grid)
    voxels_before: int
    voxels_after: int


class EditorLogicTarget:
    """A ``vtkSlicerSegmentEditorLogic`` already pointed at segmentation, source volume and segment (see
    ``SceneContext.segment_editor``)."""

    def __init__(self, editor_logic) -> None:
        self.logic = editor_logic

    def can_undo(self) -> bool:
        return bool(self.logic.CanUndo())

    def undo(self) -> None:
        self.logic.Undo()

    @property
    def segmentation_node(self):
        return self.logic.GetSegmentationNode()

    @property
    def segment_id(self) -> str:
        return self.logic.GetCurrentSegmentID() or ""

    def reference_labelmap(self):
        self.logic.ResetModifierLabelmapToDefault()
        return self.logic.GetModifierLabelmap()

    def save_state_for_undo(self) -> None:
        self.logic.SaveStateForUndo()

    def modify(self, modifier, mode: str, extent: Optional[Sequence[int]]) -> None:
        cls = _slicer().vtkSlicerSegmentEditorLogic
        mode_value = getattr(cls, _MODE_NAMES[mode])
        if extent is None:
            self.logic.ModifySegmentByLabelmap(self.segmentation_node, self.segment_id, modifier, mode_value,
                                               True, False)
        else:
            self.logic.ModifySegmentByLabelmap(self.segmentation_node, self.segment_id, modifier, mode_value,
                                               [int(v) for v in extent], True, False)


class ScriptedEffectTarget:
    """The running Segment Editor effect (``self.scriptedEffect`` of an effect, or ``widget.activeEffect()``)."""

    def __init__(self, scripted_effect, *, undo=None, can_undo=None) -> None:
        self.effect = scripted_effect
        self._undo, self._can_undo = undo, can_undo

    def can_undo(self) -> bool:
        return bool(self._can_undo()) if self._can_undo else False

    def undo(self) -> None:
        if self._undo is None:
            raise InputError("Undo is done in the Segment Editor (Ctrl+Z).")
        self._undo()

    @property
    def segmentation_node(self):
        params = self.effect.parameterSetNode()
        return params.GetSegmentationNode() if params is not None else None

    @property
    def segment_id(self) -> str:
        params = self.effect.parameterSetNode()
        return (params.GetSelectedSegmentID() if params is not None else "") or ""

    def reference_labelmap(self):
        return self.effect.defaultModifierLabelmap()

    def save_state_for_undo(self) -> None:
        self.effect.saveStateForUndo()

    def modify(self, modifier, mode: str, extent: Optional[Sequence[int]]) -> None:
        cls = _slicer().qSlicerSegmentEditorAbstractEffect
        mode_value = getattr(cls, _MODE_NAMES[mode])
        if extent is None:
            self.effect.modifySelectedSegmentByLabelmap(modifier, mode_value)
        else:  # the QList<int> overload (all releases 5.6 - 5.12)
            self.effect.modifySelectedSegmentByLabelmap(modifier, mode_value, [int(v) for v in extent])


def apply_result(target, mask: np.ndarray, volume_node, *, mode: str = "set",
                 slab: Optional[Sequence[int]] = None, allow_hidden: bool = False,
                 allow_empty: bool = False, save_undo: bool = True) -> ApplyReport:
    """Write ``mask`` (K, J, I on ``volume_node``'s grid) into the target's selected segment; undoable.

    ``slab``: the voxel box the run covered (``None``: the whole volume); the segment outside it is never
    modified. ``mode``: set (replace within the slab), add, remove. An empty result in ``set`` mode is refused
    (it would only erase the segment) unless ``allow_empty``. ``save_undo=False``: no undo state of its own (the
    caller saved one before a group of writes that one Undo restores). Raises :class:`InputError` before any change.
    """
    if mode not in MODES:
        raise InputError(f"Unknown modification mode '{mode}': use set, add or remove.")
    segmentation_node = target.segmentation_node
    segment_id = target.segment_id
    segments.check_segmentation(segmentation_node)
    if not segment_id:
        raise InputError("No segment selected: select the segment to write into in the segment list.")
    segments.check_segment_writable(segmentation_node, segment_id, allow_hidden=allow_hidden)
    binary = labelmaps.check_mask(mask, volume_node)
    shape = geometry.volume_shape(volume_node)
    if slab is not None:
        slab = geometry.clip_box(slab, shape, what="slab to write")
        x0, y0, z0, x1, y1, z1 = slab
        inside = np.zeros(shape, dtype=bool)
        inside[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1] = True
        if binary[~inside].any():
            raise InputError("The result has voxels outside the slab it was computed for: run again.")
        empty = not binary[inside].any()
    else:
        empty = not binary.any()
    if empty and mode == "set" and not allow_empty:
        raise InputError("The result is empty: nothing was written (applying it would only erase the segment). "
                         "Check the box or the examples and run again.")
    before = int(labelmaps.segment_to_array(segmentation_node, segment_id, volume_node).sum())
    reference = target.reference_labelmap()
    modifier = labelmaps.modifier_labelmap(binary, volume_node, segmentation_node, reference)
    extent = None
    if slab is not None:
        extent = modifier_extent(slab, volume_node, segmentation_node, modifier)
    if save_undo:
        target.save_state_for_undo()
    if mode == "set" and slab is not None:
        # The editor's Set replaces the whole segment (on a shared labelmap layer it clears it first), whatever
        # the extent: so "set within the slab" is done as Remove(slab) + Add(result), both through the editor,
        # both masked by its editable area / intensity range, under one undo state.
        x0, y0, z0, x1, y1, z1 = slab
        slab_mask = np.zeros(shape, dtype=np.uint8)
        slab_mask[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1] = 1
        eraser = labelmaps.modifier_labelmap(slab_mask, volume_node, segmentation_node, reference)
        target.modify(eraser, "remove", extent)
        target.modify(modifier, "add", extent)
    else:
        target.modify(modifier, mode, extent)
    after = int(labelmaps.segment_to_array(segmentation_node, segment_id, volume_node).sum())
    return ApplyReport(segment_id=segment_id, mode=mode, extent=extent, voxels_before=before, voxels_after=after)


def modifier_extent(slab: Sequence[int], volume_node, segmentation_node, modifier) -> Tuple[int, ...]:
    """Extent (i0, i1, j0, j1, k0, k1) on ``modifier``'s grid that covers the volume voxel box ``slab``.

    The slab's corner voxel centres go volume IJK -> segmentation frame -> modifier IJK and are rounded; the
    result is clipped to the modifier's extent. On a shared grid this is the slab itself."""
    x0, y0, z0, x1, y1, z1 = (int(v) for v in slab)
    corners = np.array([[i, j, k] for i in (x0, x1) for j in (y0, y1) for k in (z0, z1)], dtype=float)
    to_frame = geometry.volume_ijk_to_frame(volume_node, segmentation_node)
    m = geometry.numpy_to_matrix(np.eye(4))
    modifier.GetImageToWorldMatrix(m)
    frame_to_modifier = np.linalg.inv(geometry.matrix_to_numpy(m))
    ijk = geometry.apply(frame_to_modifier @ to_frame, corners)
    lo = np.floor(ijk.min(axis=0) + 0.5 - 1e-6).astype(int)
    hi = np.floor(ijk.max(axis=0) + 0.5 + 1e-6).astype(int)
    e = modifier.GetExtent()
    lo = np.maximum(lo, [e[0], e[2], e[4]])
    hi = np.minimum(hi, [e[1], e[3], e[5]])
    return (int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1]), int(lo[2]), int(hi[2]))


def run_slab(boxes: Sequence[Sequence[int]], axis: str, shape_kji: Sequence[int]) -> Tuple[int, ...]:
    """The slab a run covered: the slices of ``boxes`` along ``axis`` (union), the whole volume across."""
    ranges = [slicing.project_box(b, axis)[:2] for b in boxes]
    size = geometry.box_shape_xyz(shape_kji)
    whole = (0, 0, 0, size[0] - 1, size[1] - 1, size[2] - 1)
    return slicing.with_slices(whole, axis, min(r[0] for r in ranges), max(r[1] for r in ranges))


def configure_editor_logic(editor_logic, segment_editor_node, segmentation_node, volume_node, segment_id: str):
    """Point a ``vtkSlicerSegmentEditorLogic`` at a segmentation, source volume and selected segment."""
    segment_editor_node.SetAndObserveSegmentationNode(segmentation_node)
    editor_logic.SetSegmentEditorNode(segment_editor_node)
    editor_logic.SetSourceVolumeNode(volume_node)
    editor_logic.SetCurrentSegmentID(segment_id)
    editor_logic.ResetModifierLabelmapToDefault()
    return editor_logic
