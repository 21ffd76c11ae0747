"""Putting weights into the cache and taking them out: fetch (download), import (a local file), delete.

Each holds the model's lock (:func:`.cache.model_lock`). Each download stages into its own
``<filename>.<pid>-<random>.part``; an interrupted one is kept as ``<filename>.part`` and resumed by the next
`fetch`. Nothing lands in ``<cache>/weights`` unless the size, hash (:mod:`.hashes`) and layout checks pass.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional

from ..download import download, sha256_file
from ..errors import DownloadError, InputError, OfflineError, WeightsError
from ..progress import CancelToken, ProgressCallback, check, report
from .cache import PathLike, cache_dir, downloads_dir, model_lock, state_path, weights_dir, writable
from .hashes import check_hash, check_layout, forget_verified, remember
from .installed import cache_file, expected_size, find_installed, not_installed_error
from .licences import require_licence
from .registry import ModelEntry, get_entry
from .state import make_public, read_state, record, update_state


#: No weights file is larger (the largest in the table, MedSAM ViT-B, has 375 MB): a download that keeps coming
#: past it (no length announced) or a file to import above it is refused before it fills the disk or memory.
MAX_WEIGHTS_BYTES = 2 * 1024 ** 3


def fetch(name: str, *, accept_licence: bool = False, progress: Optional[ProgressCallback] = None,
          cancel: Optional[CancelToken] = None, session=None) -> Path:
    """Make ``name``'s weights available and return their path (already installed: returned as is).

    Holds the model's lock (another process fetching or importing it is waited for). Downloads into a staging
    file of its own in ``<cache>/downloads`` (an interrupted transfer is kept as ``<filename>.part`` and resumed
    by the next call), verifies size / sha256 / layout, then moves the file atomically into ``<cache>/weights``.
    """
    entry = get_entry(name)
    require_licence(entry, accept_licence)
    path, _source = find_installed(entry)
    if path is not None:
        report(progress, 1.0, f"{entry.name} is already installed at {path}")
        return path
    if entry.url is None:
        raise not_installed_error(entry)
    writable(cache_dir())
    writable(downloads_dir())
    writable(weights_dir())
    lock = model_lock(entry, "installing", progress, cancel)
    with lock:
        path, _source = find_installed(entry)
        if path is not None:  # another process installed it while this one waited
            report(progress, 1.0, f"{entry.name} was installed by another process at {path}")
            return path
        return _fetch_locked(entry, progress, cancel, session)


def _fetch_locked(entry: ModelEntry, progress, cancel, session) -> Path:
    rec = record(entry)
    expected_sha = rec["sha256"] if rec else (entry.sha256 if entry.sha256_authoritative else None)
    want_size = expected_size(entry, rec)
    downloads = downloads_dir()
    resumable = downloads / (entry.filename + ".part")
    staged = downloads / f"{entry.filename}.{os.getpid()}-{os.urandom(4).hex()}"
    staged_part = Path(str(staged) + ".part")
    for old in downloads.glob(entry.filename + ".*-*.part"):
        _unlink(old)  # left by a process that crashed (none can be running: this one holds the lock)
    if resumable.is_file():
        os.replace(resumable, staged_part)  # resume the interrupted download
    try:
        digest = download(entry.url, staged, expected_sha256=expected_sha, expected_size=want_size,
                          progress=progress, cancel=cancel, session=session, keep_partial=True,
                          max_size=MAX_WEIGHTS_BYTES)
    except OfflineError as e:
        _keep_for_resume(staged_part, resumable)
        raise OfflineError(f"Cannot download {entry.name}: {entry.url.split('/')[2]} cannot be reached (the machine "
                           f"seems offline); get {entry.filename} from {entry.page} on another machine and run "
                           f"`medseg models import {entry.name} FILE`.") from e
    except DownloadError:
        _keep_for_resume(staged_part, resumable)
        raise
    except BaseException:
        _unlink(staged_part)
        raise
    try:
        check(cancel)
        report(progress, 1.0, f"Checking {entry.filename}")
        size = staged.stat().st_size
        check_hash(entry, digest, size, rec, "Download")
        check_layout(entry, staged, f"Downloaded file refused for {entry.name}")
        check(cancel)
        target = cache_file(entry)
        make_public(staged)
        os.replace(staged, target)
    except BaseException:
        _unlink(staged)
        raise
    remember(entry, digest, size, entry.url)
    report(progress, 1.0, f"{entry.name} installed at {target} (sha256 {digest})")
    return target


def _keep_for_resume(staged_part: Path, resumable: Path) -> None:
    """download() kept the staging .part (interrupted transfer): give it the name the next fetch resumes."""
    if staged_part.is_file():
        try:
            os.replace(staged_part, resumable)
        except OSError:
            _unlink(staged_part)


def import_weights(name: str, file: PathLike, *, accept_licence: bool = False,
                   progress: Optional[ProgressCallback] = None) -> Path:
    """Copy a local weights file into the cache after checking size, sha256 and layout; returns the new path.

    Nothing lands in the cache unless every check passes (temporary copy + atomic rename). Holds the model's
    lock while it checks against the record and installs, so concurrent imports / fetches cannot both record.
    """
    entry = get_entry(name)
    src = Path(os.path.expanduser(os.fspath(file)))
    if not src.is_file():
        raise InputError(f"File to import not found: {src}: give the path of the downloaded {entry.filename}.")
    require_licence(entry, accept_licence)
    size = src.stat().st_size
    rec = record(entry)
    if size > MAX_WEIGHTS_BYTES:
        raise WeightsError(f"Import refused for {entry.name}: {src} has {size} bytes, more than any weights file "
                           f"({MAX_WEIGHTS_BYTES}); give the downloaded {entry.filename}.")
    if entry.sha256_authoritative and rec is None and entry.size is not None and size != entry.size:
        raise WeightsError(f"Import refused for {entry.name}: {src} has {size} bytes, the official file has "
                           f"{entry.size} (truncated or another file); get it from {entry.page}.")
    writable(cache_dir())
    writable(weights_dir())
    check_layout(entry, src, f"Import refused for {entry.name}")  # first: names the model a wrong file holds
    digest = sha256_file(src)
    check_hash(entry, digest, size, rec, "Import")
    with model_lock(entry, "installing", progress):
        rec = record(entry)  # again: another process may have installed and recorded meanwhile
        check_hash(entry, digest, size, rec, "Import")
        return _import_locked(entry, src, digest, size)


def _import_locked(entry: ModelEntry, src: Path, digest: str, size: int) -> Path:
    target = cache_file(entry)
    fd, tmp = tempfile.mkstemp(prefix=f".{entry.filename}.", suffix=".importing", dir=str(weights_dir()))
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        if sha256_file(tmp) != digest:
            raise WeightsError(f"Import of {entry.name} failed: the copy in {weights_dir()} differs from {src} (disk "
                               "error?); try again.")
        make_public(tmp)
        os.replace(tmp, target)
    except OSError as e:
        _unlink(Path(tmp))
        raise WeightsError(f"Cannot copy {src} into {weights_dir()} ({e.strerror}): free some disk space or set "
                           "MEDSEG_HOME to a writable folder.") from None
    except BaseException:
        _unlink(Path(tmp))
        raise
    remember(entry, digest, size, f"import:{src}")
    return target


def delete(name: str, progress: Optional[ProgressCallback] = None) -> List[Path]:
    """Remove ``name``'s cached file, its partial download and its recorded hash (licence acceptance is kept).
    A copy inside an installed pip package is not touched. Returns the removed paths.

    All or nothing: each file is first renamed aside in its own folder, then the record is forgotten, and only
    then are the renamed files removed; a file that cannot be moved (read-only folder, protected file) or a state
    file that cannot be rewritten puts everything back and raises :class:`WeightsError` naming it."""
    entry = get_entry(name)
    if not cache_dir().is_dir():
        return []
    with model_lock(entry, "installing or deleting", progress):
        forget_verified(cache_file(entry))
        targets = [p for p in (cache_file(entry), downloads_dir() / (entry.filename + ".part")) if p.is_file()]
        if downloads_dir().is_dir():
            targets += sorted(p for p in downloads_dir().glob(entry.filename + ".*-*.part") if p.is_file())
        for folder in (weights_dir(), downloads_dir()):  # left by a delete that was killed half-way
            for old in folder.glob(f".{entry.filename}.*.deleting"):
                _unlink_quietly(old)
        moved: List[tuple] = []
        where = state_path()
        try:
            for p in targets:
                where = p
                aside = p.with_name(f".{entry.filename}.{os.getpid()}-{os.urandom(4).hex()}.deleting")
                os.replace(p, aside)
                moved.append((p, aside))
            where = state_path()
            state = read_state()
            if state["files"].get(entry.name) is not None or str(cache_file(entry)) in state["verified"]:
                def forget(s):
                    s["files"].pop(entry.name, None)
                    s["verified"].pop(str(cache_file(entry)), None)
                update_state(forget)
        except (OSError, WeightsError) as e:
            for p, aside in reversed(moved):
                try:
                    os.replace(aside, p)
                except OSError:
                    pass
            if isinstance(e, WeightsError):
                raise
            raise WeightsError(f"Cannot delete {entry.name}: {where} cannot be changed ({e.strerror or e}); make its "
                               f"folder {where.parent} writable (or ask its owner), then run `medseg models delete "
                               f"{entry.name}` again; nothing was deleted.") from None
        for _p, aside in moved:
            _unlink_quietly(aside)
    return [p for p, _aside in moved]


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
