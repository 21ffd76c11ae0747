"""The editing session's view interaction (:mod:`.session`, issue 26): view events (slice view, XY, button,
modifiers, key) turned into a box on the slice under the pointer (the slice node's XY -> RAS), a fix of one slice of
an applied result, and the keys of the view. A mixin of :class:`.session.EditingSession`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from medseg_backend import slicing

from . import brush, editing, geometry, labelmaps, preview
from .errors import InputError, MedSegError

#: Keys in a slice view while the effect is active (keysyms as VTK's interactor gives them; SLICER_API.md row K2:
#: none of them is a key of the Segment Editor or of the slice views in 5.6 - 5.12; Escape is the Segment Editor's
#: "leave the effect" key, so it ends a drag but cannot cancel a run).
VIEW_KEYS = {"Return": "apply", "KP_Enter": "apply", "x": "cancel", "n": "next_segment", "j": "next_flagged",
             "p": "run"}
#: A press and release closer than this (pixels, each way) is a click, not a box.
MIN_DRAG_PIXELS = 4
#: Left-drags with modifiers (SLICER_API.md row V3): Ctrl paints on the slice, Ctrl+Shift erases. A plain left-drag
#: draws the box. (Slicer's own left-drags: Shift pans, Ctrl blends the layers, Ctrl+Alt rotates, Alt+Shift pans
#: during placement: while the effect is active, Ctrl and Ctrl+Shift are the effect's.)
STROKE_MODIFIERS = {frozenset({"ctrl"}): "paint", frozenset({"ctrl", "shift"}): "erase"}


@dataclass
class ViewEvent:
    """One event of a view, as the effect receives it (``processInteractionEvents``): the slice view's layout name
    (``Red``), ``kind`` (``press`` / ``move`` / ``release`` / ``key``), the pointer position in the view's XY
    (pixels), the mouse button, the modifiers held (``shift``, ``ctrl``, ``alt``) and the key (VTK keysym)."""
    view: str
    kind: str
    xy: Tuple[float, float] = (0.0, 0.0)
    button: str = "left"
    modifiers: Tuple[str, ...] = ()
    key: str = ""


def slice_node_for_view(scene, view: str):
    """The slice node of the view with layout name ``view`` (``Red``, ``Yellow``, ...), or None."""
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
        if node.GetLayoutName() == view:
            return node
    return None


def drawn_box(volume, slice_node, xy0, xy1) -> Tuple[str, int, Tuple[int, ...]]:
    """A rectangle dragged in a slice view from ``xy0`` to ``xy1`` (the view's XY, pixels) as ``(axis, k, box)``: the
    voxel axis the view slices along, the slice under the pointer, and the voxels of that slice whose centres lie
    inside the rectangle (the slice node's own XY -> RAS transform, then the volume's RAS -> IJK)."""
    axis, k, ijk = geometry.view_points_to_ijk(volume, slice_node, [xy0, xy1], "The box was drawn")
    a = slicing.BOX_INDEX[slicing.axis_index(axis)]
    lo = np.ceil(ijk.min(axis=0) - 1e-6).astype(int)
    hi = np.floor(ijk.max(axis=0) + 1e-6).astype(int)
    box = [int(v) for v in lo] + [int(v) for v in hi]
    box[a], box[a + 3] = k, k
    if any(box[d] > box[d + 3] for d in range(3)):
        raise InputError("The box is thinner than one voxel: drag a larger box around the structure.")
    return axis, k, geometry.clip_box(box, geometry.volume_shape(volume), what="Drawn box")


class ViewInteraction:
    """The view part of :class:`.session.EditingSession`."""

    # ---- the views: drag a box, fix a slice, keys ------------------------------------------------------------
    def view_event(self, event: ViewEvent, now: Optional[float] = None) -> bool:
        """One view event (see :class:`ViewEvent`); True when the session used it (the effect then stops Slicer's
        own handling: no window/level drag under a box drag). A left drag without modifiers draws a box on that
        slice: a new box for the segment (its depth by the structure-depth rule, :func:`.geometry.full_depth_box`)
        and its preview, or - on a slice of an applied result, inside its box - a fix of that slice
        (:meth:`fix_slice`). Keys: :data:`VIEW_KEYS`."""
        now = self.clock() if now is None else now
        if event.kind == "key":
            action = VIEW_KEYS.get(event.key) if not event.modifiers else None
            if action is None:
                if event.key == "Escape":
                    self.drag = None         # the Segment Editor leaves the effect on Escape: the drag ends
                return False
            if action == "apply":
                self.apply()
            elif action == "cancel":
                self.cancel()
            elif action == "next_segment":
                self.next_segment()
            elif action == "next_flagged":
                self.next_flagged(event.view)
            elif action == "run":
                self.preview()
            return True
        if event.button != "left" or self._placing_markups():
            return False                     # Draw ROI (or another markup) places points with the same button
        if event.kind == "press":
            mode = STROKE_MODIFIERS.get(frozenset(event.modifiers)) if event.modifiers else "box"
            if mode is None or (mode == "box" and not self.boxes):
                return False                 # Slicer's own (pan, blend, rotate)
            self.drag = dict(view=event.view, start=tuple(event.xy), end=tuple(event.xy), mode=mode,
                             points=[tuple(event.xy)])
            return True
        if self.drag is None or event.view != self.drag["view"]:
            return False
        if event.kind == "move":
            self.drag["end"] = tuple(event.xy)
            if self.drag["mode"] != "box" and len(self.drag["points"]) < brush.MAX_STROKE_POINTS:
                self.drag["points"].append(tuple(event.xy))
            return True
        if event.kind == "release":
            drag, self.drag = self.drag, None
            drag["end"] = tuple(event.xy)
            if drag["mode"] != "box":
                drag["points"].append(tuple(event.xy))
                self.stroke_done(drag["view"], drag["mode"], drag["points"])
                return True
            (x0, y0), (x1, y1) = drag["start"], drag["end"]
            if abs(x1 - x0) < MIN_DRAG_PIXELS or abs(y1 - y0) < MIN_DRAG_PIXELS:
                return False                 # a click: Slicer's own handling
            self.box_drawn(drag["view"], drag["start"], drag["end"], now)
            return True
        return False

    def _placing_markups(self) -> bool:
        if self.placing:
            return True
        app = self.app_logic() if self.app_logic is not None else None
        interaction = app.GetInteractionNode() if app is not None else None
        return interaction is not None and interaction.GetCurrentInteractionMode() == interaction.Place

    def box_drawn(self, view: str, xy0, xy1, now: Optional[float] = None) -> bool:
        """A box dragged in view ``view``: a fix of an applied result on that slice, or the segment's new box."""
        try:
            volume, segmentation, segment_id = self.inputs()
            node = slice_node_for_view(self.scene(), view)
            if node is None:
                raise InputError(f"There is no slice view '{view}' in the scene: drag in a Red, Yellow or Green view.")
            axis, k, box = drawn_box(volume, node, xy0, xy1)
            if self._fixes(volume, segmentation, segment_id, axis, k):
                return self.fix_slice(axis, k, box)
            full = geometry.full_depth_box(box, axis, volume)
            self.set_box(full)
        except MedSegError as e:
            self.set_status(str(e), error=True)
            return False
        self.view_axis = axis
        self.auto_due = None
        return self.preview(auto=self.running_ours, seed={"axis": axis})

    def _fixes(self, volume, segmentation, segment_id, axis: str, k: int) -> bool:
        """A drag fixes a slice when the segment holds a result (applied, no preview waiting) and slice ``k`` is
        inside the segment's box along ``axis``."""
        roi = self.roi()
        if roi is None or self.pending() is not None or self.running_ours:
            return False
        s0, s1, _ = slicing.project_box(geometry.roi_to_voxel_box(roi, volume), axis)
        if not s0 <= k <= s1:
            return False
        return bool(labelmaps.segment_to_array(segmentation, segment_id, volume).any())

    def fix_slice(self, axis: str, k: int, box: Sequence[int]) -> bool:
        """Fix in place: slice ``k`` is prompted again with the drawn ``box`` (its embedding is cached: decode only),
        then the propagation re-runs from it to the end of the segment's box, away from where the run started
        (the box's middle slice); the preview covers that walk only, so Apply changes nothing else."""
        volume, _segmentation, _sid = self.inputs()
        s0, s1, _ = slicing.project_box(geometry.roi_to_voxel_box(self.roi(), volume), axis)
        start = slicing.middle_slice(s0, s1)
        direction = "up" if k > start else "down" if k < start else "both"

        def then(result):
            self._repropagate(axis, k, direction, result)

        ok = self.preview(seed={"axis": axis}, roi=tuple(box), then=then)
        if ok:
            self.set_status(f"Slice {k}: prompted again with the new box; then propagating "
                            f"{'both ways' if direction == 'both' else direction} from it...")
        return ok

    def _repropagate(self, axis: str, k: int, direction: str, result) -> None:
        """The fix's second step: the new slice ``k`` (shown as the preview) seeds the propagation."""
        try:
            mask = self.mask_from_result(result)
            if not slicing.take_slice(mask, axis, k).any():
                raise InputError(f"The model found nothing in the new box on slice {k}: drag the box around the "
                                 "structure again.")
            self._propagate_edited(mask, axis, k, direction)
        except MedSegError as e:
            self.set_status(str(e), error=True)

    def _propagate_edited(self, mask, axis: str, k: int, direction: str) -> bool:
        """Slice ``k`` of ``mask`` (edited: re-prompted or painted) is shown as the preview and seeds the propagation
        towards ``direction`` (the walk's preview replaces it; Apply writes the walk's slab only)."""
        volume, segmentation, segment_id = self.inputs()
        node = preview.show(self.scene(), self.editor_node(), segmentation, segment_id, mask, volume,
                            owner=self.owner)
        return self.preview(seed={"axis": axis, "slice": k, "direction": direction}, seed_source=node)

    # ---- paint and erase: Ctrl-drag, Ctrl+Shift-drag --------------------------------------------------------
    def drag_shape(self):
        """What the effect draws while a drag is under way: ``("box", [corner, corner])`` or ``("paint" / "erase",
        [points...])`` in the view's XY, with the view's name; None when nothing is dragged."""
        if self.drag is None:
            return None
        if self.drag["mode"] == "box":
            return self.drag["view"], "box", [self.drag["start"], self.drag["end"]]
        return self.drag["view"], self.drag["mode"], list(self.drag["points"])

    def stroke_done(self, view: str, mode: str, points) -> bool:
        """A paint (``mode`` ``paint``) or erase stroke dragged in ``view``. MedSAM (:attr:`strokes` ``propagate``):
        the slice, as the segment holds it plus (minus) the stroke, seeds the propagation to the end of the box
        away from where the run started, as a fix does. UniverSeg (``segment``): the stroke is written into the
        segment at once (undoable) and the slice becomes an example of the next run."""
        try:
            if self.running_ours or self.busy:
                raise InputError("A run is in progress: wait for its preview (or press x to cancel), then paint.")
            if self.pending() is not None:
                raise InputError("A preview is waiting: Apply it (Enter) or drop it (x) first, then paint.")
            volume, segmentation, segment_id = self.inputs()
            node = slice_node_for_view(self.scene(), view)
            if node is None:
                raise InputError(f"There is no slice view '{view}' in the scene: paint in a Red, Yellow or Green view.")
            axis, k, plane = brush.stroke_plane(volume, node, points, self.brush_mm)
            if self.strokes == "segment":
                return self._paint_segment(volume, axis, k, plane, mode)
            return self._paint_and_propagate(volume, segmentation, segment_id, axis, k, plane, mode)
        except MedSegError as e:
            self.set_status(str(e), error=True)
            return False

    def _paint_segment(self, volume, axis: str, k: int, plane, mode: str) -> bool:
        mask = np.zeros(geometry.volume_shape(volume), np.uint8)
        slicing.take_slice(mask, axis, k)[plane] = 1
        slab = slicing.bbox3d(mask)
        target = self.apply_target() if self.apply_target else None
        report = editing.apply_result(target, mask, volume, mode="add" if mode == "paint" else "remove", slab=slab)
        what = "Painted" if mode == "paint" else "Erased"
        self.set_status(f"{what} on {axis} slice {k} ({abs(report.voxels_after - report.voxels_before)} voxels): "
                        "press p to segment the rest from the slices you painted.")
        return True

    def _paint_and_propagate(self, volume, segmentation, segment_id, axis: str, k: int, plane, mode: str) -> bool:
        roi = self.roi()
        if roi is None:
            raise InputError("Paint corrects a slice of a box's result: drag a box around the structure first.")
        s0, s1, _ = slicing.project_box(geometry.roi_to_voxel_box(roi, volume), axis)
        if not s0 <= k <= s1:
            raise InputError(f"Slice {k} is outside the segment's box ({axis} slices {s0}-{s1}): paint inside it, "
                             "or drag a new box.")
        mask = (labelmaps.segment_to_array(segmentation, segment_id, volume) > 0).astype(np.uint8)
        edited = slicing.take_slice(mask, axis, k)
        edited[plane] = 1 if mode == "paint" else 0
        if not edited.any():
            raise InputError(f"Slice {k} is empty after the stroke: nothing to propagate from. Paint the structure "
                             "there, or use the Erase effect to clear slices.")
        start = slicing.middle_slice(s0, s1)
        direction = "up" if k > start else "down" if k < start else "both"
        ok = self._propagate_edited(mask, axis, k, direction)
        if ok:
            self.set_status(f"Slice {k} {'painted' if mode == 'paint' else 'erased'}; propagating "
                            f"{'both ways' if direction == 'both' else direction} from it...")
        return ok

    def next_segment(self, structure=None) -> bool:
        """The "next segment" key: Apply the preview waiting (if any), add a new segment (a standard structure's
        name, colour and terminology when ``structure`` - or the picker's :attr:`structure` - is given), select it
        and wait for its box."""
        structure = structure if structure is not None else self.structure
        if self.running_ours:
            self.set_status("A run is in progress: wait for its preview (or press x to cancel), then go on.", error=True)
            return False
        if self.pending() is not None and not self.apply():
            return False
        try:
            _volume, segmentation, _sid = self.inputs()
            from . import terminology

            found = None
            if structure is not None:
                found = terminology.lookup(structure)
                if found is None:
                    raise InputError(f"'{structure}' is not in the list of standard structures: pick one of the list.")
            new_id = segmentation.GetSegmentation().AddEmptySegment("", found.name if found else "")
            if found is not None:
                terminology.apply_to_segment(segmentation.GetSegmentation().GetSegment(new_id), found)
        except MedSegError as e:
            self.set_status(str(e), error=True)
            return False
        self.editor_node().SetSelectedSegmentID(new_id)
        self.watch_roi(None)
        self.flagged, self.flagged_mask, self.flagged_at = [], None, -1
        name = segmentation.GetSegmentation().GetSegment(new_id).GetName()
        self.set_status(f"New segment '{name}': drag a box around it in a slice view.")
        return True

    def next_flagged(self, view: str) -> Optional[int]:
        """The "next flagged slice" key: show the next doubtful slice of the last result in ``view``."""
        if not self.flagged:
            self.set_status("No slice to check: the last result has no doubtful slice.")
            return None
        node = slice_node_for_view(self.scene(), view)
        if node is None:
            return None
        order = sorted(int(r["slice"]) for r in self.flagged)
        self.flagged_at = (self.flagged_at + 1) % len(order)
        k = order[self.flagged_at]
        try:
            node.JumpSliceByCentering(*(float(v) for v in self.review_position(k)))
        except MedSegError as e:
            self.set_status(str(e), error=True)
            return None
        self.set_status(f"Slice {k} ({self.flagged_at + 1} of {len(order)} to check): drag a box on it to fix it.")
        return k
