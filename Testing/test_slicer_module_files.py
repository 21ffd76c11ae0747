"""Static checks of the Slicer extension files: every script compiles, every .ui is well-formed Qt Designer XML,
the module's CMakeLists lists exactly the scripts and resources that exist, the extension metadata is complete, and
the Qt-free package imports without Qt or a Slicer application."""
from __future__ import annotations

import json
import py_compile
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "MedSegSlicer"
RESOURCE_SUFFIXES = {".png", ".ui", ".txt", ".json", ".svg"}


def cmake_list(text: str, variable: str):
    m = re.search(r"set\(\s*" + variable + r"\s+(.*?)\)", text, re.S)
    assert m, f"{variable} not set in MedSegSlicer/CMakeLists.txt"
    items = [line.split("#")[0].strip() for line in m.group(1).splitlines()]
    return sorted(i.replace("${MODULE_NAME}", "MedSegSlicer") for i in items if i)


MODULE_TESTING = MODULE / "Testing"          # the module's test code (not shipped; Slicer's scripted module layout)


def module_files(suffixes=None, python=False, under=MODULE):
    """The module's shipped files (its ``Testing`` folder left out), or the files ``under`` a folder of it."""
    out = []
    for p in under.rglob("*"):
        if not p.is_file() or "__pycache__" in p.parts:
            continue
        if under == MODULE and MODULE_TESTING in p.parents:
            continue
        if python and p.suffix == ".py":
            out.append(p.relative_to(under).as_posix())
        elif suffixes and p.suffix in suffixes and p.name != "CMakeLists.txt":
            out.append(p.relative_to(under).as_posix())
    return sorted(out)


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in MODULE.rglob("*.py")
                                        if "__pycache__" not in p.parts) + ["Resources/make_images.py"])
def test_every_script_compiles(path, tmp_path):
    py_compile.compile(str(REPO / path), cfile=str(tmp_path / "x.pyc"), doraise=True)


def test_ui_files_are_well_formed_designer_xml():
    uis = list(MODULE.rglob("*.ui"))
    assert uis, "the module panel .ui is missing"
    for ui in uis:
        root = ET.parse(ui).getroot()
        assert root.tag == "ui" and root.get("version") == "4.0"
        top = root.find("widget")
        assert top is not None and top.get("class") == "qMRMLWidget"
        names = [w.get("name") for w in root.iter("widget")]
        assert len(names) == len(set(names)), f"duplicate widget names in {ui.name}"
        declared = {c.findtext("class") for c in root.iter("customwidget")}
        used = {w.get("class") for w in root.iter("widget")}
        custom = {c for c in used if c.startswith(("qMRML", "ctk", "qSlicer"))}
        assert custom <= declared, f"custom widgets not declared in {ui.name}: {custom - declared}"


def test_panel_code_uses_only_widgets_that_exist_in_the_ui():
    root = ET.parse(MODULE / "Resources" / "UI" / "MedSegSlicer.ui").getroot()
    names = {w.get("name") for w in root.iter("widget")}
    code = (MODULE / "MedSegSlicer.py").read_text(encoding="utf-8")
    used = set(re.findall(r"self\.ui\.(\w+)", code))
    assert used and used <= names, f"widgets used in MedSegSlicer.py but missing in the .ui: {used - names}"


