"""The Slicer ExtensionsIndex's offline checks, run on this repository.

The index (github.com/Slicer/ExtensionsIndex, ``scripts/check_description_files.py``) validates a submitted
``<ExtensionName>.json`` by cloning the repository it names and running these nine checks that need no network
(two more, the clone itself and the GitHub topics, do): repository size, JSON schema, JSON file format, extension
name, category, git repository name, SCM URL syntax, top-level CMakeLists.txt content (project name, literal icon and
screenshot URLs that return images) and licence file. They are re-implemented here from reading the index's rules;
"returns an image" becomes "is a raw.githubusercontent.com URL of this repository whose path is a PNG file in it".
On top: the CMake ``EXTENSION_*`` values agree with the JSON, and the ``.s4ext`` for the index's 5.6 branch agrees
with both and passes that branch's checks.
"""
from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Callable, Dict, List, Optional

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[1]
EXTENSION = "MedSegSlicer"
SCHEMA_DIR = Path(__file__).resolve().parent / "Data" / "schemas"
SIZE_LIMIT_MB = 100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LICENCE_NAMES = ("LICENSE", "LICENCE", "License.txt", "license.txt", "LICENSE.txt", "COPYING", "COPYING.txt")
REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")
# Categories the index accepts (its checker's list, as of 2026-08).
CATEGORIES = {
    "Active Learning", "Analysis", "Auto3dgm", "BigImage", "Cardiac", "Chest Imaging Platform", "Conda", "Converters",
    "DICOM", "DSCI", "Developer Tools", "Diffusion", "Examples", "Exporter", "FTV Segmentation", "Filtering",
    "Filtering.Morphology", "Filtering.Vesselness", "Holographic Display", "Image Synthesis", "IGT", "Informatics",
    "Netstim", "Neuroimaging", "Nuclear Medicine", "Orthodontics", "Osteotomy Planning", "Otolaryngology",
    "Photogrammetry", "Pipelines", "Planning", "Printing", "Quantification", "Radiotherapy", "Registration", "Remote",
    "Rendering", "SPHARM", "Segmentation", "Sequences", "Shape Analysis", "Shape Regression", "Shape Visualization",
    "Simulation", "SlicerCMF", "SlicerMorph", "Spectral Imaging", "Supervisely", "Surface Models", "SurfaceLearner",
    "Tomographic Reconstruction", "Tracking", "Tractography", "Training", "Ultrasound", "Utilities",
    "Vascular Modeling Toolkit", "Virtual Reality", "VisSimTools", "Web System Tools", "Wizards",
}


class CheckFailed(Exception):
    pass


# ----------------------------------------------------------------------------------------------------------
# Reading the files
# ----------------------------------------------------------------------------------------------------------
def cmake_extension_variables(repo: Path) -> Dict[str, str]:
    """``set(NAME "value")`` of the top-level CMakeLists.txt (only literal, double-quoted values) plus ``project``."""
    path = repo / "CMakeLists.txt"
    if not path.is_file():
        raise CheckFailed("CMakeLists.txt not found at the repository root")
    text = path.read_text(encoding="utf-8", errors="replace")
    out = {name: value for name, value in re.findall(r'^\s*set\s*\(\s*(EXTENSION_\w+)\s+"([^"]*)"\s*\)', text, re.M)}
    project = re.search(r"^\s*project\s*\(\s*([^\s)]+)", text, re.M | re.I)
    if project:
        out["project"] = project.group(1).strip("\"'")
    return out


