"""``state.json`` of the weights cache: licence acceptances and recorded sha256 values, written atomically and
updated under the state lock (:func:`update_state`)."""
from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
import warnings
from typing import Optional

from ..errors import MedSegWarning
from .cache import cache_dir, makedirs, state_lock, state_path
from .registry import ModelEntry


def read_state() -> dict:
    path = state_path()
    try:
        with open(path, "r", encoding="utf-8") as f:
            state = json.load(f)
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        state = {}
    except (OSError, ValueError) as e:
        warnings.warn(f"The weights cache state file {path} is unreadable ({e}); licence acceptances and recorded "
                      "hashes are ignored until it is rewritten.", MedSegWarning, stacklevel=3)
        state = {}
    state.setdefault("version", 1)
    for key in ("licences", "files", "verified"):
        if not isinstance(state.get(key), dict):
            state[key] = {}
    return state


def write_state(state: dict) -> None:
    path = state_path()
    makedirs(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".json", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        make_public(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def make_public(path) -> None:
    from ..io import make_public

    make_public(path)


def update_state(fn) -> dict:
    """Read-modify-write of state.json under the state lock (no concurrent change is lost)."""
    makedirs(cache_dir())
    with state_lock():
        state = read_state()
        fn(state)
        write_state(state)
    return state


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def record(entry: ModelEntry) -> Optional[dict]:
    rec = read_state()["files"].get(entry.name)
    return rec if isinstance(rec, dict) and isinstance(rec.get("sha256"), str) else None