def test_cmake_lists_every_script_and_resource_and_nothing_missing():
    text = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    scripts = cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    resources = cmake_list(text, "MODULE_PYTHON_RESOURCES")
    assert scripts == module_files(python=True)
    assert resources == module_files(RESOURCE_SUFFIXES)
    for rel in scripts + resources:
        assert (MODULE / rel).is_file(), f"listed but missing: {rel}"
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT \$\{MODULE_NAME\}\.py", text)
    # the module's test code: Testing/ -> Testing/Python, as Slicer's scripted module template lays it out
    # (Utilities/Templates/Modules/Scripted/CMakeLists.txt: add_subdirectory(Testing) under BUILD_TESTING)
    assert re.search(r"if\(BUILD_TESTING\).*add_subdirectory\(Testing\)", text, re.S)
    assert (MODULE_TESTING / "CMakeLists.txt").read_text(encoding="utf-8").strip() == "add_subdirectory(Python)"
    test_cmake = (MODULE_TESTING / "Python" / "CMakeLists.txt").read_text(encoding="utf-8")
    assert cmake_list(test_cmake, "MEDSEG_TEST_PYTHON_SCRIPTS") == module_files(python=True,
                                                                                under=MODULE_TESTING / "Python")
    assert not any(rel.startswith("Testing/") for rel in scripts + resources), "test code listed as shipped"
    # the bundled backend: copied from the top-level package with its relative paths kept
    assert "ctkMacroCompilePythonScript(" in text
    assert re.search(r"GLOB_RECURSE MEDSEG_BACKEND_SCRIPTS RELATIVE \$\{PROJECT_SOURCE_DIR\}", text)
    assert "${PROJECT_SOURCE_DIR}/medseg_backend/*.py" in text and "SOURCE_DIR ${PROJECT_SOURCE_DIR}" in text
    assert (REPO / "medseg_backend" / "__init__.py").is_file()
    # the self-test's sample data
    for name in re.search(r"set\(MEDSEG_SAMPLE_FILES (.*?)\)", text).group(1).split():
        assert (REPO / "Testing" / "Data" / "totalseg_ct_sm" / name).is_file(), name


