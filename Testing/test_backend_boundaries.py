"""The backend stays pure Python + torch: importing every module pulls in no Qt, Slicer or VTK, and every
checkpoint read uses torch.load(weights_only=True)."""
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import medseg_backend

ROOT = Path(medseg_backend.__file__).resolve().parent


def test_backend_imports_no_qt_slicer_or_vtk():
    names = [m.name for m in pkgutil.walk_packages([str(ROOT)], prefix="medseg_backend.")
             if not m.name.endswith("__main__")]
    code = ("import importlib, sys\n"
            f"for n in {names!r}: importlib.import_module(n)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('vtk', 'vtkmodules', 'slicer', 'qt', 'PythonQt', 'PyQt5', 'PySide2', 'PySide6', 'ctk'))\n"
            "print(len(sys.modules)); assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert len(names) > 15


def test_every_torch_load_is_weights_only():
    calls = []
    for py in ROOT.rglob("*.py"):
        for m in re.finditer(r"torch\.load\(([^)]*)\)", py.read_text()):
            calls.append((py.name, m.group(1)))
    assert calls, "no torch.load call found"
    for name, args in calls:
        assert "weights_only=True" in args, f"{name}: torch.load({args})"
