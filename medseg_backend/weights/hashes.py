"""Hash policy and file checks (``sha256`` of a file = its identity).

* ``lite-medsam``: the hash is authoritative; a different file is refused;
* ``medsam-vit-b``: the hash is only *known* (measured on a third-party mirror); a different file gets a
  :class:`~medseg_backend.errors.MedSegWarning` and is accepted when its layout checks out;
* ``universeg-v1``: no hash is published; the sha256 of the first file that is installed (fetched or imported)
  is recorded and shown, and from then on it is the expected hash ("trust on first use"): `verify` checks
  against it and a different file is refused until `medseg models delete NAME` forgets the record.

Loading (:func:`check_installed_hash`): the installed file is checked against its expected sha256 (recorded, or
authoritative) in full on its first use in each process (the worker, a command), and again in that process
whenever its size, mtime, ctime or inode change; a flipped byte or an altered record is refused with the fix,
before the model is built. No check is remembered across processes, so a file damaged on disk with its size and
mtime restored is still caught.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

from ..download import sha256_file
from ..errors import MedSegWarning, WeightsError
from .installed import refetch_hint
from .registry import ModelEntry
from .state import now, update_state


#: Installed files hashed in full by this process: path -> (size, mtime_ns, ctime_ns, inode, sha256). A file is
#: hashed on its first use in each process lifetime (a worker, a command) and again whenever any of these change.
_VERIFIED_HERE: dict = {}


def _identity(st: os.stat_result) -> tuple:
    """What changes when a file is written or touched, its mtime reset included: ``st_ctime_ns`` is set by the
    system on every change and cannot be set back (POSIX; on Windows it is the creation time, where the full hash
    on first use in each process is the guard)."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def check_installed_hash(entry: ModelEntry, path: Path, source: Optional[str], rec: Optional[dict]) -> None:
    """Compare the installed file with its expected sha256 (the record, else the authoritative hash): hashed in
    full on its first use in this process, then again only when its size, mtime, ctime or inode change; a
    mismatch raises WeightsError. Nothing is trusted across processes: a file damaged while no process used it,
    with its size and mtime put back, is caught by the next process's first use."""
    if rec is not None:
        expected, what = rec["sha256"], "the recorded"
    elif entry.sha256 is not None and entry.sha256_authoritative:
        expected, what = entry.sha256, "the official"
    else:
        return
    key = str(path)
    before = _identity(path.stat())
    if _VERIFIED_HERE.get(key) == before + (expected,):
        return
    digest = sha256_file(path)
    if digest != expected:
        _VERIFIED_HERE.pop(key, None)
        raise WeightsError(f"{entry.name} weights at {path} are damaged or were altered (sha256 {digest[:16]}..., "
                           f"{what} one is {expected[:16]}...): {refetch_hint(entry, source)}.")
    if _identity(path.stat()) == before:  # not changed while it was hashed
        _VERIFIED_HERE[key] = before + (expected,)


def check_layout(entry: ModelEntry, path: Path, prefix: str) -> None:
    """Raise WeightsError(``prefix: <loader message>``) unless ``path`` has ``entry``'s checkpoint layout."""
    from ..models.loader import load_state_dict_checked  # lazy: torch is only needed here

    try:
        load_state_dict_checked(str(path), entry.arch)
    except WeightsError as e:
        raise WeightsError(f"{prefix}: {e}") from None
    except Exception as e:  # defensive: never let a raw loader error through
        raise WeightsError(f"{prefix}: {path} is not a readable {entry.title} checkpoint ({type(e).__name__}); "
                           "give the original file.") from None


def check_hash(entry: ModelEntry, digest: str, size: int, rec: Optional[dict], what: str) -> None:
    """Apply the hash policy of the module docstring to a file about to be installed."""
    if rec is not None:
        if digest != rec["sha256"]:
            raise WeightsError(f"{what} refused for {entry.name}: sha256 {digest} differs from the one recorded on "
                               f"{rec.get('recorded_at', '?')} ({rec['sha256']}); if the publisher changed the file, run "
                               f"`medseg models delete {entry.name}` first.")
        return
    if entry.sha256 is None:
        return
    if entry.sha256_authoritative:
        if (entry.size is not None and size != entry.size) or digest != entry.sha256:
            raise WeightsError(f"{what} refused for {entry.name}: the file ({size} bytes, sha256 {digest}) is not the "
                               f"official one ({entry.size} bytes, sha256 {entry.sha256}); get it from {entry.page}.")
    elif digest != entry.sha256:
        warnings.warn(f"{entry.name}: sha256 {digest} differs from the known (non-authoritative) {entry.sha256}; "
                      "accepted because the layout matches; the new hash is recorded.", MedSegWarning, stacklevel=3)


def remember(entry: ModelEntry, digest: str, size: int, source: str) -> None:
    rec = {"sha256": digest, "size": size, "source": source, "filename": entry.filename, "recorded_at": now()}
    update_state(lambda s: s["files"].__setitem__(entry.name, rec))


def forget_verified(path: Path) -> None:
    """Forget this process's full check of ``path`` (the file is being deleted)."""
    _VERIFIED_HERE.pop(str(path), None)
