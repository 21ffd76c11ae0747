"""The job runner against a real MRML scene, with the work in the model worker process: results and arrays come back
to the polling thread, cancel ends the run within a second and leaves the segment as it was, errors become one
readable message, a second run is refused, and a volume deleted or replaced during the run discards the result."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import SimpleITK
from MedSegSlicerLib import geometry, labelmaps  # noqa: E402
from MedSegSlicerLib.jobs import poll_step  # noqa: E402
from MedSegSlicerLib.segmenter import Segmenter  # noqa: E402
from MedSegSlicerLib.errors import InputError, JobBusyError  # noqa: E402
from MedSegSlicerLib.jobs import JobRunner, NodeGuard, Request  # noqa: E402

TIMEOUT = 60.0


@pytest.fixture
def scene_with_segment(slicer_scene, data_dir):
    d = data_dir / "totalseg_ct_sm"
    vol = slicer_scene.load_volume(str(d / "ct.nii.gz"), "ct")
    labels = SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(str(d / "labels.nii.gz")))
    seg = slicer_scene.add_segmentation("seg", vol)
    sid = labelmaps.write_mask(seg, labels == 5, vol, name="liver")
    return slicer_scene, vol, seg, sid, labels


def gated_work(gate: threading.Event, result="done", error=None):
    """An in-process job (as the download dialog runs) that reports progress, waits for ``gate`` (or a cancel),
    then returns / raises."""
    def work(progress, cancel):
        progress(0.25, "quarter")
        while not gate.wait(0.005):
            cancel.check()
        cancel.check()
        if error is not None:
            raise error
        progress(1.0, "finished")
        return result
    return work


def sleep_request(seconds=0.0, fail=None, echo=None, **params):
    """Model work for the worker process: its diagnostic ``sleep`` request (progress in 4 steps, a cancellable wait,
    then the echoed arrays or the asked failure)."""
    arrays = dict(echo or {})
    return Request("sleep", dict(seconds=seconds, steps=4, fail=fail, echo=list(arrays), **params), arrays=arrays)


def poll_until_done(runner: JobRunner):
    t0 = time.monotonic()
    while time.monotonic() - t0 < TIMEOUT:
        outcome = runner.poll()
        if outcome is not None:
            return outcome
        time.sleep(0.005)
    raise AssertionError("job did not finish")


def test_success_result_and_progress_from_the_worker_process(scene_with_segment):
    ctx, vol, seg, sid, labels = scene_with_segment
    core = Segmenter(ctx)
    runner = core.runner
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    runner.start(sleep_request(1.0, echo={"data": data}, value=7), label="unit", guard=NodeGuard(ctx.scene, vol, [seg]))
    assert runner.running and runner.poll() is None
    t0 = time.monotonic()
    while runner.progress()[0] < 0.25 and time.monotonic() - t0 < TIMEOUT:
        time.sleep(0.005)
    assert runner.progress() == (0.25, "step 2/4")
    outcome = poll_until_done(runner)
    assert outcome.ok and outcome.status == "succeeded" and outcome.label == "unit", outcome.message
    np.testing.assert_array_equal(outcome.result.data, data)          # arrays travel through the session folder
    assert outcome.result.data.dtype == np.int16 and outcome.result.value == 7
    assert outcome.result.pid == core.worker.pid != os.getpid()         # the work ran in the worker process
    assert not runner.running and runner.poll() is None   # the outcome is delivered once


def test_in_process_callables_still_run_in_a_thread(scene_with_segment):
    """Light in-process work (the weights download dialog) keeps the thread path with the same outcomes."""
    runner = JobRunner()
    gate = threading.Event()
    seen_thread = []

    def work(progress, cancel):
        seen_thread.append(threading.current_thread())
        return gated_work(gate, result=np.ones(3))(progress, cancel)

    runner.start(work, label="download")
    t0 = time.monotonic()
    while runner.progress()[1] != "quarter" and time.monotonic() - t0 < TIMEOUT:
        time.sleep(0.005)
    assert runner.progress() == (0.25, "quarter")
    gate.set()
    outcome = poll_until_done(runner)
    assert outcome.ok
    np.testing.assert_array_equal(outcome.result, np.ones(3))
    assert seen_thread[0] is not threading.current_thread()
    runner.start(gated_work(threading.Event()), label="download")
    runner.cancel()
    assert poll_until_done(runner).status == "cancelled"


def test_cancel_leaves_segment_untouched(scene_with_segment):
    ctx, vol, seg, sid, labels = scene_with_segment
    before = labelmaps.segment_to_array(seg, sid, vol)
    core = Segmenter(ctx)
    core.runner.start(sleep_request(600.0), label="long run", guard=NodeGuard(ctx.scene, vol, [seg]))
    t0 = time.monotonic()
    while core.runner.progress()[1] == "long run: starting" and time.monotonic() - t0 < TIMEOUT:
        time.sleep(0.005)       # the worker has started the request
    t0 = time.monotonic()
    assert core.runner.cancel()
    outcome = poll_until_done(core.runner)
    assert time.monotonic() - t0 <= 1.0
    assert outcome.status == "cancelled" and "nothing was written" in outcome.message
    assert outcome.result is None
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, vol), before)
    assert not core.runner.cancel()   # nothing running any more


def test_errors_become_readable_messages(scene_with_segment, caplog):
    ctx, vol, seg, sid, labels = scene_with_segment
    runner = Segmenter(ctx).runner
    runner.start(sleep_request(fail={"type": "InputError", "message": "Box 1 is outside the volume: move the ROI."}),
                 label="MedSAM")
    outcome = poll_until_done(runner)
    assert outcome.status == "failed"
    assert outcome.message == "Box 1 is outside the volume: move the ROI."
    assert isinstance(outcome.error, InputError)
    runner.start(sleep_request(fail={"type": "ZeroDivisionError", "message": "division by zero\nsecond line"}),
                 label="UniverSeg")
    outcome = poll_until_done(runner)
    assert outcome.status == "failed"
    assert outcome.message.startswith("UniverSeg failed with ZeroDivisionError: division by zero:")
    assert "\n" not in outcome.message
    assert "Traceback" in caplog.text   # the worker's traceback goes to the log, not the message box


def test_second_run_is_refused_while_one_runs(scene_with_segment):
    ctx, vol, seg, sid, labels = scene_with_segment
    core = Segmenter(ctx)
    core.runner.start(sleep_request(0.5), label="MedSAM (lite-medsam)")
    with pytest.raises(JobBusyError, match=r"'MedSAM \(lite-medsam\)' is still running.*Cancel"):
        core.runner.start(sleep_request(), label="second")
    prepared = core.prepare_medsam(vol, [(40, 30, 10, 60, 50, 12)])
    with pytest.raises(JobBusyError, match="still running"):
        core.run(prepared)
    assert poll_until_done(core.runner).ok
    core.runner.start(sleep_request(), label="third")   # free again
    assert poll_until_done(core.runner).ok


@pytest.mark.parametrize("change", ["delete volume", "replace voxels", "move volume", "delete segmentation"])
def test_inputs_changed_during_run_discard_result(scene_with_segment, change):
    import vtk

    ctx, vol, seg, sid, labels = scene_with_segment
    before = labelmaps.segment_to_array(seg, sid, vol)
    runner = Segmenter(ctx).runner
    runner.start(sleep_request(0.5, value="mask"), label="run", guard=NodeGuard(ctx.scene, vol, [seg]))
    if change == "delete volume":
        ctx.scene.RemoveNode(vol)
    elif change == "replace voxels":            # e.g. another series loaded into the same node
        image = vtk.vtkImageData()
        image.DeepCopy(vol.GetImageData())
        vol.SetAndObserveImageData(image)
    elif change == "move volume":
        t = ctx.add_linear_transform(np.array([[1, 0, 0, 5.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
        vol.SetAndObserveTransformNodeID(t.GetID())
    else:
        ctx.scene.RemoveNode(seg)
    assert runner.running
    outcome = poll_until_done(runner)
    assert outcome.status == "discarded" and outcome.result is None
    assert "result discarded" in outcome.message and "\n" not in outcome.message
    if change in ("replace voxels", "move volume"):
        vol.SetAndObserveTransformNodeID(None)
        np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, vol), before)


def test_guard_ignores_display_changes(scene_with_segment):
    ctx, vol, seg, sid, labels = scene_with_segment
    guard = NodeGuard(ctx.scene, vol, [seg])
    display = vol.GetDisplayNode()
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(350, 50)          # the user changes window/level while the model runs
    vol.SetName("renamed")
    seg.GetDisplayNode().SetOpacity(0.3)
    assert guard.problem() is None
    assert geometry.volume_to_array(vol).array.shape == labels.shape


def test_intensity_defaults_to_the_volume_window_level(scene_with_segment):
    ctx, vol, seg, sid, labels = scene_with_segment
    display = vol.GetDisplayNode()
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(350, 50)
    core = Segmenter(ctx)
    prepared = core.prepare_medsam(vol, [(40, 30, 10, 60, 50, 12)])
    assert prepared.info["intensity"] == "window:50,350"
    assert core.prepare_medsam(vol, [(40, 30, 10, 60, 50, 12)], intensity="mr").info["intensity"] == "mr"
    roi = ctx.add_roi("box")
    geometry.voxel_box_to_roi(roi, vol, (40, 30, 10, 60, 50, 12))
    prepared = core.prepare_medsam(vol, [roi], slice_range=(11, 20))
    assert prepared.info["boxes"] == [(40, 30, 11, 60, 50, 12)] and prepared.info["names"] == ["box"]
    with pytest.raises(InputError, match="No ROI selected"):
        core.prepare_medsam(vol, [None])
    with pytest.raises(InputError, match="No volume selected"):
        core.prepare_medsam(None, [roi])
    with pytest.raises(InputError, match="Unknown MedSAM model"):
        core.prepare_medsam(vol, [roi], model="sam2")


def test_missing_weights_and_unaccepted_licence_fail_readably(scene_with_segment):
    """Offline with no weights in the (empty, per-test) cache: the run fails with the weights store's one-line message
    and nothing is written."""
    ctx, vol, seg, sid, labels = scene_with_segment
    before = labelmaps.segment_to_array(seg, sid, vol)
    core = Segmenter(ctx, device="cpu")
    outcome = core.run(core.prepare_medsam(vol, [(40, 30, 10, 60, 50, 12)], model="medsam-vit-b",
                                           segmentation_node=seg))
    assert outcome.status == "failed"
    assert "medsam-vit-b weights are not installed" in outcome.message and "import" in outcome.message
    from MedSegSlicerLib import examples as ex

    arrays = ex.from_segments(seg, [sid], vol)
    outcome = core.run(core.prepare_universeg(vol, arrays, support_size=4, segmentation_node=seg))
    assert outcome.status == "failed" and "licence" in outcome.message.lower()
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, vol), before)


def test_progressive_preview_slices_arrive_before_the_result_and_match_it(scene_with_segment):
    """Issue 15: a MedSAM run through the worker sends each finished slice (middle slice first, encoded on its
    own) before the complete result; every partial slice equals that slice of the result."""
    from medseg_backend import slicing

    ctx, vol, seg, sid, labels = scene_with_segment
    core = Segmenter(ctx, device="cpu")
    box = list(slicing.bbox3d(labels == 3))
    mid = (box[2] + box[5]) // 2
    box[2], box[5] = mid - 2, mid + 2
    prepared = core.prepare_medsam(vol, [tuple(box)], intensity="window:40,400", segmentation_node=seg)
    assert prepared.request.params["partial"] is True
    core.start(prepared)
    got, outcome, t0 = [], None, time.monotonic()
    while outcome is None and time.monotonic() - t0 < 300:
        got += core.runner.partials()
        _f, _m, outcome = poll_step(core.runner)
        time.sleep(0.01)
    got += core.runner.partials()                     # nothing after the outcome: the job is gone
    assert outcome is not None and outcome.ok, outcome and outcome.message
    labels_out = outcome.result.labels
    assert [k for _o, _a, k, _m in got][0] == mid and sorted(k for _o, _a, k, _m in got) == list(range(box[2], box[5] + 1))
    for obj, axis, k, mask in got:
        assert obj == 1 and axis == "axial"
        np.testing.assert_array_equal(mask, labels_out[k] == 1)
