"""The editing session of a MedSegSlicer effect, Qt-free: what the effect's panel and views show and do.

One :class:`EditingSession` per effect object holds the run state that used to hide in the Qt effect: the box
(one ROI per segment, drawn on one slice and given the product's depth), encoding ahead while the box is still
being adjusted, the preview run and a preview queued behind another job, the slices a progressive run has
finished (shown at most every :data:`PARTIAL_INTERVAL` s), cancel, Apply (through :mod:`.editing`) and the list of
doubtful slices. The Qt effect forwards widget and view events to it and draws :meth:`EditingSession.drawn`. The
box's part lives in :mod:`.session_box`, the view events (drag a box, fix a slice, keys) in :mod:`.session_views`:
the two halves of the one class, by job.

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
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from medseg_backend import slicing

from . import brush, editing, geometry, labelmaps, preview, review, segments
from .effect_state import EffectState
from .errors import InputError, MedSegError
from .jobs import poll_step
from .session_around import EncodingAround
from .session_box import SegmentBox
from .session_views import ViewInteraction

log = logging.getLogger("MedSegSlicer")

IDLE, ENCODING, PREVIEWING = "idle", "encoding", "previewing"

#: The progressive preview is redrawn at most this often (seconds).
PARTIAL_INTERVAL = 0.5
#: Runs estimated longer than this on a CPU are confirmed first (with the estimate).
LONG_RUN_SECONDS = 60


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
    """A preview waiting for the job in front of it to stop (``call``: another run of the session, e.g.
    :meth:`~.session_box.SegmentBox.run_all`, instead of the preview)."""
    auto: bool = False
    seed: Optional[Dict[str, Any]] = None
    call: Optional[Callable[[], Any]] = None


class EditingSession(SegmentBox, ViewInteraction, EncodingAround):
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
      ``review_segment()`` -> bool (also write the doubtful slices on Apply): what Apply uses;
    * ``strokes`` (``propagate`` / ``segment``), ``examples`` (an :class:`.session_examples.ExampleSlices`, told of
      each Apply) and ``boxes`` (a plain drag draws the box): what the effect's strokes and drags do."""

    def __init__(self, owner: str, *, scene, editor_node, runner, prepare, mask_from_result,
                 encode=None, model_name=lambda: "", ensure=None, installed=None, confirm=None, on_cpu=None,
                 app_logic=None, defer=None, wake=None, apply_target=None, confirm_visible=None,
                 review_segment=None, clock=time.monotonic, encode_around=None, strokes: str = "propagate",
                 examples=None, boxes: bool = True) -> None:
        self.owner = owner
        #: what a paint / erase stroke does: ``propagate`` (MedSAM: the slice seeds a re-propagation) or ``segment``
        #: (UniverSeg: written at once; the slice becomes an example)
        self.strokes = strokes
        self.brush_mm = brush.DEFAULT_DIAMETER_MM
        #: the slices the user painted or corrected (UniverSeg's examples), :class:`.session_examples.ExampleSlices`
        self.examples = examples
        #: a plain left-drag in a slice view draws the box (MedSAM); False leaves it to Slicer (UniverSeg)
        self.boxes = boxes
        #: encoding before the box: ``encode_around(volume, axis, k)`` starts it in the worker and returns its
        #: handle (``update()``, ``stop()``, ``running``; :class:`.segmenter.EncodeAround`), None for effects without
        self.encode_around = encode_around
        self.around = None                # the running encoding before the box
        self.around_at: Optional[Tuple[str, str, int]] = None    # (volume ID, axis, centre slice) it started at
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
    def running_ours(self) -> bool:
        """A job the session started runs (encoding ahead or a preview)."""
        return self.phase != IDLE

    @property
    def needs_polling(self) -> bool:
        """The effect's timer must tick: a job of ours runs or an auto-update is due."""
        return self.phase != IDLE or self.queued is not None or self.auto_due is not None or \
            (self.around is not None and self.around.running)

    def pending(self):
        """The preview waiting for Apply (:func:`.preview.current`), or None."""
        return preview.current(self.scene(), self.editor_node(), owner=self.owner)

    def review_rows(self) -> List[Tuple[int, str]]:
        """The doubtful slices of the last preview, least confident first: ``(slice, text)``."""
        return [(int(row["slice"]), review.describe(row)) for row in self.flagged]

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

    # ---- runs ---------------------------------------------------------------------------------------------
    def _prepare(self, seed=None, roi=None, seed_source=None):
        volume, segmentation, segment_id = self.inputs()
        if self.boxes and roi is None and self.roi() is None:
            raise InputError("This segment has no box yet: drag a box around the structure in a slice view (or use "
                             "Draw ROI), then preview.")
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
                then=None, prepared=None) -> bool:
        """Start the preview run (True when started or queued). ``auto``: a moved box (never a question);
        ``seed``: ``{"slice": k, "direction": ...}`` re-propagates from the segment's slice ``k`` (of
        ``seed_source``, a segmentation node, instead of the segment when given); ``roi``: a voxel box instead of
        the segment's box; ``then(result)``: called instead of showing the result (a fix's next step);
        ``prepared()``: ``(volume, segmentation, segment_id, prepared run)`` instead of the segment's box run."""
        if self.phase == ENCODING or (self.phase == PREVIEWING and auto):
            # stop the encoding ahead (what is encoded stays cached) or the outdated preview, then preview
            self.runner().cancel()
            call = None if prepared is None else (lambda: self.preview(then=then, prepared=prepared))
            self.queued = Queued(auto=auto, seed=seed, call=call)
            self.set_status("Starting the preview...")
            return True
        if self.busy:
            self.set_status(f"'{self.runner().label}' is still running: wait for it or press Cancel.", error=True)
            return False
        try:
            if self.ensure is not None and not self.ensure(self.model_name()):
                self.set_status("Dependencies not installed: nothing was run.", error=True)
                return False
            volume, segmentation, segment_id, prepared = (self._prepare(seed, roi, seed_source) if prepared is None
                                                          else prepared())
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
        if self.around is not None and self.around.update() != "running":
            self.around = None            # done, pre-empted by a run, stopped or failed: what it encoded is cached
        if self.phase == IDLE:
            if self.queued is not None and not self.busy:
                self._start_queued()
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
            self._start_queued()

    def _start_queued(self) -> None:
        queued, self.queued = self.queued, None
        if queued.call is not None:
            queued.call()
        else:
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
        if self.examples is not None:
            self.examples.applied(volume, segmentation, segment_id)
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
        """The effect's cleanup: no placement, no observer left on the scene's ROI nodes, no encoding."""
        self.stop_encoding()
        self.placing = False
        self.stop_roi_placement()
        self.watch_roi(None)
