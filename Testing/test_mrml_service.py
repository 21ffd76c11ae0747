"""The effects find the shared logic through MedSegSlicerLib.service (no import of the module)."""
import pytest

from MedSegSlicerLib import service
from MedSegSlicerLib.errors import MedSegError


def test_logic_comes_from_the_registered_factory(monkeypatch):
    monkeypatch.setattr(service, "_factory", None)
    with pytest.raises(MedSegError, match="not loaded.*Extensions Manager"):
        service.logic()
    made = []
    service.register_logic_factory(lambda: made.append(1) or "the logic")
    assert service.logic() == "the logic" and service.logic() == "the logic" and len(made) == 2
