"""The editing session of a MedSegSlicer effect, Qt-free: what the effect's panel and views show and do.

One :class:`EditingSession` per effect object holds the run state that used to hide in the Qt effect: the box
(one ROI per segment, drawn on one slice and given the product's depth), encoding ahead while the box is still
being adjusted, the preview run and a preview queued behind another job, the slices a progressive run has
finished (shown at most every :data:`PARTIAL_INTERVAL` s), cancel, Apply (through :mod:`.editing`) and the list of
doubtful slices. The Qt effect forwards widget and view events to it and draws :meth:`EditingSession.drawn`.

The session talks to one runner-facing object, the scene's :class:`~.jobs.JobRunner` (``runner()``): it starts a
prepared run's request, polls it, takes its finished slices and cancels it. Time is passed in (``poll(now)``,
``roi_changed(now)``) so that tests drive it; the effect's ``QTimer`` passes ``time.monotonic()``.

States (:attr:`EditingSession.phase`): ``idle`` - nothing of ours runs; ``encoding`` - the box's slices are
encoded ahead (a Preview cancels it and starts once it has stopped: what was encoded stays cached);
``previewing`` - a preview run. A moved box while a preview runs (auto-update on) cancels it and queues a new one
(:attr:`EditingSession.queued`). A job the session did not start (the module panel's run) is only shown as busy:
its outcome belongs to its owner.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from medseg_backend import slicing
from medseg_backend.choices import DEFAULT_MODEL, DEFAULT_PROPAGATION

from . import editing, geometry, labelmaps, preview, review, segments
from .effect_state import EffectState
from .errors import InputError, MedSegError
from .jobs import poll_step

log = logging.getLogger("MedSegSlicer")

IDLE, ENCODING, PREVIEWING = "idle", "encoding", "previewing"

#: Seconds after the box stopped moving before the auto-update preview (or the encoding ahead) starts.
AUTO_UPDATE_DELAY = 0.8
#: The progressive preview is redrawn at most this often (seconds).
PARTIAL_INTERVAL = 0.5
#: Runs estimated longer than this on a CPU are confirmed first (with the estimate).
LONG_RUN_SECONDS = 60


#: Keys in a slice view while the effect is active (keysyms as VTK's interactor gives them; SLICER_API.md row K2:
#: none of them is a key of the Segment Editor or of the slice views in 5.6 - 5.12; Escape is the Segment Editor's
#: "leave the effect" key, so it ends a drag but cannot cancel a run).
VIEW_KEYS = {"Return": "apply", "KP_Enter": "apply", "x": "cancel", "n": "next_segment", "j": "next_flagged"}
#: A press and release closer than this (pixels, each way) is a click, not a box.
MIN_DRAG_PIXELS = 4


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
    xy_to_ras = geometry.matrix_to_numpy(slice_node.GetXYToRAS())
    corners = np.array([[xy0[0], xy0[1], 0.0], [xy1[0], xy1[1], 0.0]], dtype=float)
    ijk = geometry.apply(np.linalg.inv(geometry.volume_ijk_to_world(volume)), geometry.apply(xy_to_ras, corners))
    axis = geometry.axis_for_slice_node(volume, slice_node)
    a = slicing.BOX_INDEX[slicing.axis_index(axis)]
    size = geometry.box_shape_xyz(geometry.volume_shape(volume))
    k = int(np.floor(ijk[0][a] + 0.5))
    if not 0 <= k < size[a]:
        raise InputError(f"The box was drawn outside the volume (slice {k} of 0-{size[a] - 1} along {axis}): drag on "
                         "a slice that shows the volume.")
    lo = np.ceil(ijk.min(axis=0) - 1e-6).astype(int)
    hi = np.floor(ijk.max(axis=0) + 1e-6).astype(int)
    box = [int(v) for v in lo] + [int(v) for v in hi]
    box[a], box[a + 3] = k, k
    if any(box[d] > box[d + 3] for d in range(3)):
        raise InputError("The box is thinner than one voxel: drag a larger box around the structure.")
    return axis, k, geometry.clip_box(box, geometry.volume_shape(volume), what="Drawn box")


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


@dataclass
class Drawn:
    """What the effect shows: the status line, the progress bar and the buttons, the doubtful slices."""
    status: str
    error: bool
    progress: float
    progress_text: str
    progress_visible: bool
    preview_enabled: bool
    apply_enabled: bool
    cancel_enabled: bool
    review: List[Tuple[int, str]]


@dataclass
class _Run:
    """The preview run in flight: its inputs (by ID), its slab and the slices finished so far."""
    volume_id: str
    segmentation_id: str
    segment_id: str
    messages: List[str]
    slab: Optional[Tuple[int, ...]]
    axis: str
    partial: Optional[np.ndarray] = None
    shown_at: Optional[float] = None
    then: Optional[Callable[[Any], None]] = None     # the next step of a fix (called with the result)


@dataclass
class Queued:
    """A preview waiting for the job in front of it to stop."""
    auto: bool = False
    seed: Optional[Dict[str, Any]] = None


@dataclass
class MedSAMOptions:
    """The MedSAM box effect's choices (its panel, or a script)."""
    model: str = DEFAULT_MODEL
    intensity: Optional[str] = None
    propagation: str = DEFAULT_PROPAGATION
    axis: str = "axial"
    slice_range: Optional[Tuple[int, int]] = None


