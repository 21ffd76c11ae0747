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
        for m in re.finditer(r"torch\.load\(([^)]*)\)", py.read_text(encoding="utf-8")):
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


# Names that only Slicer's application provides (PythonQt, CTK, the Segment Editor's scripted effects, the scripted
# module base classes): a permissive stand-in used only to import the module's files here. slicer-core provides the
# rest of `slicer` (MRML, logics) and VTK.
_STAND_IN = '''
import importlib.abc, importlib.machinery, sys, types

class _Meta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything()

class _Anything(metaclass=_Meta):
    def __init__(self, *args, **kwargs):
        pass
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything()
    def __call__(self, *args, **kwargs):
        return _Anything()
    def _same(self, *args):
        return self
    __add__ = __radd__ = __or__ = __ror__ = __and__ = __sub__ = __mul__ = _same

class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = type(name, (_Anything,), {})
        setattr(self, name, value)
        return value

APP_ONLY = {"qt", "ctk", "SegmentEditorEffects", "qSlicerSegmentationsEditorEffectsPythonQt", "PyTorchUtils",
            "SampleData", "slicer.ScriptedLoadableModule"}
TRIED = []

class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            TRIED.append(name)
            raise ImportError("torch must not be imported into Slicer's process")
        if name in APP_ONLY:
            return importlib.machinery.ModuleSpec(name, self)
        return None
    def create_module(self, spec):
        return _StandInModule(spec.name)
    def exec_module(self, module):
        pass

sys.meta_path.insert(0, _Finder())
'''


def _slicer_module_imports():
    """Every module of MedSegSlicer/ (the scripted module, the effects, MedSegSlicerLib) and every project module
    that any of their files imports, at the top or inside a function."""
    import ast

    module_dir = ROOT.parent / "MedSegSlicer"
    names = {"MedSegSlicer"}
    for py in sorted(module_dir.rglob("*.py")):
        rel = py.relative_to(module_dir).with_suffix("")
        if rel.parts[0] in ("MedSegSlicerLib", "MedSegSlicerEffects"):
            names.add(".".join(p for p in rel.parts if p != "__init__"))
        for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            names.update(n for n in found if n.split(".")[0] in ("medseg_backend", "MedSegSlicerLib",
                                                                  "MedSegSlicerEffects"))
    return sorted(names), module_dir


def test_no_module_of_the_slicer_side_imports_torch():
    """Issue 22 item 4: Slicer's own process never imports torch. A fresh interpreter where importing torch raises
    imports every file of MedSegSlicer/ (effects included) and every project module they import anywhere (lazy
    imports too); no import of torch is even tried."""
    names, module_dir = _slicer_module_imports()
    assert {"MedSegSlicer", "MedSegSlicerLib.review", "MedSegSlicerEffects.SegmentEditorMedSAMBoxEffect",
            "MedSegSlicerEffects.EffectBase", "MedSegSlicerLib.segmenter"} <= set(names)
    code = _STAND_IN + (
        f"sys.path[:0] = [{str(module_dir)!r}, {str(ROOT.parent)!r}]\n"
        "import importlib\n"
        "imported = []\n"
        f"for n in {names!r}:\n"
        "    try:\n"
        "        importlib.import_module(n)\n"
        "    except ModuleNotFoundError:\n"           # `from module import name`: a name, not a module
        "        parent, _, attr = n.rpartition('.')\n"
        "        if not parent or not hasattr(importlib.import_module(parent), attr):\n"
        "            raise\n"
        "    imported.append(n)\n"
        "assert not TRIED, f'torch import tried: {TRIED}'\n"
        "assert 'torch' not in sys.modules\n"
        "print(len(imported))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip().splitlines()[-1]) == len(names)
