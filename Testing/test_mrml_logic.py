"""The module's logic without Qt (MedSegSlicerLib.logic.MedSegLogic): questions go through callbacks, a question
with no one to answer it is a clear error, a declined question installs and downloads nothing, and the effects'
run-in-flight calls reach the segmenter of the current scene."""
from __future__ import annotations

import types
from pathlib import Path

import pytest

from medseg_backend import weights
from MedSegSlicerLib import logic as logic_module
from MedSegSlicerLib.errors import MedSegError
from MedSegSlicerLib.jobs import Request
from MedSegSlicerLib.logic import MedSegLogic

EMPTY_PLAN = types.SimpleNamespace(empty=True)
DOWNLOADED = "medsam-vit-b"        # a download without licence acceptance
LICENSED = "universeg-v1"          # needs its licence accepted


@pytest.fixture
def no_installs(monkeypatch):
    """Every dependency counts as installed; a download only records that it was asked for."""
    monkeypatch.setattr(logic_module.deps, "install_plan", lambda: EMPTY_PLAN)
    fetched = []

    def fake_fetch(name, progress=None, cancel=None, **_kw):
        fetched.append(name)
        progress(0.5, f"half of {name}")
        return Path("/weights") / f"{name}.pth"

    monkeypatch.setattr(weights, "fetch", fake_fetch)
    return fetched


def test_declined_download_raises_and_fetches_nothing(no_installs):
    questions = []
    logic = MedSegLogic(ask=lambda question, title: questions.append((question, title)) or False)
    with pytest.raises(MedSegError, match=f"{DOWNLOADED} weights are not installed: download or import them"):
        logic.ensureWeights(DOWNLOADED, ask=True)
    assert no_installs == []
    assert len(questions) == 1 and questions[0][0].startswith("Download the ") and questions[0][1] == "MedSegSlicer"
    assert not weights.status(DOWNLOADED)["installed"]


def test_a_question_without_a_callback_is_an_error_not_a_download(no_installs):
    with pytest.raises(MedSegError, match="Download the .* no one to ask here.*ask=False"):
        MedSegLogic().ensureWeights(DOWNLOADED, ask=True)
    assert no_installs == []


def test_accepted_download_runs_through_the_progress_callback(no_installs):
    shown = []

    def run_with_progress(work, title):
        from MedSegSlicerLib.jobs import run_blocking

        return run_blocking(work, label=title, progress=lambda f, m: shown.append((title, f, m)))

    logic = MedSegLogic(ask=lambda question, title: True, run_with_progress=run_with_progress)
    path = logic.ensureWeights(DOWNLOADED, ask=True)
    assert path == str(Path("/weights") / f"{DOWNLOADED}.pth") and no_installs == [DOWNLOADED]
    assert (f"Downloading {DOWNLOADED}", 0.5, f"half of {DOWNLOADED}") in shown
    # without a progress callback the download runs on the calling thread, and ask=False asks nothing
    assert MedSegLogic().ensureWeights(DOWNLOADED, ask=False) == path


def test_licence_question_goes_to_its_own_callback_and_a_refusal_is_remembered_as_none(no_installs):
    asked = []
    logic = MedSegLogic(ask=lambda q, t: pytest.fail("the licence is not asked through ask"),
                        accept_licence=lambda text, title: asked.append(title) or False)
    with pytest.raises(MedSegError, match="licence of universeg-v1 was not accepted"):
        logic.ensureWeights(LICENSED, ask=False)
    assert asked == [f"Licence of {LICENSED}"] and not weights.licence_accepted(LICENSED)
    assert no_installs == []
    with pytest.raises(MedSegError, match="Do you accept this licence\\?|no one to ask here"):
        MedSegLogic().askLicence(LICENSED)
    assert MedSegLogic(ask=lambda q, t: True).askLicence(LICENSED)     # accept_licence defaults to ask
    assert weights.licence_accepted(LICENSED)


def test_missing_dependencies_declined_or_without_installer(monkeypatch):
    plan = types.SimpleNamespace(empty=False, question=lambda: "MedSegSlicer needs to install into Slicer's "
                                 "Python:\n- torch", summary=lambda: "torch", upgrades=[], optional=[])
    monkeypatch.setattr(logic_module.deps, "install_plan", lambda: plan)
    assert MedSegLogic(ask=lambda q, t: False).ensureDependencies(ask=True) is False
    with pytest.raises(MedSegError, match="MedSegSlicer needs to install into Slicer's Python: - there is no one"):
        MedSegLogic().ensureDependencies(ask=True)
    with pytest.raises(MedSegError, match="torch cannot be installed here"):
        MedSegLogic(ask=lambda q, t: True).ensureDependencies(ask=True)
    installed, told = [], []
    remaining = iter([plan, EMPTY_PLAN])
    monkeypatch.setattr(logic_module.deps, "install_plan", lambda: next(remaining))
    plan.upgrades = ["numpy"]
    logic = MedSegLogic(ask=lambda q, t: True, inform=told.append,
                        installer=types.SimpleNamespace(install=installed.append))
    assert logic.ensureDependencies(ask=True) is True
    assert installed == [plan] and told == ["Packages were upgraded: restart Slicer before using MedSegSlicer."]


def test_settings_go_through_remember_and_the_device_reaches_the_segmenter(slicer_scene, monkeypatch, tmp_path):
    saved = {}

    class Remembering(MedSegLogic):
        def _remember(self, key, value):
            saved[key] = value

    logic = Remembering(context_factory=lambda: slicer_scene)
    segmenter = logic.segmenter
    assert segmenter.ctx is slicer_scene and logic.segmenter is segmenter        # one per scene
    logic.setDevice("cpu")
    assert segmenter.device == "cpu" and saved[MedSegLogic.SETTINGS_DEVICE] == "cpu"
    logic.setCacheFolder(str(tmp_path))
    assert logic.cacheFolder() == str(tmp_path) and saved[MedSegLogic.SETTINGS_CACHE] == str(tmp_path)


