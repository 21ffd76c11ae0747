"""The weights file to load for a model (:func:`resolve_weights`: licence, installed copy, size and hash checked)
and :func:`open_model`, which hands that file to the pure loader (``models.loader``: path -> module)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..errors import WeightsError
from ..locking import FileLock
from .cache import PathLike, locks_dir
from .hashes import check_installed_hash
from .installed import expected_size, find_installed, not_installed_error, refetch_hint
from .licences import require_licence
from .registry import get_entry
from .state import record


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
        require_licence(entry)
        return path
    require_licence(entry)
    path, source = find_installed(entry)
    if path is None:
        holder = FileLock(locks_dir() / f"{entry.name}.lock", what="").held_elsewhere()
        if holder is not None:  # another process (a second Slicer, the CLI) is fetching, importing or deleting it
            raise WeightsError(f"{entry.name} weights are being installed (or deleted) by another process{holder} "
                               "right now: wait until it is done (`medseg models list` shows them installed), then "
                               "run again.")
        raise not_installed_error(entry)
    rec = record(entry) if source == "cache" else None
    size = expected_size(entry, rec)
    if size is not None and path.stat().st_size != size:
        raise WeightsError(f"{entry.name} weights at {path} are damaged ({path.stat().st_size} bytes, {size} "
                           f"expected): {refetch_hint(entry, source)}.")
    check_installed_hash(entry, path, source, rec)
    return path
