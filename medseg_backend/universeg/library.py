"""Example libraries: a folder of example images + labels with a small JSON manifest.

Layout (written by :func:`export_library`; hand-made folders work too)::

    liver-ct/
      manifest.json
      images/000.nrrd   labels/000.seg.nrrd
      images/001.nrrd   labels/001.seg.nrrd   ...

``manifest.json``::

    {"format": "medseg-universeg-library", "version": 1,
     "structure": "liver", "modality": "CT", "intensity": "ct-abdomen", "label": 5,
     "items": [{"name": "case7 axial slice 12", "image": "images/000.nrrd", "label": "labels/000.seg.nrrd"}, ...]}

Labels are written as Slicer segmentation files (``.seg.nrrd``: one segment named after the structure, with its
colour), so each example opens in Slicer by drag and drop with its image; label maps in any format SimpleITK
reads are read too (older libraries, hand-made folders). Items are 2-D slices or 3-D volumes (NRRD, NIfTI, MHA,
PNG, TIFF); paths are relative to the folder. ``label`` is the structure's value in the label files, ``intensity`` the preset to use
with these examples (``auto`` decides on the target). Libraries can be imported into the shared cache
(``<cache>/libraries/<name>``, see :func:`import_library`) and then be named instead of given as a path.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import segnrrd
from ..errors import InputError, MedSegWarning
from ..intensity import parse_preset
from .examples import Example, _check_label_value, _values_text

MANIFEST = "manifest.json"
STRUCTURE_COLOR = (0.90, 0.62, 0.0)
FORMAT = "medseg-universeg-library"
VERSION = 1
PathLike = Union[str, os.PathLike]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# ----------------------------------------------------------------------------------------------- writing --
def _write_array(path: Path, array: np.ndarray) -> None:
    import SimpleITK as sitk

    arr = np.ascontiguousarray(array)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path), True)


def _write_segmentation(path: Path, mask: np.ndarray, structure: str) -> None:
    """One example's label as a Slicer segmentation file with one segment named ``structure``, on the same
    (unit-spacing, identity) grid as the image written beside it, so both overlay in Slicer."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim == 2:
        m = m[None]
    segment = segnrrd.Segment(name=structure, color=STRUCTURE_COLOR, label_value=1, id=structure)
    segnrrd.write(str(path), m.astype(np.uint8), [segment], spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                  direction=np.eye(3).ravel())


def _read_segmentation(path: Path, structure: str, value: int, image_shape) -> np.ndarray:
    """A ``.seg.nrrd`` example label -> label array with ``value`` where the structure's segment is (the segment
    named ``structure``, else the file's only segment), in the image's shape (2-D images: one slice)."""
    f = segnrrd.read(str(path))
    names = f.names
    if structure in names:
        mask = f.mask(structure)
    elif len(names) == 1:
        mask = f.mask(names[0])
    else:
        raise InputError(f"{path} has segments {', '.join(names)} but none named '{structure}': rename the "
                         "segment in Slicer or fix 'structure' in the manifest.")
    if len(image_shape) == 2 and mask.shape[0] == 1:
        mask = mask[0]
    return np.where(mask, value, 0).astype(np.uint8 if 0 < value < 256 else np.int32)


