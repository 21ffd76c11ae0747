"""Issue 22 item 2: the effects' shortcuts fire. Slicer builds an object and options panel for every effect (both
MedSeg effects, in every Segment Editor) and activates one effect at a time; Qt fires no shortcut whose keys two
enabled shortcuts share (ambiguous). Each effect object keeps one set, enabled only while it is active and deleted
on cleanup (or with its options panel on 5.6 / 5.8); no key is one Slicer already uses (SLICER_API.md row K1)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from MedSegSlicerLib import shortcuts
from MedSegSlicerLib.shortcuts import KEYS, ShortcutSet

EFFECTS = Path(__file__).resolve().parents[1] / "MedSegSlicer" / "MedSegSlicerEffects"


class Recorded:
    """What the Qt layer's shortcut object does, recorded: enabled state, deletion, the callback."""

    made = []

    def __init__(self, keys, callback):
        self.keys, self.callback, self.enabled, self.deleted = keys, callback, None, False
        Recorded.made.append(self)

    def setEnabled(self, on):
        assert not self.deleted, "a deleted shortcut was touched"
        self.enabled = on

    def delete(self):
        self.deleted = True


def press(keys):
    """Qt's rule: the one enabled, living shortcut with these keys fires; two or more are ambiguous, none fires."""
    live = [s for s in Recorded.made if s.keys == keys and s.enabled and not s.deleted]
    if len(live) == 1:
        live[0].callback()
        return True
    return False


def effect(name, fired, actions):
    """One effect object's set, made as setupOptionsFrame makes it."""
    group = ShortcutSet(Recorded)
    for action in actions:
        group.add(action, lambda a=action: fired.append((name, a)))
    return group


@pytest.fixture(autouse=True)
def _fresh():
    Recorded.made = []


def test_no_key_clashes_with_slicer_or_with_another_of_ours():
    assert shortcuts.clashes() == []
    assert shortcuts.clashes({"apply": "Ctrl+Shift+A"}) == ["Ctrl+Shift+A"]      # the Markups toolbar's key
    assert shortcuts.clashes({"a": "ctrl+shift+p", "b": "Shift+Ctrl+P"}) == ["Shift+Ctrl+P"]


def test_only_the_active_effect_answers_and_a_switch_moves_the_keys():
    fired = []
    medsam = effect("MedSAM box", fired, ["preview", "apply", "cancel", "draw_roi", "propagate"])
    universeg = effect("UniverSeg", fired, ["preview", "apply", "cancel", "draw_roi"])
    # both panels built, no effect active: no key does anything
    assert not any(press(k) for k in KEYS.values()) and fired == []
    medsam.enable()                                         # activate()
    assert press(KEYS["preview"]) and press(KEYS["propagate"])
    assert fired == [("MedSAM box", "preview"), ("MedSAM box", "propagate")]
    medsam.disable()                                        # the user picks the other effect
    universeg.enable()
    assert press(KEYS["apply"]) and not press(KEYS["propagate"])
    assert fired[-1] == ("UniverSeg", "apply")
    # what the old code did - every set enabled at once - leaves every shared key dead
    medsam.enable()
    assert not press(KEYS["preview"])


def test_cleanup_deletes_and_later_calls_are_harmless():
    fired = []
    medsam = effect("MedSAM box", fired, ["preview", "apply"])
    medsam.enable()
    medsam.delete()                                         # cleanup() (5.10+) or the options panel destroyed
    assert all(s.deleted and s.enabled is False for s in Recorded.made)
    medsam.delete()
    medsam.enable()                                         # an activate() after cleanup: nothing comes back
    medsam.disable()
    assert not press(KEYS["preview"]) and fired == []
    with pytest.raises(RuntimeError):
        medsam.add("cancel", lambda: None)
    with pytest.raises(ValueError):
        effect("x", fired, ["preview"]).add("preview", lambda: None)


def _method_calls(cls, method):
    fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == method)
    return {n.func.attr for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}


def test_the_effects_wire_the_set_to_slicers_hooks():
    tree = ast.parse((EFFECTS / "EffectBase.py").read_text(encoding="utf-8"))
    base = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MedSegEffectBase")
    assert "enable" in _method_calls(base, "activate")
    assert "disable" in _method_calls(base, "deactivate")
    assert "delete" in _method_calls(base, "cleanup")
    setup = next(n for n in base.body if isinstance(n, ast.FunctionDef) and n.name == "setupRunButtons")
    assert "optionsFrame" in _method_calls(base, "setupRunButtons")                 # 5.6 / 5.8: no cleanup()
    assert "cleanup" in {n.attr for n in ast.walk(setup) if isinstance(n, ast.Attribute)}
    # the only QShortcut is the one ShortcutSet makes; no key text is written anywhere but shortcuts.KEYS
    for py in EFFECTS.glob("*.py"):
        text = py.read_text(encoding="utf-8")
        assert text.count("QShortcut(") == (1 if py.name == "EffectBase.py" else 0), py.name
        assert "ApplicationShortcut" not in text, py.name   # window scope: not from dialogs or other windows
        code = "\n".join(l for l in text.splitlines() if "helpText" not in l)
        assert "addShortcut(\"Ctrl" not in code
    universeg = ast.parse((EFFECTS / "SegmentEditorUniverSegEffect.py").read_text(encoding="utf-8"))
    cls = next(n for n in universeg.body if isinstance(n, ast.ClassDef))
    assert "activate" in _method_calls(cls, "activate")      # its own activate() calls the base's


def test_cleanup_releases_everything_and_only_medsam_encodes_ahead():
    """Issue 22 item 8: cleanup() (or the options panel's destroyed() on 5.6 / 5.8) stops the timer, ends a
    placement and removes the ROI observers (the editing session's close()), not only the poll timer; an effect that
    does not encode ahead (UniverSeg) never prepares a full run on the main thread after an ROI move: its session
    has no encoder, and the session checks that before preparing anything."""
    tree = ast.parse((EFFECTS / "EffectBase.py").read_text(encoding="utf-8"))
    base = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MedSegEffectBase")
    cleanup = _method_calls(base, "cleanup")
    assert {"delete", "stop", "disconnect", "close"} <= cleanup
    session_py = EFFECTS.parent / "MedSegSlicerLib" / "session.py"
    session_tree = ast.parse(session_py.read_text(encoding="utf-8"))
    session = next(n for n in session_tree.body if isinstance(n, ast.ClassDef) and n.name == "EditingSession")
    assert {"stop_roi_placement", "watch_roi"} <= _method_calls(session, "close")
    text = ast.get_source_segment(session_py.read_text(encoding="utf-8"),
                                  next(n for n in session.body if isinstance(n, ast.FunctionDef)
                                       and n.name == "prefetch"))
    assert text.index("self.encode is None") < text.index("self._prepare(")
    base_text = (EFFECTS / "EffectBase.py").read_text(encoding="utf-8")
    assert "encode=self.prefetchRun if self.encodesAhead else None" in base_text
    assert "encodesAhead = False" in base_text
    assert "encodesAhead = True" in (EFFECTS / "SegmentEditorMedSAMBoxEffect.py").read_text(encoding="utf-8")
    assert "encodesAhead" not in (EFFECTS / "SegmentEditorUniverSegEffect.py").read_text(encoding="utf-8")