def medsam_runs(segmenter: Callable[[], Any], options: Callable[[Any], MedSAMOptions]):
    """The MedSAM box effect's ``prepare(volume, segmentation, segment_id, roi, seed)``: a run of the segment's box
    (an ROI node or a voxel box) with the effect's options (``options(volume)``); ``seed``: ``axis`` slices as the
    view the box was drawn in, ``slice`` + ``direction`` re-propagate from the segment's slice there
    (:meth:`.segmenter.Segmenter.prepare_medsam`)."""

    def prepare(volume, segmentation, segment_id, roi, seed=None):
        o = options(volume)
        seed = seed or {}
        return segmenter().prepare_medsam(
            volume, [roi], model=o.model, intensity=o.intensity, propagation=o.propagation,
            axis=seed.get("axis") or o.axis, slice_range=None if seed else o.slice_range,
            segmentation_node=segmentation, segment_id=segment_id, seed_slice=seed.get("slice"),
            direction=seed.get("direction", "both"))

    return prepare


class EditingSession:
    """See the module docstring. The providers are called when needed (the scene, its runner and the editor's
    parameter node may change under the effect):

    * ``scene()``, ``editor_node()`` (the Segment Editor's parameter node), ``runner()`` (the scene's JobRunner);
    * ``prepare(volume, segmentation, segment_id, roi, seed)`` -> a :class:`~.segmenter.PreparedRun` (raises
      :class:`InputError` on bad input); ``encode(prepared)`` -> the encode-ahead run, or None for an effect that
      does not encode ahead; ``mask_from_result(result)``; ``model_name()``;
    * ``ensure(model)`` -> bool: dependencies and weights there (may ask; False: declined); ``installed()`` ->
      bool, asked before a background job (never asks); ``confirm(question)`` -> bool; ``on_cpu()`` -> bool or
      None; ``app_logic()`` (interaction and selection nodes, for Draw ROI); ``defer(fn)`` runs ``fn`` after the
      current event (Qt: ``QTimer.singleShot(0, fn)``); ``wake()`` is called when the box moved (the effect
      starts its timer: something is due); ``apply_target()`` (:mod:`.editing`'s target: the running effect, or the
      editor logic headless), ``confirm_visible()`` -> bool (the segment is hidden: write anyway?),
      ``review_segment()`` -> bool (also write the doubtful slices on Apply): what Apply uses."""

    def __init__(self, owner: str, *, scene, editor_node, runner, prepare, mask_from_result,
                 encode=None, model_name=lambda: "", ensure=None, installed=None, confirm=None, on_cpu=None,
                 app_logic=None, defer=None, wake=None, apply_target=None, confirm_visible=None,
                 review_segment=None, clock=time.monotonic) -> None:
        self.owner = owner
        self.scene, self.editor_node, self.runner = scene, editor_node, runner
        self.prepare, self.encode, self.mask_from_result = prepare, encode, mask_from_result
        self.model_name = model_name
        self.ensure = ensure
        self.installed = installed or (lambda: True)
        self.confirm = confirm or (lambda question: True)
        self.on_cpu = on_cpu or (lambda: None)
        self.app_logic = app_logic
        self.defer = defer or (lambda fn: fn())
        self.wake = wake or (lambda: None)
        self.clock = clock
        self.phase = IDLE
        self.queued: Optional[Queued] = None
        self.run: Optional[_Run] = None
        self.auto_update = False
        self.apply_directly = False       # the preview is applied as soon as it is complete (Undo exists)
        self.drag: Optional[Dict[str, Any]] = None
        self.view_axis: Optional[str] = None
        self.offered_install = False
        self.structure: Optional[str] = None     # the structure picker: what the "next segment" key adds
        self.flagged_at = -1
        self.apply_target = apply_target
        self.confirm_visible = confirm_visible
        self.review_segment = review_segment or (lambda: False)
        self.auto_due: Optional[float] = None
        self.status, self.error = "", False
        self.progress: Tuple[float, str] = (0.0, "")
        self.flagged: List[Dict] = []
        self.flagged_mask: Optional[np.ndarray] = None
        self.flagged_axis = "axial"
        self.placement = None
        self.placing = False
        self._roi_tags: List[Tuple[Any, int]] = []

    # ---- what the effect draws ----------------------------------------------------------------------------
    def set_status(self, text: str, error: bool = False) -> None:
        self.status, self.error = text, error

    @property
    def busy(self) -> bool:
        """A job runs in the runner (ours, or the module panel's)."""
        return self.runner().running

    @property
    def needs_polling(self) -> bool:
        """The effect's timer must tick: a job of ours runs or an auto-update is due."""
        return self.phase != IDLE or self.queued is not None or self.auto_due is not None

    def pending(self):
        """The preview waiting for Apply (:func:`.preview.current`), or None."""
        return preview.current(self.scene(), self.editor_node(), owner=self.owner)

    def review_rows(self) -> List[Tuple[int, str]]:
        """The doubtful slices of the last preview, least confident first: ``(slice, text)``."""
        rows = []
        for row in self.flagged:
            why = review.reasons(row)
            if "empty" in why:
                text = f"slice {row['slice']}: empty"
            else:
                text = f"slice {row['slice']}: confidence {float(row['confidence']):.2f}"
                if "profile" in why:
                    text += f", {float(row['profile']):.0%} in the object's intensity range"
            rows.append((int(row["slice"]), text))
        return rows

    def drawn(self) -> Drawn:
        running = self.busy
        pending = self.pending()
        return Drawn(status=self.status, error=self.error, progress=self.progress[0], progress_text=self.progress[1],
                     progress_visible=running, preview_enabled=not running or self.phase == ENCODING,
                     apply_enabled=(not running) and pending is not None,
                     cancel_enabled=running or pending is not None, review=self.review_rows())

    # ---- inputs -------------------------------------------------------------------------------------------
    def inputs(self):
        """(volume, segmentation, segment ID) of the editor; raises MedSegError with a fix when one is missing."""
        params = self.editor_node()
        volume = params.GetSourceVolumeNode() if params else None
        segmentation = params.GetSegmentationNode() if params else None
        segment_id = params.GetSelectedSegmentID() if params else None
        geometry.check_scalar_volume(volume)
        segments.check_segmentation(segmentation)
        if not segment_id:
            raise InputError("No segment selected: add or select the segment to fill in the segment list.")
        return volume, segmentation, segment_id

    def state(self) -> EffectState:
        return EffectState(self.editor_node(), self.owner)

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

    def hide_roi(self) -> None:
        roi = self.roi()
        if roi is not None and roi.GetDisplayNode() is not None:
            roi.GetDisplayNode().SetVisibility(False)

    # ---- runs ---------------------------------------------------------------------------------------------
    def _prepare(self, seed=None, roi=None, seed_source=None):
        volume, segmentation, segment_id = self.inputs()
        prepared = self.prepare(volume, seed_source or segmentation, segment_id if seed_source is None else
                                seed_source.GetSegmentation().GetNthSegmentID(0), roi or self.roi(), seed)
        return volume, segmentation, segment_id, prepared

    def prefetch(self) -> bool:
        """Encode the box's slices in the worker while the user still adjusts the box (centre slice first).
        Quiet: a background convenience, never a question or an error (Preview reports real problems)."""
        if self.encode is None or self.phase != IDLE or self.busy or not self.installed():
            return False
        try:
            _v, _s, _sid, prepared = self._prepare()
            request = self.encode(prepared)
            if request is None:
                return False
            self.runner().start(request.request, label=request.label, guard=request.guard)
        except Exception:  # noqa: BLE001 - see the docstring
            log.debug("MedSegSlicer: no encoding ahead", exc_info=True)
            return False
        self.phase = ENCODING
        return True

    def preview(self, *, auto: bool = False, seed: Optional[Dict[str, Any]] = None, roi=None, seed_source=None,
                then=None) -> bool:
        """Start the preview run (True when started or queued). ``auto``: a moved box (never a question);
        ``seed``: ``{"slice": k, "direction": ...}`` re-propagates from the segment's slice ``k`` (of
        ``seed_source``, a segmentation node, instead of the segment when given); ``roi``: a voxel box instead of
        the segment's box; ``then(result)``: called instead of showing the result (a fix's next step)."""
        if self.phase == ENCODING or (self.phase == PREVIEWING and auto):
            # stop the encoding ahead (what is encoded stays cached) or the outdated preview, then preview
            self.runner().cancel()
            self.queued = Queued(auto=auto, seed=seed)
            self.set_status("Starting the preview...")
            return True
        if self.busy:
            self.set_status(f"'{self.runner().label}' is still running: wait for it or press Cancel.", error=True)
            return False
        try:
            if self.ensure is not None and not self.ensure(self.model_name()):
                self.set_status("Dependencies not installed: nothing was run.", error=True)
                return False
            volume, segmentation, segment_id, prepared = self._prepare(seed, roi, seed_source)
            from .segmenter import Segmenter

            seconds = Segmenter.estimate_seconds(prepared, self.on_cpu())
            if seconds is not None and seconds > LONG_RUN_SECONDS and not auto:
                if not self.confirm(f"{prepared.label} will take about {duration(seconds)} on this computer's CPU (a "
                                    "GPU would take seconds). Cancel stops it at any time and changes nothing. Run "
                                    "it?"):
                    self.set_status("Not run: make the box or the slice range smaller for a quicker preview.")
                    return False
            if seconds is not None:
                prepared.messages.append(f"about {duration(seconds)} on the CPU")
            self.runner().start(prepared.request, label=prepared.label, guard=prepared.guard)
        except MedSegError as e:
            self.set_status(str(e), error=True)
            return False
        except Exception as e:  # noqa: BLE001 - show, do not crash the editor
            log.exception("MedSegSlicer: preparing the run failed")
            self.set_status(f"Could not start: {e}", error=True)
            return False
        self.phase = PREVIEWING
        self.run = _Run(volume.GetID(), segmentation.GetID(), segment_id, list(prepared.messages),
                        prepared.info.get("slab"), prepared.info.get("axis", "axial"), then=then)
        self.progress = (0.0, "")
        self.set_status("; ".join(prepared.messages + [f"{prepared.label}: running..."]))
        return True

    def propagate_from(self, k: int, direction: str = "both") -> bool:
        """Preview a run seeded with the segment's slice ``k`` (corrected by the user) towards ``direction``."""
        return self.preview(seed=dict(slice=int(k), direction=direction))

    def cancel(self) -> None:
        """Stop our job (nothing is written), or drop the preview waiting for Apply."""
        if self.phase != IDLE:
            self.queued = None
            self.runner().cancel()
            self.set_status("Cancelling...")
            return
        self.auto_due = None
        self.drop_preview()
        self.set_status("Preview dropped: the segment is unchanged.")

    def drop_preview(self) -> None:
        preview.drop(self.scene(), self.editor_node(), owner=self.owner)

    # ---- the poll step (the effect's timer) ----------------------------------------------------------------
    def poll(self, now: float) -> Drawn:
        """One tick: read what the job sent (never blocks), show finished slices, finish an ended run, start a due
        auto-update or a queued preview. Returns what to draw."""
        if self.phase == IDLE:
            if self.queued is not None and not self.busy:
                queued, self.queued = self.queued, None
                self.preview(auto=queued.auto, seed=queued.seed)
            elif self.auto_due is not None and now >= self.auto_due and not self.busy:
                self.auto_due = None
                if self.roi() is not None:
                    self.preview(auto=True) if self.auto_update else self.prefetch()
            return self.drawn()
        runner = self.runner()
        partials = runner.partials()
        fraction, message, outcome = poll_step(runner)
        self.progress = (fraction, message)
        if partials and self.phase == PREVIEWING and self.run is not None:
            self._show_partial(partials, now, final=outcome is not None)
        if outcome is not None:
            self._finish(outcome)
        elif self.auto_due is not None and now >= self.auto_due and self.auto_update:
            self.auto_due = None              # the box moved while a job ran: the run is outdated
            self.preview(auto=True)
        return self.drawn()

    def _show_partial(self, partials, now: float, final: bool) -> None:
        """Progressive preview: the slices finished so far, shown at most every PARTIAL_INTERVAL s (the complete
        result replaces it; Apply stays off until then)."""
        run = self.run
        scene = self.scene()
        volume = scene.GetNodeByID(run.volume_id)
        segmentation = scene.GetNodeByID(run.segmentation_id)
        if volume is None or segmentation is None:
            return
        if run.partial is None:
            run.partial = np.zeros(geometry.volume_shape(volume), np.uint8)
        for obj, axis, k, mask in partials:
            if obj == 1:
                slicing.take_slice(run.partial, axis, k)[...] = mask
        if final or (run.shown_at is not None and now - run.shown_at < PARTIAL_INTERVAL):
            return
        run.shown_at = now
        try:
            preview.show(scene, self.editor_node(), segmentation, run.segment_id, run.partial, volume, slab=run.slab,
                         messages=["partial"], owner=self.owner)
        except MedSegError:
            pass      # the complete result reports any problem

    def _finish(self, outcome) -> None:
        phase, self.phase = self.phase, IDLE
        run, self.run = self.run, None
        if phase == ENCODING:
            if outcome.ok:
                self.set_status(f"{outcome.result.encoded} slice(s) encoded ahead: Preview will be quick.")
        elif outcome.ok and run is not None and run.then is not None:
            run.then(outcome.result)
        elif outcome.ok and run is not None:
            self._show_result(outcome, run)
        else:
            if run is not None and run.partial is not None:
                self.drop_preview()           # a cancelled or failed run leaves no partial result behind
            if self.queued is None:
                if outcome.status == "cancelled":
                    self.set_status(outcome.message or "Cancelled: nothing was written.")
                else:
                    self.set_status(outcome.message, error=True)
        if self.queued is not None and not self.busy:
            queued, self.queued = self.queued, None
            self.preview(auto=queued.auto, seed=queued.seed)

    def _show_result(self, outcome, run: _Run) -> None:
        scene = self.scene()
        volume = scene.GetNodeByID(run.volume_id)
        segmentation = scene.GetNodeByID(run.segmentation_id)
        try:
            mask = self.mask_from_result(outcome.result)
            messages = run.messages + list(getattr(outcome.result, "messages", []) or [])
            preview.show(scene, self.editor_node(), segmentation, run.segment_id, mask, volume, slab=run.slab,
                         messages=messages, owner=self.owner)
        except MedSegError as e:
            self.set_status(str(e), error=True)
            return
        if self.apply_directly:
            self.flagged = review.flagged_slices(outcome.result)
            self.flagged_axis = run.axis
            self.flagged_mask = review.review_mask(mask, self.flagged, run.axis) if self.flagged else None
            self.apply()
            return
        ml = geometry.mask_volume_ml(mask, volume)
        status = "; ".join(messages + [f"Preview ready ({ml:.1f} mL, {outcome.seconds:.1f} s): Apply writes it "
                                       "into the segment."])
        self.flagged = review.flagged_slices(outcome.result)
        self.flagged_axis = run.axis
        self.flagged_mask = review.review_mask(mask, self.flagged, run.axis) if self.flagged else None
        if self.flagged:
            status += f" {len(self.flagged)} slice(s) to check (listed above)."
        self.set_status(status)

    # ---- Apply --------------------------------------------------------------------------------------------
    def apply(self, target=None, *, add: bool = False, confirm_visible=None, review_segment=None) -> bool:
        """Write the preview into the selected segment through ``target`` (:mod:`.editing`: the editor's modify
        path, an undo state first, only the run's slab). ``confirm_visible()`` is asked when the segment is hidden
        (no answer: refused). ``review_segment``: also write the doubtful slices into '<segment> (review)'."""
        target = target if target is not None else (self.apply_target() if self.apply_target else None)
        confirm_visible = confirm_visible or self.confirm_visible
        review_segment = self.review_segment() if review_segment is None else review_segment
        pending = self.pending()
        if pending is None:
            self.set_status("Nothing to apply: press Preview first.", error=True)
            return False
        if self.busy:
            self.set_status(f"'{self.runner().label}' is still running: wait for it or press Cancel.", error=True)
            return False
        try:
            volume, segmentation, segment_id = self.inputs()
            if (volume.GetID(), segmentation.GetID()) != (pending.volume_id, pending.segmentation_id):
                raise InputError("The source volume or segmentation changed since the preview: press Preview again.")
            if segment_id != pending.segment_id:
                raise InputError("Another segment is selected than the one previewed: select it again or press "
                                 "Preview for this segment.")
            if not segments.is_segment_visible(segmentation, segment_id):
                if confirm_visible is None or not confirm_visible():
                    raise InputError(f"Segment '{segments.get_segment(segmentation, segment_id).GetName()}' is "
                                     "hidden: show it (eye icon in the Segments table), then Apply.")
            report = editing.apply_result(target, pending.mask(volume), volume, mode="add" if add else "set",
                                          slab=pending.slab, allow_hidden=True)
        except MedSegError as e:
            self.set_status(str(e), error=True)
            return False
        self.drop_preview()
        self.hide_roi()
        per_voxel = geometry.voxel_volume_ml(volume)
        self.set_status(f"Applied: the segment is {report.voxels_after * per_voxel:.1f} mL (was "
                        f"{report.voxels_before * per_voxel:.1f} mL); Undo in the Segment Editor restores it.")
        if review_segment and self.flagged_mask is not None and self.flagged_mask.any():
            try:
                name = segmentation.GetSegmentation().GetSegment(segment_id).GetName() + " (review)"
                existing = segments.segment_id_by_name(segmentation, name)
                labelmaps.write_masks(segmentation, volume, [(self.flagged_mask, existing, name)], mode="replace")
            except MedSegError as e:
                self.set_status(str(e), error=True)
        return True

    # ---- the doubtful slices ------------------------------------------------------------------------------
    def review_position(self, k: int):
        """World (RAS) position of the centre of flagged slice ``k`` (where the view jumps)."""
        volume, _s, _sid = self.inputs()
        return review.slice_centre_world(volume, self.flagged_axis, int(k))

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
            return True
        if event.button != "left" or self._placing_markups():
            return False                     # Draw ROI (or another markup) places points with the same button
        if event.kind == "press":
            if event.modifiers:
                return False
            self.drag = dict(view=event.view, start=tuple(event.xy), end=tuple(event.xy))
            return True
        if self.drag is None or event.view != self.drag["view"]:
            return False
        if event.kind == "move":
            self.drag["end"] = tuple(event.xy)
            return True
        if event.kind == "release":
            drag, self.drag = self.drag, None
            drag["end"] = tuple(event.xy)
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
        return self.preview(auto=self.phase != IDLE, seed={"axis": axis})

    def _fixes(self, volume, segmentation, segment_id, axis: str, k: int) -> bool:
        """A drag fixes a slice when the segment holds a result (applied, no preview waiting) and slice ``k`` is
        inside the segment's box along ``axis``."""
        roi = self.roi()
        if roi is None or self.pending() is not None or self.phase != IDLE:
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
            volume, segmentation, segment_id = self.inputs()
            mask = self.mask_from_result(result)
            if not slicing.take_slice(mask, axis, k).any():
                raise InputError(f"The model found nothing in the new box on slice {k}: drag the box around the "
                                 "structure again.")
            node = preview.show(self.scene(), self.editor_node(), segmentation, segment_id, mask, volume,
                                owner=self.owner)
        except MedSegError as e:
            self.set_status(str(e), error=True)
            return
        self.preview(seed={"axis": axis, "slice": k, "direction": direction}, seed_source=node)

    def next_segment(self, structure=None) -> bool:
        """The "next segment" key: Apply the preview waiting (if any), add a new segment (a standard structure's
        name, colour and terminology when ``structure`` - or the picker's :attr:`structure` - is given), select it
        and wait for its box."""
        structure = structure if structure is not None else self.structure
        if self.phase != IDLE:
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

    def activated(self) -> bool:
        """The effect was opened: offer the dependency and weights install now, once per session (not after the
        first box, when the user is waiting for a result). True when everything is there."""
        if self.installed():
            return True
        if self.offered_install or self.ensure is None:
            return False
        self.offered_install = True
        try:
            ok = bool(self.ensure(self.model_name()))
        except MedSegError as e:
            self.set_status(str(e), error=True)
            return False
        if not ok:
            self.set_status("Dependencies not installed: they are offered again on the first box.", error=True)
        return ok

    # ---- end ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        """The effect's cleanup: no placement, no observer left on the scene's ROI nodes."""
        self.placing = False
        self.stop_roi_placement()
        self.watch_roi(None)