def export_library(folder: PathLike, examples: Sequence[Example], *, structure: str, modality: str,
                   intensity: str = "auto", label: int = 1, overwrite: bool = False) -> Path:
    """Write ``examples`` (2-D slices or 3-D volumes) as a library folder; returns the folder.

    Only the structure (``label``) is kept in the label files. Examples without it are skipped with a warning
    (error when none remain). The folder is built next to its destination and renamed into place, so a failed
    export leaves nothing behind; an existing non-empty folder is replaced only with ``overwrite=True`` and
    only if it is a library (has a ``manifest.json``)."""
    value = _check_label_value(label)
    target = Path(os.path.expanduser(os.fspath(folder)))
    structure = (structure or "").strip()
    if not structure:
        raise InputError("The library needs a structure name (e.g. --structure liver): it is shown when the "
                         "library is listed and used.")
    segnrrd.check_name(structure, "Structure name", in_file=True)
    parse_preset(intensity)  # unknown preset -> InputError now, not when the library is used
    if not examples:
        raise InputError("No examples to export: give at least one example image with its label.")
    keep, skipped = [], []
    for i, ex in enumerate(examples):
        if not isinstance(ex, Example):
            raise InputError(f"Example {i} is a {type(ex).__name__}, not an Example(image, label, name).")
        (keep if np.any(ex.label == value) else skipped).append(ex)
    if not keep:
        seen = set()
        for ex in examples:
            seen.update(int(v) for v in np.unique(ex.label))
        raise InputError(f"None of the {len(examples)} example(s) contains label {value} (values present: "
                         f"{_values_text(seen)}): pass --label with the structure's value.")
    if skipped:
        warnings.warn(f"{len(skipped)} example(s) without label {value} were not exported: "
                      f"{', '.join(e.name or '?' for e in skipped[:5])}.", MedSegWarning, stacklevel=2)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"Folder {parent} does not exist: create it first or choose another library path.")
    from ..io import check_writable_folder

    check_writable_folder(parent, "library")
    if target.exists():
        if not target.is_dir():
            raise InputError(f"{target} exists and is not a folder: choose a new library folder name.")
        if any(target.iterdir()):
            if not (target / MANIFEST).is_file():
                raise InputError(f"{target} is a non-empty folder that is not an example library: choose a new or "
                                 "empty folder.")
            if not overwrite:
                raise InputError(f"Library {target} already exists: choose another folder or pass --overwrite "
                                 "to replace it.")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=str(parent)))
    try:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        items = []
        for i, ex in enumerate(keep):
            img_rel, lab_rel = f"images/{i:03d}.nrrd", f"labels/{i:03d}{segnrrd.SUFFIX}"
            _write_array(tmp / img_rel, ex.image)
            _write_segmentation(tmp / lab_rel, ex.label == value, structure)
            items.append({"name": ex.name or f"example {i}", "image": img_rel, "label": lab_rel,
                          "shape": list(ex.image.shape)})
        manifest = {"format": FORMAT, "version": VERSION, "structure": structure,
                    "modality": (modality or "unknown").strip() or "unknown", "intensity": intensity or "auto",
                    "label": value, "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "items": items}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        _make_public_dir(tmp)
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _make_public_dir(folder: Path) -> None:
    """tempfile.mkdtemp makes 0700 folders: give the finished library the umask's permissions, like mkdir."""
    from ..io import make_public

    make_public(folder, folder=True)
    for sub in folder.rglob("*"):
        if sub.is_dir():
            make_public(sub, folder=True)


def _replace_dir(new: Path, target: Path) -> None:
    """Move the finished folder ``new`` to ``target`` (an absent, empty or replaceable folder)."""
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, backup)
    try:
        os.replace(new, target)
    except OSError:
        if backup is not None:
            os.replace(backup, target)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- reading --
def read_manifest(folder: PathLike) -> Dict:
    """Read and check ``manifest.json`` of a library folder (no image is read)."""
    root = Path(os.path.expanduser(os.fspath(folder)))
    if not root.is_dir():
        raise InputError(f"Example library {root} not found: give the folder that holds manifest.json (or the name "
                         "of an imported library, see `medseg library list`).")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise InputError(f"No {MANIFEST} in {root}: this folder is not an example library; create one with "
                         "`medseg library export` (or write a manifest, see GUIDE.md).")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{mpath} is not a text file: re-export the library or fix the manifest.") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{mpath} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}): fix the "
                         "file or re-export the library.") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{mpath} must hold a JSON object with structure, label and items: re-export the library.")
    fmt = manifest.get("format", FORMAT)
    if fmt != FORMAT:
        raise InputError(f"{mpath} has format '{fmt}', not '{FORMAT}': this is not a MedSegSlicer example library.")
    version = manifest.get("version", VERSION)
    if not isinstance(version, int) or version > VERSION:
        raise InputError(f"{mpath} has version {version!r}; this MedSegSlicer reads version {VERSION}: update "
                         "MedSegSlicer or re-export the library.")
    missing = [k for k in ("structure", "label", "items") if k not in manifest]
    if missing:
        raise InputError(f"{mpath} lacks {', '.join(missing)}: add them (see GUIDE.md) or re-export the library.")
    if not isinstance(manifest["structure"], str) or not manifest["structure"].strip():
        raise InputError(f"{mpath}: 'structure' must be a non-empty name such as \"liver\".")
    lab = manifest["label"]
    if isinstance(lab, bool) or not isinstance(lab, int) or lab == 0:
        raise InputError(f"{mpath}: 'label' must be the structure's non-zero integer value in the label files "
                         f"(found {lab!r}).")
    intensity = manifest.setdefault("intensity", "auto")
    if not isinstance(intensity, str):
        raise InputError(f"{mpath}: 'intensity' must be a preset name such as \"ct-abdomen\" or \"auto\".")
    try:
        parse_preset(intensity)
    except InputError as exc:
        raise InputError(f"{mpath}: {exc}") from None
    manifest.setdefault("modality", "unknown")
    items = manifest["items"]
    if not isinstance(items, list) or not items:
        raise InputError(f"{mpath}: 'items' must be a non-empty list of {{\"image\": ..., \"label\": ...}} entries.")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("image"), str) or \
                not isinstance(item.get("label"), str):
            raise InputError(f"{mpath}: item {i} must be an object with \"image\" and \"label\" file paths.")
        for key in ("image", "label"):
            _item_path(root, item[key], mpath, i)
    return manifest


def _item_path(root: Path, rel: str, mpath: Path, i: int) -> Path:
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise InputError(f"{mpath}: item {i} path '{rel}' must be relative and inside the library folder.")
    return root / p


