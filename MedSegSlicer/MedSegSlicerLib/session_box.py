"""The editing session's box (:mod:`.session`): one ROI per segment, the saved, editable record of the box; Draw ROI
(two clicks with the markups widget, then the product's depth); Fit; and the MedSAM run a box makes
(:func:`medsam_runs`). A mixin of :class:`.session.EditingSession`: it uses the session's providers and state."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from medseg_backend.choices import DEFAULT_AXIS, DEFAULT_MODEL, DEFAULT_PROPAGATION

from . import editing, geometry, segments
from .errors import InputError, MedSegError


@dataclass
class MedSAMOptions:
    """The MedSAM box effect's choices (its panel, or a script)."""
    model: str = DEFAULT_MODEL
    intensity: Optional[str] = None
    propagation: str = DEFAULT_PROPAGATION
    axis: str = DEFAULT_AXIS
    slice_range: Optional[Tuple[int, int]] = None


def medsam_runs(segmenter: Callable[[], Any], options: Callable[[Any], MedSAMOptions]):
    """The MedSAM box effect's ``prepare(volume, segmentation, segment_id, roi, seed)``: a run of the segment's box
    (an ROI node or a voxel box; a list of them: one object each, :meth:`SegmentBox.run_all`) with the effect's options (``options(volume)``); ``seed``: ``axis`` slices as the
    view the box was drawn in, ``slice`` + ``direction`` re-propagate from the segment's slice there
    (:meth:`.segmenter.Segmenter.prepare_medsam`)."""

    def prepare(volume, segmentation, segment_id, roi, seed=None):
        o = options(volume)
        seed = seed or {}
        return segmenter().prepare_medsam(
            volume, list(roi) if isinstance(roi, list) else [roi], model=o.model, intensity=o.intensity, propagation=o.propagation,
            axis=seed.get("axis") or o.axis, slice_range=None if seed else o.slice_range,
            segmentation_node=segmentation, segment_id=segment_id, seed_slice=seed.get("slice"),
            direction=seed.get("direction", "both"))

    return prepare


#: Seconds after the box stopped moving before the auto-update preview (or the encoding ahead) starts.
AUTO_UPDATE_DELAY = 0.8