def test_extension_metadata():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"^project\(MedSegSlicer\)", text, re.M)
    for var in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(r"set\(" + var + r" \"[^\"]+\"\)", text), var
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    for needed in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(MedSegSlicer)",
                   "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert needed in text, needed
    desc = json.loads((REPO / "MedSegSlicer.json").read_text(encoding="utf-8"))
    assert desc["category"] == "Segmentation" and desc["build_dependencies"] == ["PyTorch"]
    assert desc["$schema"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/")
    assert set(desc) <= {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                         "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
    icon = REPO / "Resources" / "MedSegSlicer.png"
    import SimpleITK

    img = SimpleITK.ReadImage(str(icon))
    assert img.GetSize() == (128, 128)


def test_requirements_file_matches_dependency_table():
    from MedSegSlicerLib import deps

    listed = [l.strip() for l in (MODULE / "Resources" / "requirements.txt").read_text(encoding="utf-8").splitlines()
              if l.strip() and not l.startswith("#")]
    assert listed == [r for m, r in deps.REQUIREMENTS.items() if m != "torch"]
    plan = deps.install_plan(lambda name: None if name in ("torch", "nrrd") else object())
    assert plan.torch and plan.pip == ["pynrrd>=1.0"]
    assert "PyTorch" in plan.question() and "pynrrd" in plan.question()
    assert deps.install_plan(lambda name: object()).empty


def test_qt_free_package_imports_without_qt_or_slicer_app():
    code = (
        "import sys, builtins\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name.split('.')[0] in ('qt', 'ctk', 'PythonQt', 'slicer.ScriptedLoadableModule') or "
        "name.startswith('qSlicer'):\n"
        "        raise ImportError('Qt import attempted: ' + name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        f"sys.path.insert(0, {str(MODULE)!r})\n"
        "import MedSegSlicerLib\n"
        "from MedSegSlicerLib import (geometry, segments, labelmaps, examples, jobs, segmenter, logic, scene, "
        "sample_data, deps, errors)\n"
        "import slicer\n"
        "assert not hasattr(slicer, 'app'), 'slicer.app must not exist headless'\n"
        "ctx = scene.SceneContext.headless()\n"
        "assert ctx.scene.GetNumberOfNodes() > 0\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]


def _imports_outside_self_test(tree):
    """(line, what) of every import in ``tree`` that is not inside the module's ScriptedLoadableModuleTest class:
    ``import``/``from`` statements and ``importlib.import_module`` / ``__import__`` calls."""
    import ast

    found = []

    def visit(node, in_self_test):
        if isinstance(node, ast.ClassDef):
            bases = {getattr(b, "id", getattr(b, "attr", None)) for b in node.bases}
            in_self_test = in_self_test or "ScriptedLoadableModuleTest" in bases
        if not in_self_test:
            if isinstance(node, ast.Import):
                found.extend((node.lineno, a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                found.extend((node.lineno, f"{node.module or ''}.{a.name}") for a in node.names)
            elif isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                if name in ("import_module", "__import__"):
                    found.append((node.lineno, ast.dump(node.args[0]) if node.args else name))
        for child in ast.iter_child_nodes(node):
            visit(child, in_self_test)

    visit(tree, False)
    return found


def test_nothing_shipped_imports_the_test_scenarios():
    """Issue 25 item 5: the self-test's scenarios are test code in the module's Testing/Python folder. No shipped
    file of the module (everything under MedSegSlicer/ but Testing/) imports them; only the self-test class
    (MedSegSlicerTest, which Slicer requires in the module file) loads them, and the Sample Data registration uses
    the product's MedSegSlicerLib.sample_data."""
    import ast

    shipped = [p for p in MODULE.rglob("*.py") if "__pycache__" not in p.parts and MODULE_TESTING not in p.parents]
    assert len(shipped) > 20
    offenders = []
    for path in shipped:
        assert "scenario" not in path.name.lower(), f"test scenarios shipped in the product: {path}"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, what in _imports_outside_self_test(tree):
            if "scenario" in what.lower() or "Testing" in what:
                offenders.append(f"{path.relative_to(REPO)}:{line}: {what}")
    assert not offenders, "shipped code imports test code: " + "; ".join(offenders)
    # the scan sees the self-test's own import (it is the one allowed place), so it cannot pass vacuously
    mod = ast.parse((MODULE / "MedSegSlicer.py").read_text(encoding="utf-8"))
    test_class = next(n for n in mod.body if isinstance(n, ast.ClassDef) and n.name == "MedSegSlicerTest")
    assert _imports_outside_self_test(ast.Module(body=test_class.body, type_ignores=[]))
    assert (MODULE_TESTING / "Python" / "MedSegSlicerScenarios.py").is_file()


def test_effects_and_module_follow_slicer_conventions():
    mod = (MODULE / "MedSegSlicer.py").read_text(encoding="utf-8")
    assert 'slicer.app.connect("startupCompleted()", registerEffects)' in mod
    assert "from MedSegSlicerApp.startup import EFFECT_NAMES, registerEffects, registerSampleData" in mod
    assert "class MedSegSlicerTest(ScriptedLoadableModuleTest)" in mod
    # the registration itself (MedSegSlicerApp/startup.py) finds the effects next to the module file
    startup = (MODULE / "MedSegSlicerApp" / "startup.py").read_text(encoding="utf-8")
    assert "qSlicerSegmentEditorScriptedEffect" in startup
    assert 'MODULE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))' in startup
    assert 'os.path.join(MODULE_DIR, "MedSegSlicerEffects")' in startup
    # the install path (PyTorchUtils, pip_ensure / pip_install) is executed in test_deps.py
    for effect, cls in (("SegmentEditorMedSAMBoxEffect.py", "SegmentEditorMedSAMBoxEffect"),
                        ("SegmentEditorUniverSegEffect.py", "SegmentEditorUniverSegEffect")):
        assert effect in startup
        src = (MODULE / "MedSegSlicerEffects" / effect).read_text(encoding="utf-8")
        # setPythonSource: module = folder name, class = file name; clone() (in the base) uses the subclass's file
        assert f"class {cls}(MedSegEffectBase)" in src
        assert f"from .{cls} import {cls}" in (MODULE / "MedSegSlicerEffects" / "__init__.py").read_text(encoding="utf-8")
    assert "sys.modules[type(self).__module__].__file__" in (MODULE / "MedSegSlicerEffects" / "EffectBase.py").read_text(encoding="utf-8")
    # Apply (undo state, then the editor's modify path) is executed in test_mrml_apply.py through the same
    # editing.apply_result the effect calls
    # no package is installed at import time: only inside functions
    for path in [MODULE / "MedSegSlicer.py", *MODULE.rglob("*.py")]:
        top_level = [l for l in path.read_text(encoding="utf-8").splitlines() if l and not l.startswith((" ", "\t", "#"))]
        assert not any("pip_install(" in l or "pip_ensure(" in l or "installTorch(" in l for l in top_level), path


def test_shipped_python_runs_on_slicer_5_6_python_3_9():
    """Slicer 5.6 and 5.8 embed Python 3.9 (SLICER_API.md): everything the extension ships - the module, the
    effects, the Qt-free layer and the bundled backend - must be valid 3.9 syntax (no match statements, no
    parenthesised context managers, ...)."""
    import ast

    shipped = [*MODULE.rglob("*.py"), *(REPO / "medseg_backend").rglob("*.py")]
    assert len(shipped) > 40
    for path in shipped:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


def test_drawing_the_box_is_described_as_two_clicks_not_a_drag():
    """Issue 22 item 7: in place mode the markups widget places a control point on the button's release
    (vtkSlicerMarkupsWidget: LeftButtonReleaseEvent -> WidgetEventControlPointPlace, SLICER_API.md R2), so a drag
    places one corner; what the help, tooltips, status lines and the tutorial say about Draw ROI is two clicks.
    (Issue 26: a drag in the slice view, handled by the effect itself, is the other way to draw the box.)"""
    import re

    texts = {p.name: p.read_text(encoding="utf-8") for p in (MODULE / "MedSegSlicerEffects").glob("*.py")}
    texts["session_box.py"] = (MODULE / "MedSegSlicerLib" / "session_box.py").read_text(encoding="utf-8")
    texts["README.md"] = (REPO / "README.md").read_text(encoding="utf-8")
    wrong = re.compile(r"drag(,)? or click|\(drag|drag\s+a box|and drag\s", re.I)
    for name, text in texts.items():
        flat = re.sub(r'"\s*\n\s*"', "", text)            # join adjacent string literals
        for sentence in re.split(r"(?<=[.:;])\s", flat):
            if "Draw ROI" in sentence or "opposite corner" in sentence:
                assert not wrong.search(sentence), f"{name}: {sentence!r}"
    assert "then the opposite corner" in texts["EffectBase.py"] and "then the opposite corner" in texts["session_box.py"]
    assert "two clicks" in texts["README.md"] and "two clicks" in texts["SegmentEditorMedSAMBoxEffect.py"]


def test_every_slicer_api_the_module_calls_has_a_row_in_slicer_api_md():
    """Issue 22 item 10: SLICER_API.md names every `slicer.app.*`, `slicer.util.*`, `scriptedEffect.*` and
    `qt.*` name the module uses, and the behaviours the product relies on (rows with each release's source line)."""
    doc = (MODULE / "SLICER_API.md").read_text(encoding="utf-8")
    used = set()
    for py in MODULE.rglob("*.py"):
        text = py.read_text(encoding="utf-8")
        used |= set(re.findall(r"\bslicer\.(?:app|util)\.([A-Za-z_]\w*)", text))
        used |= set(re.findall(r"\bscriptedEffect\.([A-Za-z_]\w*)", text))
        used |= {m for m in re.findall(r"\bqt\.(Q[A-Za-z]+)", text)}
        used |= set(re.findall(r"\.(JumpSliceByCentering|GetSliceToRAS|UpdateActiveControlPointWorld|"
                               r"SetPlaceModePersistence|InvokeCustomModifiedEvent|optionsFrame)\(", text))
    missing = sorted(name for name in used if name not in doc)
    assert not missing, f"not in SLICER_API.md: {missing}"
    for row in ("P1", "K1", "R1", "R2", "R3", "E2", "V1", "U1", "A1", "V2", "V3", "K2", "T1"):
        line = next((l for l in doc.splitlines() if l.startswith(f"| {row} |")), None)
        assert line is not None, row
        assert line.count("|") >= 9 and re.search(r":\d+", line), f"row {row} lacks a source line"
    assert "UpdateBoxROIFromControlPoints" in doc and "undoEnabled" in doc