def load_library(folder: PathLike) -> Tuple[List[Example], Dict]:
    """Read a library: ``(examples, manifest)``. Label files keep their values; ``manifest['label']`` is the
    structure's value. Raises :class:`InputError` for a missing/broken manifest or missing/unreadable files."""
    from ..io import check_same_grid, read_image

    root = resolve_library(folder)
    manifest = read_manifest(root)
    mpath = root / MANIFEST
    examples = []
    for i, item in enumerate(manifest["items"]):
        paths = {k: _item_path(root, item[k], mpath, i) for k in ("image", "label")}
        for key, p in paths.items():
            if not p.is_file():
                raise InputError(f"Library {root}: {key} file '{item[key]}' of item {i} is missing: restore it or "
                                 f"remove the item from {MANIFEST}.")
        img = read_image(str(paths["image"]))
        if str(paths["label"]).lower().endswith(segnrrd.SUFFIX):
            try:
                label_array = _read_segmentation(paths["label"], manifest["structure"], int(manifest["label"]),
                                                 img.array.shape)
            except InputError as exc:
                raise InputError(f"Library {root}, item {i}: {exc}") from None
        else:
            lab = read_image(str(paths["label"]), label=True)
            if lab.is_rgb:
                raise InputError(f"Library {root}: label file '{item['label']}' is an RGB image: save labels as "
                                 "grey label maps.")
            check_same_grid(img, lab, f"Library {root}, item {i}")
            label_array = lab.array
        name = str(item.get("name") or Path(item["image"]).stem)
        try:
            examples.append(Example(img.array, label_array, name))
        except InputError as exc:
            raise InputError(f"Library {root}, item {i}: {exc}") from None
    return examples, manifest


# ------------------------------------------------------------------------------------ the shared collection --
def libraries_dir() -> Path:
    """Imported libraries live in ``<cache>/libraries`` (the weights cache folder, shared across Slicer
    versions; ``MEDSEG_HOME`` overrides)."""
    from ..weights import cache_dir

    return Path(cache_dir()) / "libraries"


def resolve_library(name_or_path: PathLike) -> Path:
    """A folder path as given, or the name of an imported library."""
    p = Path(os.path.expanduser(os.fspath(name_or_path)))
    if p.is_dir():
        return p
    text = os.fspath(name_or_path)
    if _NAME_RE.match(text):
        cand = libraries_dir() / text
        if cand.is_dir():
            return cand
    raise InputError(f"Example library '{text}' not found (neither a folder nor an imported library): give the "
                     "folder path, or see `medseg library list`.")


def import_library(source: PathLike, name: Optional[str] = None, *, overwrite: bool = False) -> Path:
    """Check a library folder (manifest and every file readable) and copy it into the shared collection."""
    from ..weights import cache_dir
    from ..io import check_writable_folder
    from ..locking import FileLock

    src = Path(os.path.expanduser(os.fspath(source)))
    name = name or re.sub(r"[^A-Za-z0-9._-]+", "-", src.resolve().name).strip("-.") or "library"
    if not _NAME_RE.match(name):
        raise InputError(f"Library name '{name}' is not usable: use letters, digits, '.', '_' or '-' (up to 64).")
    dest_root = libraries_dir()
    try:
        dest_root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"Cannot create the library collection folder {dest_root} ({e.strerror}): set MEDSEG_HOME "
                         "to a writable folder.") from None
    check_writable_folder(dest_root, "library collection")
    dest = dest_root / name
    if dest.exists() and not overwrite:
        raise InputError(f"An imported library named '{name}' already exists: pass --name NEW or --overwrite.")
    examples, manifest = load_library(src)
    with FileLock(Path(cache_dir()) / "locks" / f"library-{name}.lock", what=f"importing the library '{name}'",
                  on_wait=lambda m: warnings.warn(m, MedSegWarning, stacklevel=3)):
        if dest.exists() and not overwrite:  # again: another process may have imported it meanwhile
            raise InputError(f"An imported library named '{name}' already exists (another process imported it just "
                             "now): pass --name NEW or --overwrite.")
        _copy_library(src, manifest, dest_root, dest, name)
    return dest


def _copy_library(src: Path, manifest: Dict, dest_root: Path, dest: Path, name: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=str(dest_root)))
    try:
        shutil.copy2(src / MANIFEST, tmp / MANIFEST)
        for item in manifest["items"]:
            for key in ("image", "label"):
                rel = Path(item[key])
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / rel, tmp / rel)
        _make_public_dir(tmp)
        _replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def library_summary(folder: PathLike) -> Dict:
    root = resolve_library(folder)
    m = read_manifest(root)
    return {"name": root.name, "path": str(root), "structure": m["structure"], "modality": m.get("modality"),
            "intensity": m.get("intensity"), "label": m["label"], "items": len(m["items"])}


def list_libraries() -> List[Dict]:
    """Summaries of the imported libraries (broken ones listed with their error)."""
    root = libraries_dir()
    out = []
    if not root.is_dir():
        return out
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            out.append(library_summary(d))
        except InputError as exc:
            out.append({"name": d.name, "path": str(d), "error": str(exc)})
    return out
