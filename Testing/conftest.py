"""Shared pytest fixtures.

Every input and reference the suite needs is bundled in ``Testing/Data`` (``data_dir``); nothing outside the
repository is read. Each fixture file is checked against ``Testing/Data/MANIFEST.sha256`` before use (see
``fixture_data.py``), so a corrupt fixture fails loudly. The reference fixtures are unpacked by
``litemedsam_2d_cases``, ``litemedsam_3d_cases``, ``litemedsam_3d_multiobject``, ``universeg_state`` and
``universeg_reference``.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTING_DIR = REPO_ROOT / "Testing"
if str(TESTING_DIR) not in sys.path:
    sys.path.insert(0, str(TESTING_DIR))

import fixture_data  # noqa: E402


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``Testing/Data``, with every file of its manifest checked once per session."""
    fixture_data.verify_all()
    return fixture_data.DATA_DIR


@pytest.fixture(scope="session")
def litemedsam_2d_cases(data_dir):
    """The 30 official LiteMedSAM 2-D reference cases (list of dicts, see ``fixture_data.litemedsam_2d_cases``)."""
    return fixture_data.litemedsam_2d_cases()


@pytest.fixture(scope="session")
def litemedsam_3d_cases(data_dir):
    """The 8 official LiteMedSAM 3-D reference cases by name (``volume_u8``, ``box3d``, ``gt``, ``ref_mask``, ...)."""
    return fixture_data.litemedsam_3d_cases()


@pytest.fixture(scope="session")
def litemedsam_3d_multiobject(data_dir):
    """The official four-box LiteMedSAM run on the ct_sm volume."""
    return fixture_data.litemedsam_3d_multiobject()


@pytest.fixture(scope="session")
def universeg_state(data_dir) -> Path:
    """UniverSeg v1 weights with random values in the official layout (``random_v1_state.pt``)."""
    return fixture_data.universeg_state_path()


@pytest.fixture(scope="session")
def universeg_reference(data_dir):
    """Inputs / float32 outputs of the released UniverSeg implementation with ``universeg_state`` (3 shapes)."""
    return fixture_data.universeg_reference_io()


@pytest.fixture(scope="session", autouse=True)
def _session_openvino_cache(tmp_path_factory):
    """One folder of OpenVINO encoder exports for the session (its keys are the weights' and code's hashes, so
    sharing it is safe): each model is exported once per session, not once per test or worker."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDSEG_OPENVINO_CACHE", str(tmp_path_factory.mktemp("openvino")))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _isolated_medseg_home(tmp_path_factory, monkeypatch):
    """Never touch the user's real weights cache from tests: each test gets an empty MEDSEG_HOME."""
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path_factory.mktemp("medseg_home")))


# --- Slicer extension: headless MRML scene (slicer-core) ----------------------------------------------------------
SLICER_MODULE_DIR = REPO_ROOT / "MedSegSlicer"
SLICER_TESTING_PYTHON_DIR = SLICER_MODULE_DIR / "Testing" / "Python"
# the Qt-free package MedSegSlicerLib lives in the module folder; the self-test's scenarios (test code, not shipped)
# in its Testing/Python folder
for _folder in (SLICER_TESTING_PYTHON_DIR, SLICER_MODULE_DIR):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))


@pytest.fixture
def slicer_scene(monkeypatch):
    """A real MRML scene from slicer-core with the application logic, colour nodes and the Volumes, Segmentations
    and Markups logics (``MedSegSlicerLib.scene.SceneContext.headless()``). ``slicer.mrmlScene`` and
    ``slicer.modules.<name>.logic()`` point at it for the test, so ``slicer.util`` helpers work too."""
    import slicer

    assert hasattr(slicer, "vtkMRMLScene"), "the installed 'slicer' package is not slicer-core (pip install slicer-core)"
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


@pytest.fixture
def ct_sample(slicer_scene, data_dir):
    """The bundled abdominal CT as a volume node of the headless scene, with its label map as an array
    (1 spleen, 2 kidney_right, 3 kidney_left, 5 liver): ``(ctx, volume, labels)``."""
    import SimpleITK

    d = data_dir / "totalseg_ct_sm"
    volume = slicer_scene.load_volume(str(d / "ct.nii.gz"), "ct")
    labels = SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(str(d / "labels.nii.gz")))
    return slicer_scene, volume, labels