def parse_s4ext(path: Path) -> Dict[str, Optional[str]]:
    """``keyword value`` lines (comments and blank lines skipped; the value may be empty)."""
    out: Dict[str, Optional[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.strip().partition(" ")
        out[key] = value.strip() or None
    return out


def repository_of(scm_url: str):
    """(owner, repository name) of a git URL such as https://github.com/owner/SlicerX.git."""
    parts = [p for p in urllib.parse.urlsplit(scm_url.strip()).path.split("/") if p]
    if len(parts) < 2:
        raise CheckFailed(f"cannot find owner/repository in scm_url '{scm_url}'")
    name = parts[-1][:-4] if parts[-1].endswith(".git") else parts[-1]
    return parts[-2], name


def repository_files(repo: Path) -> List[Path]:
    """The files a clone checks out: git's tracked files when this is a git work tree, else every file."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z"], capture_output=True, check=True, timeout=60)
        names = [n for n in out.stdout.decode("utf-8", "replace").split("\0") if n]
        if names:
            return [repo / n for n in names if (repo / n).is_file()]
    except (OSError, subprocess.SubprocessError):
        pass
    ignore = [".git"]
    if (repo / ".gitignore").is_file():  # a checkout without git metadata: leave out what git would not track
        ignore += [line.strip().strip("/") for line in (repo / ".gitignore").read_text(encoding="utf-8").splitlines()
                   if line.strip() and not line.startswith(("#", "!"))]
    return [p for p in repo.rglob("*") if p.is_file()
            and not any(fnmatch.fnmatch(part, pattern) for part in p.relative_to(repo).parts for pattern in ignore)]


def history_bytes(repo: Path) -> int:
    """Size of the git object store (a clone carries it in .git); 0 outside git."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "count-objects", "-v"], capture_output=True, text=True,
                             check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    values = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    return 1024 * (int(values.get("size", 0)) + int(values.get("size-pack", 0)))


# ----------------------------------------------------------------------------------------------------------
# The nine offline checks (each raises CheckFailed with the reason)
# ----------------------------------------------------------------------------------------------------------
def check_repository_size(name: str, meta: dict, repo: Path, description: Path) -> str:
    total = sum(p.stat().st_size for p in repository_files(repo)) + history_bytes(repo)
    mb = total / 2 ** 20
    if mb > SIZE_LIMIT_MB:
        raise CheckFailed(f"repository size {mb:.1f} MB exceeds the {SIZE_LIMIT_MB} MB limit")
    return f"{mb:.1f} MB"


def check_json_schema(name: str, meta: dict, repo: Path, description: Path) -> str:
    url = meta.get("$schema")
    if not url:
        raise CheckFailed("no $schema in the extension description")
    local = SCHEMA_DIR / url.split("#")[0].rstrip("/").rsplit("/", 1)[-1]
    if not local.is_file():
        raise CheckFailed(f"$schema '{url}' is not a known catalogue schema (have: "
                          f"{sorted(p.name for p in SCHEMA_DIR.glob('*.json'))})")
    schema = json.loads(local.read_text(encoding="utf-8"))
    if schema["$id"].split("#")[0] != url.split("#")[0]:
        raise CheckFailed(f"$schema '{url}' does not match the schema's $id '{schema['$id']}'")
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(meta), key=lambda e: list(e.absolute_path))
    if errors:
        raise CheckFailed("; ".join(f"{e.message} at '{'/'.join(map(str, e.absolute_path))}'" for e in errors))
    return local.name


def check_json_file_format(name: str, meta: dict, repo: Path, description: Path) -> str:
    raw = description.read_bytes()
    try:
        json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise CheckFailed(f"invalid JSON: {e}")
    if b"\r" in raw:
        raise CheckFailed("file contains CR or CRLF line endings: use LF only")
    return "LF-only JSON"


def check_extension_name(name: str, meta: dict, repo: Path, description: Path) -> str:
    if name.lower().startswith("slicer"):
        raise CheckFailed(f"extension name '{name}' must not start with 'Slicer' (the repository name should)")
    return name


def check_category(name: str, meta: dict, repo: Path, description: Path) -> str:
    category = meta.get("category")
    if category not in CATEGORIES:
        raise CheckFailed(f"category '{category}' is not one of the index's categories")
    return category


def check_git_repository_name(name: str, meta: dict, repo: Path, description: Path) -> str:
    _owner, repository = repository_of(meta.get("scm_url") or "")
    if not repository.startswith(REPOSITORY_PREFIXES):
        raise CheckFailed(f"git repository name '{repository}' must start with 'Slicer' "
                          f"(or {', '.join(REPOSITORY_PREFIXES[1:])})")
    return repository


def check_scm_url_syntax(name: str, meta: dict, repo: Path, description: Path) -> str:
    url = meta.get("scm_url") or ""
    if "://" not in url:
        raise CheckFailed(f"scm_url '{url}' is not scheme://host/path")
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("git", "https"):
        raise CheckFailed(f"scm_url scheme '{scheme}' is not git or https")
    return url


def image_url_problem(url: str, meta: dict, repo: Path) -> Optional[str]:
    """None when ``url`` is a literal http(s) URL of a PNG/JPEG/GIF file of this repository (raw GitHub URL)."""
    if not url.startswith(("http://", "https://")):
        return f"'{url}' is not a literal http(s) URL"
    parts = urllib.parse.urlsplit(url)
    owner, repository = repository_of(meta["scm_url"])
    path = [p for p in parts.path.split("/") if p]
    if parts.netloc != "raw.githubusercontent.com" or path[:2] != [owner, repository] or len(path) < 4:
        return f"'{url}' is not a raw.githubusercontent.com/{owner}/{repository}/<revision>/<path> URL"
    file = repo.joinpath(*path[3:])
    if not file.is_file():
        return f"'{url}' points at {'/'.join(path[3:])}, which is not in the repository"
    head = file.read_bytes()[:8]
    if not (head == PNG_SIGNATURE or head[:3] == b"\xff\xd8\xff" or head[:4] == b"GIF8"):
        return f"'{url}' points at {'/'.join(path[3:])}, which is not a PNG, JPEG or GIF image"
    return None


def check_cmakelists_content(name: str, meta: dict, repo: Path, description: Path) -> str:
    variables = cmake_extension_variables(repo)
    problems = []
    if variables.get("project") != name:
        problems.append(f"project name '{variables.get('project')}' is not the extension name '{name}'")
    icon = variables.get("EXTENSION_ICONURL")
    shots = (variables.get("EXTENSION_SCREENSHOTURLS") or "").split()
    if not icon:
        problems.append("no literal EXTENSION_ICONURL")
    if not shots:
        problems.append("no literal EXTENSION_SCREENSHOTURLS")
    for url in ([icon] if icon else []) + shots:
        problem = image_url_problem(url, meta, repo)
        if problem:
            problems.append(problem)
    if problems:
        raise CheckFailed("; ".join(problems))
    return f"project {name}, icon + {len(shots)} screenshots"


def check_license_file(name: str, meta: dict, repo: Path, description: Path) -> str:
    for candidate in LICENCE_NAMES:
        if (repo / candidate).is_file():
            return candidate
    raise CheckFailed("no licence file at the repository root")


INDEX_CHECKS: Dict[str, Callable] = {
    "repository size": check_repository_size,
    "JSON schema": check_json_schema,
    "JSON file format": check_json_file_format,
    "extension name": check_extension_name,
    "category": check_category,
    "git repository name": check_git_repository_name,
    "SCM URL syntax": check_scm_url_syntax,
    "CMakeLists.txt content": check_cmakelists_content,
    "licence file": check_license_file,
}


def run_index_checks(repo: Path, description: Path) -> Dict[str, Optional[str]]:
    """Check name -> None (passed) or the reason it failed."""
    name = description.stem
    meta = json.loads(description.read_text(encoding="utf-8"))
    results = {}
    for check_name, check in INDEX_CHECKS.items():
        try:
            check(name, meta, repo, description)
            results[check_name] = None
        except CheckFailed as e:
            results[check_name] = str(e)
    return results


# ----------------------------------------------------------------------------------------------------------
# This repository
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("check_name", list(INDEX_CHECKS))
def test_index_check_passes(check_name):
    description = REPO / f"{EXTENSION}.json"
    meta = json.loads(description.read_text(encoding="utf-8"))
    detail = INDEX_CHECKS[check_name](EXTENSION, meta, REPO, description)
    print(f"{check_name}: ok ({detail})")


def test_all_nine_index_checks_pass():
    results = run_index_checks(REPO, REPO / f"{EXTENSION}.json")
    assert len(results) == 9
    assert {k: v for k, v in results.items() if v} == {}


def test_cmake_metadata_agrees_with_the_json_description():
    meta = json.loads((REPO / f"{EXTENSION}.json").read_text(encoding="utf-8"))
    cm = cmake_extension_variables(REPO)
    owner, repository = repository_of(meta["scm_url"])
    assert repository == "SlicerMedSeg"
    assert cm["project"] == EXTENSION
    assert cm["EXTENSION_CATEGORY"] == meta["category"]
    assert cm["EXTENSION_DEPENDS"].split() == meta["build_dependencies"]
    assert cm["EXTENSION_HOMEPAGE"].split("#")[0] == f"https://github.com/{owner}/{repository}"
    for key in ("EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION"):
        assert cm.get(key), f"{key} is empty"
    urls = [cm["EXTENSION_ICONURL"]] + cm["EXTENSION_SCREENSHOTURLS"].split()
    revision = meta["scm_revision"]
    for url in urls:
        assert url.startswith(f"https://raw.githubusercontent.com/{owner}/{repository}/{revision}/"), url


def test_icon_is_a_128_pixel_png():
    url = cmake_extension_variables(REPO)["EXTENSION_ICONURL"]
    data = REPO.joinpath(*urllib.parse.urlsplit(url).path.split("/")[4:]).read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (128, 128)


def test_s4ext_for_the_5_6_index_agrees_with_json_and_cmake():
    s4 = parse_s4ext(REPO / f"{EXTENSION}.s4ext")
    meta = json.loads((REPO / f"{EXTENSION}.json").read_text(encoding="utf-8"))
    cm = cmake_extension_variables(REPO)
    assert s4["scm"] == meta["scm_type"] == "git"
    assert s4["scmurl"] == meta["scm_url"]
    assert s4["scmrevision"] == meta["scm_revision"]
    assert (s4["depends"] or "NA").split() == (meta["build_dependencies"] or ["NA"])
    assert s4["build_subdirectory"] == meta["build_subdirectory"]
    assert s4["category"] == meta["category"] == cm["EXTENSION_CATEGORY"]
    assert s4["homepage"] == cm["EXTENSION_HOMEPAGE"]
    assert s4["contributors"] == cm["EXTENSION_CONTRIBUTORS"]
    assert s4["description"] == cm["EXTENSION_DESCRIPTION"]
    assert s4["iconurl"] == cm["EXTENSION_ICONURL"]
    assert s4["screenshoturls"].split() == cm["EXTENSION_SCREENSHOTURLS"].split()
    assert s4["enabled"] == "1"
    # the 5.6 branch's own checks: scmurl syntax, scm not local, repository name containing "Slicer"
    assert "://" in s4["scmurl"] and urllib.parse.urlsplit(s4["scmurl"]).scheme in ("git", "https", "svn")
    assert s4["scm"] != "local"
    assert "slicer" in repository_of(s4["scmurl"])[1].lower()
    for url in [s4["iconurl"]] + s4["screenshoturls"].split():
        assert image_url_problem(url, meta, REPO) is None


def test_readme_names_the_repository_and_contributing_says_how_to_release():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    owner, repository = repository_of(json.loads((REPO / f"{EXTENSION}.json").read_text(encoding="utf-8"))["scm_url"])
    assert f"https://github.com/{owner}/{repository}" in text and "CONTRIBUTING.md" in text
    contributing = (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")
    assert f"{EXTENSION}.s4ext" in contributing and f"{EXTENSION}.json" in contributing


# ----------------------------------------------------------------------------------------------------------
# The checks catch what they are meant to catch
# ----------------------------------------------------------------------------------------------------------
def make_repo(tmp_path: Path) -> Path:
    """A copy of the files the checks read (top-level CMake, description, licence, images)."""
    repo = tmp_path / "repo"
    for rel in ("CMakeLists.txt", f"{EXTENSION}.json", "LICENSE", "Resources/MedSegSlicer.png",
                "Resources/Screenshots/medsam_box.png", "Resources/Screenshots/demo_overlay.png"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, repo / rel)
    return repo


def edit_json(repo: Path, **changes) -> Path:
    path = repo / f"{EXTENSION}.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta.update(changes)
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def failures(repo: Path, description: Optional[Path] = None) -> Dict[str, str]:
    results = run_index_checks(repo, description or repo / f"{EXTENSION}.json")
    return {k: v for k, v in results.items() if v}


def test_copy_passes_and_the_old_metadata_fails_exactly_the_two_checks_of_the_issue(tmp_path):
    repo = make_repo(tmp_path)
    assert failures(repo) == {}
    # before: scm_url .../MedSegSlicer.git and icon / screenshot URLs built from a CMake variable
    edit_json(repo, scm_url="https://github.com/MedSegSlicer/MedSegSlicer.git")
    cmake = repo / "CMakeLists.txt"
    text = cmake.read_text(encoding="utf-8")
    text = re.sub(r'set\(EXTENSION_ICONURL "[^"]*"\)', 'set(EXTENSION_ICONURL "${RAW_URL}/Resources/MedSegSlicer.png")',
                  text)
    text = re.sub(r'set\(EXTENSION_SCREENSHOTURLS "[^"]*"\)',
                  'set(EXTENSION_SCREENSHOTURLS "${RAW_URL}/Resources/Screenshots/medsam_box.png")', text)
    cmake.write_text(text)
    found = failures(repo)
    assert set(found) == {"git repository name", "CMakeLists.txt content"}
    assert "'MedSegSlicer' must start with 'Slicer'" in found["git repository name"]
    assert "'${RAW_URL}/Resources/MedSegSlicer.png' is not a literal http(s) URL" in found["CMakeLists.txt content"]


@pytest.mark.parametrize("change, check_name, message", [
    (dict(category="Segmentations"), "category", "category 'Segmentations' is not one of"),
    (dict(scm_url="ftp://example.org/SlicerMedSeg.git"), "SCM URL syntax", "scheme 'ftp'"),
    (dict(scm_url="github.com/MedSegSlicer/SlicerMedSeg.git"), "SCM URL syntax", "is not scheme://host/path"),
    (dict(tier=7), "JSON schema", "7 is greater than the maximum of 5 at 'tier'"),
    (dict(scm_type="svn"), "JSON schema", "'svn' is not one of ['git', 'local'] at 'scm_type'"),
    (dict(homepage="https://x"), "JSON schema", "Additional properties are not allowed ('homepage' was unexpected)"),
    (dict(scm_url="https://github.com/MedSegSlicer/MedSeg.git"), "git repository name", "'MedSeg' must start"),
])
def test_bad_description_is_caught(tmp_path, change, check_name, message):
    repo = make_repo(tmp_path)
    edit_json(repo, **change)
    found = failures(repo)
    assert check_name in found and message in found[check_name], found


def test_missing_schema_key_is_caught(tmp_path):
    repo = make_repo(tmp_path)
    path = repo / f"{EXTENSION}.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    del meta["scm_url"]
    meta["scm_url_"] = "x"
    path.write_text(json.dumps(meta))
    result = check_json_schema_message(repo, path)
    assert "'scm_url' is a required property" in result


def check_json_schema_message(repo: Path, path: Path) -> str:
    with pytest.raises(CheckFailed) as e:
        check_json_schema(EXTENSION, json.loads(path.read_text(encoding="utf-8")), repo, path)
    return str(e.value)


def test_crlf_and_slicer_prefixed_extension_name_are_caught(tmp_path):
    repo = make_repo(tmp_path)
    path = repo / f"{EXTENSION}.json"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert "CR or CRLF" in failures(repo)["JSON file format"]
    renamed = repo / "SlicerMedSeg.json"
    shutil.copy2(path, renamed)
    found = failures(repo, renamed)
    assert "'SlicerMedSeg' must not start with 'Slicer'" in found["extension name"]
    assert "project name 'MedSegSlicer' is not the extension name 'SlicerMedSeg'" in found["CMakeLists.txt content"]


def test_image_urls_must_name_existing_images_of_this_repository(tmp_path):
    repo = make_repo(tmp_path)
    (repo / "Resources" / "Screenshots" / "demo_overlay.png").unlink()
    (repo / "Resources" / "MedSegSlicer.png").write_text("not an image")
    found = failures(repo)["CMakeLists.txt content"]
    assert "Resources/Screenshots/demo_overlay.png, which is not in the repository" in found
    assert "Resources/MedSegSlicer.png, which is not a PNG, JPEG or GIF image" in found
    cmake = repo / "CMakeLists.txt"
    cmake.write_text(cmake.read_text(encoding="utf-8").replace("raw.githubusercontent.com/MedSegSlicer/SlicerMedSeg",
                                               "raw.githubusercontent.com/someone/SlicerOther"))
    assert "is not a raw.githubusercontent.com/MedSegSlicer/SlicerMedSeg/<revision>/<path> URL" in \
        failures(repo)["CMakeLists.txt content"]


def test_missing_licence_and_oversized_repository_are_caught(tmp_path):
    repo = make_repo(tmp_path)
    (repo / "LICENSE").unlink()
    with open(repo / "weights.bin", "wb") as f:  # sparse: 101 MB apparent size, no disk used
        f.truncate((SIZE_LIMIT_MB + 1) * 2 ** 20)
    found = failures(repo)
    assert found["licence file"] == "no licence file at the repository root"
    assert found["repository size"].startswith(f"repository size {SIZE_LIMIT_MB + 1}.0 MB exceeds")
