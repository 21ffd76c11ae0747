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


def test_example_libraries_and_slicer_example_collection_do_not_load_torch(tmp_path):
    """Torch stays out of Slicer's own process: exporting and loading an example library and turning scene
    examples into backend examples (what the UniverSeg effect does in Slicer) import no torch."""
    repo = ROOT.parent
    code = (
        "import sys, numpy as np\n"
        f"sys.path.insert(0, {str(repo / 'MedSegSlicer')!r})\n"
        "from medseg_backend.universeg import Example\n"
        "from medseg_backend.universeg.library import export_library, load_library\n"
        "from MedSegSlicerLib import examples as ex\n"
        "img = np.arange(400, dtype=np.int16).reshape(20, 20); lab = np.zeros((20, 20), np.uint8); lab[5:9, 5:9] = 1\n"
        f"out = export_library({str(tmp_path / 'lib')!r}, [Example(img, lab, 'a')], structure='x', modality='CT')\n"
        "loaded, manifest = load_library(out)\n"
        "vol = Example(np.stack([img] * 3), np.stack([lab] * 3), 's', source='volume', slices=(0, 1, 2))\n"
        "backend = ex.cut_into_slices([vol], 'axial')\n"
        "assert len(loaded) == 1 and len(backend) == 3, (len(loaded), len(backend))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
