"""An effect's saved parameters and node references on the Segment Editor's parameter node, the portable way.

Slicer's ``scriptedEffect.setParameter(name, value)`` stores the attribute ``"<effect name>.<name>"`` on the
``vtkMRMLSegmentEditorNode``, and from 5.8 ``setNodeReference(name, node)`` stores the reference role
``"<effect name>.<name>"`` - which 5.6 lacks (see SLICER_API.md, G2). :class:`EffectState` reads and writes the same
attributes and roles directly on the node, so parameters survive switching effects, saving and reloading the scene,
and read back the same on every release 5.6 - 5.12. Qt-free: the effects pass ``scriptedEffect.parameterSetNode()``.
"""
from __future__ import annotations

from typing import Optional, Sequence


class EffectState:
    def __init__(self, editor_node, effect_name: str) -> None:
        self.node = editor_node
        self.prefix = f"{effect_name}."

    # ---- parameters (strings on the node, as scriptedEffect.setParameter stores them) ---------------------------
    def get(self, name: str, default: str = "") -> str:
        if self.node is None:
            return default
        value = self.node.GetAttribute(self.prefix + name)
        return default if value is None else str(value)

    def set(self, name: str, value) -> None:
        if self.node is not None and self.get(name, None) != str(value):
            self._write(self.prefix + name, str(value))

    def _write(self, attribute: str, value: str) -> None:
        """What ``qSlicerSegmentEditorAbstractEffect::setCommonParameter`` does (5.6 - 5.12, SLICER_API.md row
        E2): the attribute is set with the node's modified events off, then only ``EffectParameterModified`` is
        invoked - a plain ``SetAttribute`` fires ``ModifiedEvent``, and the Segment Editor refreshes everything on
        that (segment list, effects' GUIs, masking widgets) at every slider step or keystroke."""
        was = self.node.GetDisableModifiedEvent()
        self.node.SetDisableModifiedEvent(1)
        try:
            self.node.SetAttribute(attribute, value)
        finally:
            self.node.SetDisableModifiedEvent(was)
        self.node.InvokeCustomModifiedEvent(self.node.EffectParameterModified)

    def get_bool(self, name: str, default: bool = False) -> bool:
        return self.get(name, "1" if default else "0").strip().lower() in ("1", "true", "yes", "on")

    def set_bool(self, name: str, value: bool) -> None:
        self.set(name, "1" if value else "0")

    def get_int(self, name: str, default: int = 0) -> int:
        try:
            return int(float(self.get(name, str(default))))
        except ValueError:
            return default

    def get_choice(self, name: str, choices: Sequence[str], default: Optional[str] = None) -> str:
        """A saved value that must be one of ``choices`` (an unknown or old value gives the default)."""
        default = choices[0] if default is None else default
        value = self.get(name, default)
        return value if value in choices else default

    def set_default(self, name: str, value) -> None:
        if self.node is not None and self.node.GetAttribute(self.prefix + name) is None:
            self._write(self.prefix + name, str(value))

    # ---- node references (portable form of scriptedEffect.nodeReference / setNodeReference) --------------------
    def reference(self, name: str):
        return self.node.GetNodeReference(self.prefix + name) if self.node is not None else None

    def set_reference(self, name: str, node) -> None:
        if self.node is not None:
            self.node.SetNodeReferenceID(self.prefix + name, node.GetID() if node is not None else None)
