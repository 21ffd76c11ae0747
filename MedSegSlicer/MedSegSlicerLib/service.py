"""Where the effects find the module's shared logic, without importing the module.

The scripted module (``MedSegSlicer.py``) registers a factory for its logic when Slicer loads it; the Segment Editor
effects ask :func:`logic` for it. So the effects depend on this Qt-free package only, and the module depends on the
effects (it registers them) - one direction, no import circle. One logic per application: one model worker, one
set of loaded models and embedding caches for the panel, the effects and the Python console.
"""
from __future__ import annotations

from typing import Callable, Optional

from .errors import MedSegError

_factory: Optional[Callable[[], object]] = None


def register_logic_factory(factory: Callable[[], object]) -> None:
    global _factory
    _factory = factory


def logic():
    """The module's shared logic (``MedSegSlicerLogic.shared()``)."""
    if _factory is None:
        raise MedSegError("The MedSeg module is not loaded: check that MedSegSlicer is installed and enabled in "
                          "the Extensions Manager, then restart Slicer.")
    return _factory()
