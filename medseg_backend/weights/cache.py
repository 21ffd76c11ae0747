"""Where the weights cache lives, and the inter-process locks over it.

Cache folder (:func:`cache_dir`): ``$MEDSEG_HOME`` if set, else the platform's user cache
(Linux ``$XDG_CACHE_HOME/medseg`` or ``~/.cache/medseg``, macOS ``~/Library/Caches/medseg``, Windows
``%LOCALAPPDATA%\\medseg\\Cache``), so every Slicer version and the command line share one copy. Layout::

    <cache>/weights/<filename>        installed weights (only complete, verified files ever appear here)
    <cache>/downloads/<filename>.part an interrupted download, resumed by the next `fetch` (removed by `delete`)
    <cache>/state.json                licence acceptances and recorded sha256 values (written atomically)
    <cache>/locks/*.lock              inter-process locks (:mod:`medseg_backend.locking`)

Concurrency: `fetch`, `import` and `delete` of one model hold that model's lock (:func:`model_lock`), so several
processes (the CLI, Slicer's worker, batch jobs) end with one installed file and one record; the others wait,
saying "waiting for another process installing NAME", and then find the file installed. Updates of
``state.json`` hold the state lock (:func:`state_lock`; read-modify-write never loses another's change).
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Mapping, Optional, Union

from ..errors import InputError, MedSegWarning, WeightsError
from ..locking import FileLock
from ..progress import CancelToken, ProgressCallback, report
from .registry import ModelEntry

PathLike = Union[str, os.PathLike]


def platform_cache_dir(platform: Optional[str] = None, environ: Optional[Mapping[str, str]] = None,
                       home: Optional[PathLike] = None) -> Path:
    """The per-user cache folder of the platform (``MEDSEG_HOME`` not considered)."""
    platform = sys.platform if platform is None else platform
    environ = os.environ if environ is None else environ
    home = Path(home) if home is not None else Path.home()
    if platform.startswith("win"):
        base = environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "medseg" / "Cache"
    if platform == "darwin":
        return home / "Library" / "Caches" / "medseg"
    xdg = environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".cache"
    return base / "medseg"


def cache_dir() -> Path:
    """``$MEDSEG_HOME`` if set, else :func:`platform_cache_dir`. Not created here."""
    env = os.environ.get("MEDSEG_HOME", "").strip()
    if env:
        return Path(os.path.expanduser(env))
    return platform_cache_dir()


def weights_dir() -> Path:
    return cache_dir() / "weights"


def downloads_dir() -> Path:
    return cache_dir() / "downloads"


def state_path() -> Path:
    return cache_dir() / "state.json"


def locks_dir() -> Path:
    return cache_dir() / "locks"


def makedirs(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"Cannot create the weights cache folder {path} ({e.strerror}): set MEDSEG_HOME to a "
                           "writable folder.") from None


def writable(path: Path) -> None:
    """Create ``path`` if needed and make sure new files can be made there (before any download or copy)."""
    from ..io import check_writable_folder

    makedirs(path)
    try:
        check_writable_folder(path, "weights cache")
    except InputError as e:
        raise WeightsError(f"{str(e).rstrip('.')}; or set MEDSEG_HOME to a writable folder.") from None


def _say(progress: Optional[ProgressCallback]):
    """Where a "waiting for another process" message goes: the progress callback, else a MedSegWarning."""
    def on_wait(message: str) -> None:
        if progress is not None:
            report(progress, 0.0, message)
        else:
            warnings.warn(message, MedSegWarning, stacklevel=4)
    return on_wait


def model_lock(entry: "ModelEntry", doing: str, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelToken] = None) -> FileLock:
    writable(locks_dir())
    return FileLock(locks_dir() / f"{entry.name}.lock", what=f"{doing} {entry.name}", on_wait=_say(progress),
                    cancel=cancel)


def state_lock() -> FileLock:
    makedirs(locks_dir())
    return FileLock(locks_dir() / "state.lock", what="updating the weights cache state", timeout=120)
