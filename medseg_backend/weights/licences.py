"""Licences: entries with ``requires_acceptance`` (UniverSeg's OpenRAIL++-M, research use only) cannot be
fetched, imported or *used* until the user has accepted the licence (``--accept-licence`` or
:func:`accept_licence`); the acceptance (licence, URL, date) is remembered in ``state.json``. The licence
governs the weights wherever they came from, so an explicit ``weights=`` file for such a model needs the
acceptance too."""
from __future__ import annotations

from ..errors import LicenceError
from .registry import ModelEntry, get_entry
from .state import now, read_state, update_state


def licence_accepted(name: str) -> bool:
    """True when ``name`` needs no acceptance or its current licence was accepted (remembered in state.json)."""
    entry = get_entry(name)
    if not entry.requires_acceptance:
        return True
    rec = read_state()["licences"].get(entry.name)
    return isinstance(rec, dict) and rec.get("licence") == entry.licence


def accept_licence(name: str) -> dict:
    """Record that the user accepted ``name``'s licence; returns the stored record."""
    entry = get_entry(name)
    rec = {"licence": entry.licence, "licence_url": entry.licence_url, "accepted_at": now()}
    if entry.requires_acceptance:
        update_state(lambda s: s["licences"].__setitem__(entry.name, rec))
    return rec


def require_licence(entry: ModelEntry, accept: bool = False) -> None:
    if not entry.requires_acceptance or licence_accepted(entry.name):
        return
    if accept:
        accept_licence(entry.name)
        return
    raise LicenceError(f"{entry.name} weights are under the {entry.licence} licence, which has not been accepted: "
                       f"read {entry.licence_url}, then accept with `medseg models fetch {entry.name} "
                       "--accept-licence` (or `medseg models accept-licence " + entry.name + "`).")
