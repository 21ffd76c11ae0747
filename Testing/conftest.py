"""Shared pytest fixtures.

`shared_dir` is the project's shared data folder (`../shared` next to the checkout, or $MEDSEG_SHARED_DIR);
tests that need it are skipped with a clear reason when it is absent. `data_dir` is the bundled sample
data in `Testing/Data`.
"""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_path() -> Path:
    env = os.environ.get("MEDSEG_SHARED_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared"


SHARED_DIR = _shared_path()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DIR} (set MEDSEG_SHARED_DIR)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return REPO_ROOT / "Testing" / "Data"


@pytest.fixture(autouse=True)
def _isolated_medseg_home(tmp_path_factory, monkeypatch):
    """Never touch the user's real weights cache from tests: each test gets an empty MEDSEG_HOME."""
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path_factory.mktemp("medseg_home")))


# --- Slicer extension: headless MRML scene (slicer-core) ----------------------------------------------------------
SLICER_MODULE_DIR = REPO_ROOT / "MedSegSlicer"
if str(SLICER_MODULE_DIR) not in sys.path:  # the Qt-free package MedSegSlicerLib lives there
    sys.path.insert(0, str(SLICER_MODULE_DIR))


@pytest.fixture
def slicer_scene(monkeypatch):
    """A real MRML scene from slicer-core with the application logic, colour nodes and the Volumes, Segmentations
    and Markups logics (``MedSegSlicerLib.scene.SceneContext.headless()``). ``slicer.mrmlScene`` and
    ``slicer.modules.<name>.logic()`` point at it for the test, so ``slicer.util`` helpers work too."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)")
    from MedSegSlicerLib.scene import SceneContext

    ctx = SceneContext.headless()
    modules = types.SimpleNamespace(**{
        name: types.SimpleNamespace(logic=(lambda logic=logic: logic))
        for name, logic in (("volumes", ctx.volumes_logic), ("segmentations", ctx.segmentations_logic),
                            ("markups", ctx.markups_logic))})
    monkeypatch.setattr(slicer, "mrmlScene", ctx.scene, raising=False)
    monkeypatch.setattr(slicer, "modules", modules, raising=False)
    yield ctx
    ctx.clear()
