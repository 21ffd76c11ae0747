"""Shared pytest fixtures.

`shared_dir` is the project's shared data folder (`../shared` next to the checkout, or $MEDSEG_SHARED_DIR);
tests that need it are skipped with a clear reason when it is absent. `data_dir` is the bundled sample
data in `Testing/Data`.
"""
from __future__ import annotations

import os
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