class SegmentBox:
    """The box part of :class:`.session.EditingSession`."""

    # ---- the box: one ROI per segment ----------------------------------------------------------------------
    def roi(self):
        """The selected segment's box (ROI node), or None."""
        params = self.editor_node()
        sid = params.GetSelectedSegmentID() if params else None
        roi = self.state().reference(f"ROI.{sid}") if sid else None
        return roi if roi is not None and self.scene().IsNodePresent(roi) else None

    def set_roi(self, roi) -> None:
        """Make ``roi`` the selected segment's box and watch it (a move previews again or encodes ahead)."""
        params = self.editor_node()
        sid = params.GetSelectedSegmentID() if params else None
        if sid:
            self.state().set_reference(f"ROI.{sid}", roi)
        self.watch_roi(roi)

    def watch_roi(self, roi) -> None:
        import slicer
        import vtk

        for node, tag in self._roi_tags:
            node.RemoveObserver(tag)
        self._roi_tags = []
        if roi is not None:
            for event in (slicer.vtkMRMLMarkupsNode.PointModifiedEvent, vtk.vtkCommand.ModifiedEvent):
                self._roi_tags.append((roi, roi.AddObserver(event, lambda *_: self.roi_changed(self.clock()))))

    def roi_changed(self, now: float) -> None:
        """The box moved (or was resized): preview again (auto-update) or encode ahead, once it stops moving."""
        if not self.placing:
            self.auto_due = now + AUTO_UPDATE_DELAY
            self.wake()

    def new_roi(self, volume, segmentation, segment_id):
        name = segmentation.GetSegmentation().GetSegment(segment_id).GetName()
        roi = self.scene().AddNewNodeByClass("vtkMRMLMarkupsROINode", f"{name} box")
        roi.CreateDefaultDisplayNodes()
        roi.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
        return roi

    def set_box(self, box: Sequence[int], now: Optional[float] = None):
        """Put the selected segment's box at voxel ``box`` (a new ROI if it has none) and show it."""
        volume, segmentation, segment_id = self.inputs()
        roi = self.roi()
        if roi is None:
            roi = self.new_roi(volume, segmentation, segment_id)
            self.set_roi(roi)
        placing, self.placing = self.placing, True        # one change, not one per coordinate
        try:
            geometry.voxel_box_to_roi(roi, volume, box)
        finally:
            self.placing = placing
        if roi.GetDisplayNode() is not None:
            roi.GetDisplayNode().SetVisibility(True)
        return roi

    def fit_roi(self, fit: Callable) -> None:
        """Fit the box: ``fit(volume, segmentation, segment_id)`` gives the voxel box (the effect's rule)."""
        try:
            volume, segmentation, segment_id = self.inputs()
            self.set_box(fit(volume, segmentation, segment_id))
            self.roi_changed(self.clock())
        except MedSegError as e:
            self.set_status(str(e), error=True)

    def draw_roi(self) -> None:
        """Draw ROI: the markups widget places the box with two clicks on one slice (Place mode); the product then
        gives it its depth (:meth:`roi_complete`)."""
        try:
            volume, segmentation, segment_id = self.inputs()
        except MedSegError as e:
            self.set_status(str(e), error=True)
            return
        roi = self.roi()
        if roi is None:
            roi = self.new_roi(volume, segmentation, segment_id)
        else:
            roi.RemoveAllControlPoints()
        if roi.GetDisplayNode() is not None:
            roi.GetDisplayNode().SetVisibility(True)
        self.set_roi(roi)
        self.stop_roi_placement()
        # keeps the first corner the widget defines; says when the box is complete (also with place persistence)
        self.placement = geometry.RoiPlacement(roi, on_complete=lambda: self.defer(self.roi_complete))
        self.placing = True
        app = self.app_logic()
        selection = app.GetSelectionNode()
        selection.SetReferenceActivePlaceNodeClassName("vtkMRMLMarkupsROINode")
        selection.SetActivePlaceNodeID(roi.GetID())
        interaction = app.GetInteractionNode()
        interaction.SetCurrentInteractionMode(interaction.Place)
        self.set_status("Click one corner of a box around the structure on one slice, then the opposite corner: its "
                        "depth is set automatically.")

    def interaction_mode_changed(self, interaction) -> None:
        """Placing an ROI must not deactivate the effect; leaving Place mode before the second corner ends it."""
        if self.placing and interaction.GetCurrentInteractionMode() != interaction.Place:
            if self.placement is not None and self.placement.complete:
                self.roi_complete()
            else:
                self.placing = False
                self.stop_roi_placement()

    def roi_complete(self) -> None:
        """The second corner is placed: leave Place mode, give the box its depth, preview or encode ahead."""
        if not self.placing:
            return
        self.placing = False
        interaction = self.app_logic().GetInteractionNode()
        if interaction.GetCurrentInteractionMode() == interaction.Place:
            interaction.SetCurrentInteractionMode(interaction.ViewTransform)
        roi = self.roi()
        placement, self.placement = self.placement, None
        if placement is not None:
            placement.stop()
        try:
            volume, _segmentation, _sid = self.inputs()
            if roi is None or roi.GetNumberOfControlPoints() == 0:
                return
            # drawn on one slice: the product gives it the structure's depth (not Slicer's padding)
            placed = geometry.placed_box(roi, volume, placement.first if placement is not None else None)
            if placed is not None:
                self.set_box(placed[1])
        except MedSegError as e:
            self.set_status(str(e), error=True)
            return
        self.auto_due = None
        if self.auto_update:
            self.preview(auto=True)
        else:
            self.prefetch()

    def stop_roi_placement(self) -> None:
        if self.placement is not None:
            self.placement.stop()
        self.placement = None

    # ---- run all boxes -------------------------------------------------------------------------------------
    def segment_boxes(self, segmentation) -> List[Tuple[str, Any]]:
        """``(segment ID, ROI)`` of every segment of ``segmentation`` that has a box, in the segment list's order."""
        state = self.state()
        found = []
        for sid in segments.segment_ids(segmentation):
            roi = state.reference(f"ROI.{sid}")
            if roi is not None and self.scene().IsNodePresent(roi):
                found.append((sid, roi))
        return found

    def run_all(self) -> bool:
        """Run every segment's box in one job (one object per box: progress and cancel as for a preview); when it
        is complete, each segment gets its box's result, within its box only, under one undo state."""
        try:
            if self.pending() is not None:
                raise InputError("A preview is waiting: Apply it (Enter) or drop it (x) first, then run all boxes.")
            volume, segmentation, _sid = self.inputs()
            boxes = self.segment_boxes(segmentation)
            if not boxes:
                raise InputError("No segment has a box yet: drag a box around each structure first.")
            for sid, _roi in boxes:
                segments.check_segment_writable(segmentation, sid)
        except MedSegError as e:
            self.set_status(str(e), error=True)
            return False
        ids = [sid for sid, _roi in boxes]
        holder = {}

        def prepared():
            run = self.prepare(volume, segmentation, ids[0], [roi for _sid, roi in boxes], None)
            holder["slabs"] = run.info.get("slabs")
            return volume, segmentation, ids[0], run

        return self.preview(prepared=prepared, then=lambda result: self._apply_all(ids, holder["slabs"], result))

    def _apply_all(self, ids, slabs, result) -> None:
        """The end of :meth:`run_all`: each box's object into its segment (within the box), one undo state."""
        self.drop_preview()                   # the progressive preview of the run (its first box)
        try:
            volume, segmentation, selected = self.inputs()
            labels = np.asarray(result.labels)
            written, empty = [], []
            first = True
            for sid in ids:           # every segment checked before the first write: all of them or none
                segments.check_segment_writable(segmentation, sid)
            for i, (sid, slab) in enumerate(zip(ids, slabs)):
                mask = (labels == i + 1).astype(np.uint8)
                if not mask.any():
                    empty.append(segmentation.GetSegmentation().GetSegment(sid).GetName())
                    continue
                self.editor_node().SetSelectedSegmentID(sid)
                editing.apply_result(self.apply_target(), mask, volume, slab=slab, save_undo=first)
                first = False
                written.append(segmentation.GetSegmentation().GetSegment(sid).GetName())
        except MedSegError as e:
            self.set_status(str(e), error=True)
            return
        finally:
            if self.editor_node() is not None:
                self.editor_node().SetSelectedSegmentID(selected)
        status = f"All boxes run: {', '.join(written) or 'nothing'} written; one Undo restores them."
        if empty:
            status += f" Nothing found in the box of {', '.join(empty)} (unchanged)."
        self.set_status(status)

    def hide_roi(self) -> None:
        roi = self.roi()
        if roi is not None and roi.GetDisplayNode() is not None:
            roi.GetDisplayNode().SetVisibility(False)
