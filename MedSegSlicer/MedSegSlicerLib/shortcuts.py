"""The effects' keyboard shortcuts, Qt-free: which keys, and when they exist and fire.

Slicer builds an object (and options panel) for every effect, for every Segment Editor it shows, and calls
``activate()`` / ``deactivate()`` as the user switches effects; ``cleanup()`` exists only from 5.10
(SLICER_API.md G4). Application-wide ``QShortcut``s that all live at once are *ambiguous* for Qt (the same keys
registered twice fire neither), so each effect object keeps **one** :class:`ShortcutSet`: created disabled,
enabled by ``activate()``, disabled by ``deactivate()``, deleted by ``cleanup()`` or, on 5.6 / 5.8, when its
options panel is destroyed. At most one set is enabled per Segment Editor, so every key has one target.

The keys avoid every shortcut Slicer 5.6 - 5.12 defines (:data:`SLICER_KEYS`, SLICER_API.md row K1).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

#: action -> keys (Qt's portable text form). Apply is not Ctrl+Shift+A: the Markups toolbar's "create node" has it.
KEYS: Dict[str, str] = {
    "preview": "Ctrl+Shift+P",
    "apply": "Ctrl+Shift+Return",
    "cancel": "Ctrl+Shift+X",
    "draw_roi": "Ctrl+Shift+R",
    "propagate": "Ctrl+Shift+G",
}

#: Shortcuts Slicer defines in every release 5.6 - 5.12 that could reach the main window while the Segment Editor is
#: shown (SLICER_API.md row K1 gives the files and lines): main window menus, module and panel toggles, the Markups
#: toolbar, the Segment Editor's own keys, Qt's standard Undo / Redo (Redo is Ctrl+Shift+Z on Linux and macOS).
SLICER_KEYS = (
    "Ctrl+O", "Ctrl+S", "Ctrl+W", "Ctrl+Z", "Ctrl+Y", "Ctrl+X", "Ctrl+C", "Ctrl+V", "Ctrl+H", "Ctrl+F",
    "Ctrl+0", "Ctrl+2", "Ctrl+3", "Ctrl+4", "Ctrl+5", "Ctrl+6", "Ctrl+`", "Ctrl+Left", "Ctrl+Right",
    "Ctrl+Shift+A", "Ctrl+Shift+T", "Ctrl+Shift+Space", "Ctrl+Shift+Z",
    "Escape", "Space", "Z", "Y", "I", "Shift+0", "Shift+1", "Shift+2", "Shift+3", "Shift+4", "Shift+5", "Shift+6",
    "Shift+7", "Shift+8", "Shift+9",
)


def normalise(keys: str) -> str:
    """Case- and order-insensitive form of a key sequence text (``shift+ctrl+p`` == ``Ctrl+Shift+P``)."""
    parts = [p.strip().lower() for p in keys.split("+") if p.strip()]
    mods = sorted(p for p in parts[:-1])
    return "+".join(mods + parts[-1:])


def clashes(keys=None) -> List[str]:
    """Our keys that Slicer already uses (empty when none), and keys we use twice."""
    ours = list((keys or KEYS).values())
    slicer_keys = {normalise(k) for k in SLICER_KEYS}
    out = [k for k in ours if normalise(k) in slicer_keys]
    seen = set()
    for k in ours:
        if normalise(k) in seen:
            out.append(k)
        seen.add(normalise(k))
    return out


class ShortcutSet:
    """One effect object's shortcuts. ``make(keys, callback)`` creates one (the Qt layer: a disabled
    ``QShortcut`` on the main window whose ``activated()`` calls ``callback``); the object needs ``setEnabled(bool)``
    and ``delete()``. Created disabled; :meth:`enable` on ``activate()``, :meth:`disable` on ``deactivate()``,
    :meth:`delete` on ``cleanup()`` or when the options panel goes away (safe to call twice)."""

    def __init__(self, make: Callable[[str, Callable[[], None]], object]) -> None:
        self._make = make
        self._items: Dict[str, object] = {}
        self.enabled = False
        self.deleted = False

    def add(self, action: str, callback: Callable[[], None]) -> str:
        """Create the shortcut of ``action`` (disabled unless the set is enabled); returns its keys for tooltips."""
        if self.deleted:
            raise RuntimeError("the shortcuts of this effect were deleted")
        keys = KEYS[action]
        if action in self._items:
            raise ValueError(f"shortcut '{action}' added twice")
        item = self._make(keys, callback)
        item.setEnabled(self.enabled)
        self._items[action] = item
        return keys

    def enable(self) -> None:
        if not self.deleted:
            self._set(True)

    def disable(self) -> None:
        if not self.deleted:
            self._set(False)

    def _set(self, on: bool) -> None:
        self.enabled = on
        for item in self._items.values():
            item.setEnabled(on)

    def delete(self) -> None:
        if self.deleted:
            return
        self._set(False)
        for item in self._items.values():
            item.delete()
        self._items.clear()
        self.deleted = True

    def keys(self) -> Dict[str, str]:
        return {action: KEYS[action] for action in self._items}

    def item(self, action: str) -> Optional[object]:
        return self._items.get(action)