def test_the_device_has_one_home_and_on_cpu_follows_pick_devices_rule(slicer_scene, monkeypatch):
    """The Logic and its segmenter read one device setting (a bad one is refused, nothing changed), and onCpu
    applies devices.pick_device's 'auto' rule (CUDA, else MPS, else CPU) to the worker's torch facts."""
    from medseg_backend.worker import client as worker_client

    logic = MedSegLogic(context_factory=lambda: slicer_scene)
    logic._remember = lambda key, value: None
    segmenter = logic.segmenter
    logic.setDevice("cuda")
    assert logic.device == segmenter.device == "cuda" and segmenter.settings is logic.settings
    with pytest.raises(MedSegError, match="Unknown device 'tpu': use auto, cpu, cuda, mps."):
        logic.setDevice("tpu")
    assert logic.device == segmenter.device == "cuda"
    facts = types.SimpleNamespace(info={}, reset=lambda: None)     # a device change resets the worker's models
    monkeypatch.setattr(worker_client, "shared_client", lambda: facts)
    assert logic.onCpu() is None                               # the worker has not reported torch yet
    facts.info = {"cuda": False, "mps": True}
    assert logic.onCpu() is True                               # cuda asked, torch sees none
    logic.setDevice("auto")
    assert logic.onCpu() is False                              # auto -> mps, as pick_device picks
    facts.info = {"cuda": False, "mps": False}
    assert logic.onCpu() is True
    logic.setDevice("cpu")
    assert logic.onCpu() is True and segmenter.device == "cpu"


def test_the_run_in_flight_is_the_segmenters_runner(slicer_scene):
    """Issue 25: one runner-facing object (the scene's JobRunner), no forwarding layer on Logic or Segmenter."""
    from MedSegSlicerLib.jobs import poll_step
    from MedSegSlicerLib.segmenter import Segmenter

    logic = MedSegLogic(context_factory=lambda: slicer_scene)
    for name in ("busy", "running_label", "poll", "cancel", "partialSlices", "start"):
        assert not hasattr(MedSegLogic, name), name
    for name in ("busy", "running_label", "poll", "cancel", "partial_slices"):
        assert not hasattr(Segmenter, name), name
    runner = logic.segmenter.runner
    assert not runner.running
    # a request with in-process parts runs in a thread of this process: no worker needed for this check
    request = Request("sleep", {"seconds": 30.0, "steps": 300}, local={"in_process": True})
    run = types.SimpleNamespace(request=request, label="nap", guard=None)
    logic.segmenter.start(run)
    assert runner.running and runner.label == "nap"
    runner.cancel()
    outcome = runner.wait(10)
    assert outcome is not None and outcome.status == "cancelled"
    fraction, _message, last = poll_step(runner)
    assert last is None and not runner.running


def test_time_estimate_before_a_long_cpu_run(slicer_scene):
    """Issue 16: a CPU run gets a time estimate (slices x measured seconds per slice) before it starts; a GPU or
    an unknown device gets none."""
    import numpy as np

    from MedSegSlicerLib import geometry
    from MedSegSlicerLib.segmenter import CPU_SECONDS_PER_SLICE, Segmenter

    vol = slicer_scene.add_volume_from_array(np.zeros((40, 32, 32), np.int16), name="v")
    seg = Segmenter(slicer_scene, device="cpu")
    box = (4, 4, 5, 20, 20, 34)                       # 30 axial slices
    lite = seg.prepare_medsam(vol, [box], model="lite-medsam")
    vit = seg.prepare_medsam(vol, [box], model="medsam-vit-b", slice_range=(10, 19))
    assert Segmenter.estimate_seconds(lite, on_cpu=True) == 30 * CPU_SECONDS_PER_SLICE["lite-medsam"]
    assert Segmenter.estimate_seconds(vit, on_cpu=True) == 10 * CPU_SECONDS_PER_SLICE["medsam-vit-b"]
    assert Segmenter.estimate_seconds(lite, on_cpu=False) is None
    assert Segmenter.estimate_seconds(lite, on_cpu=None) is None
    assert geometry.volume_shape(vol) == (40, 32, 32)


def test_a_cancelled_modality_question_exports_nothing(tmp_path):
    """Issue 22 item 8: PythonQt's QInputDialog.getItem gives the first item on Cancel, so the effect asks with a
    dialog whose exec() result it passes on: None (cancelled) writes nothing; only the listed modalities are taken."""
    import json

    import numpy as np
    from medseg_backend.universeg import Example

    img = np.arange(400, dtype=np.int16).reshape(20, 20)
    lab = np.zeros((20, 20), np.uint8)
    lab[5:9, 5:9] = 1
    examples = [Example(np.stack([img] * 2), np.stack([lab] * 2), "s", source="volume", slices=(0, 1))]
    logic = MedSegLogic()
    folder = tmp_path / "lib"
    assert logic.exportExampleLibrary(str(folder), examples, "liver", None) is None
    assert not folder.exists() or not any(folder.iterdir())
    with pytest.raises(MedSegError, match="Unknown modality 'XR': use CT, MR, other"):
        logic.exportExampleLibrary(str(folder), examples, "liver", "XR")
    path = logic.exportExampleLibrary(str(folder), examples, "liver", "MR")
    manifest = json.loads(next(Path(path).glob("*.json")).read_text(encoding="utf-8"))
    assert manifest["modality"] == "MR"
