"""The batch manifest: a CSV file, one row per case, checked whole before anything runs.

Columns (header row required; names case-insensitive; unknown columns are refused; paths relative to the manifest's
folder):

=============  ==========================================================================================
case_id        required: letters, digits, ``.``, ``_``, ``-``; unique (names the record and the outputs)
image          required: volume file (NRRD, NIfTI, MHA) or DICOM folder
model          ``lite-medsam`` (default), ``medsam-vit-b`` or ``universeg``
boxes          MedSAM: ``x0,y0,z0,x1,y1,z1;...`` voxel indices, inclusive (one object per box)
label, labels  MedSAM, instead of boxes: a label map on the image's grid and the values to box (``5;1``)
margin         with label + labels: voxels added on every side of each tight box (default 0)
examples       UniverSeg: ``IMG:LABEL;IMG:LABEL`` example pairs
library        UniverSeg: an example library folder or imported library name
value          UniverSeg: the structure's value in the examples (default: the library's, else 1)
roi            UniverSeg: ``x0,y0,z0,x1,y1,z1`` (voxels outside stay 0)
propagation    MedSAM 3-D propagation (default ``official``)
axis           slicing axis (default ``axial``)
intensity      intensity preset (default ``auto``; UniverSeg: the library's)
weights        a checkpoint file (default: the installed weights of the model)
output         file name of the label map in the output folder (default ``<case_id>.nii.gz``, or ``.seg.dcm``)
reference      a reference label map for Dice and surface distance (values: ``labels`` / ``value`` / non-zero)
structures     one name per object (``liver;spleen``): the segment names and SNOMED CT codes of a DICOM SEG
=============  ==========================================================================================

:func:`load_manifest` returns one :class:`CaseSpec` per row, or raises :class:`ManifestError` listing every bad row
with its line number. Nothing here imports torch or Ray.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..choices import DEFAULT_AXIS, DEFAULT_PROPAGATION, MEDSAM_MODELS, PROPAGATIONS
from ..errors import InputError, MedSegError

MODELS = MEDSAM_MODELS + ("universeg",)
COLUMNS = ("case_id", "image", "model", "boxes", "label", "labels", "margin", "examples", "library", "value", "roi",
           "propagation", "axis", "intensity", "weights", "output", "reference", "structures")
FORMATS = ("nifti", "nrrd", "dicom-seg")
DEFAULT_EXT = {"nifti": ".nii.gz", "nrrd": ".nrrd", "dicom-seg": ".seg.dcm"}
VOLUME_OUTPUTS = (".nii.gz", ".nii", ".nrrd", ".mha")
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: the registry name of each manifest model (weights, licence)
WEIGHTS_NAME = {"lite-medsam": "lite-medsam", "medsam-vit-b": "medsam-vit-b", "universeg": "universeg-v1"}


class ManifestError(InputError):
    """A manifest with bad rows: the first line says how many and that nothing ran, then one line per bad row."""

    def __init__(self, path: str, problems: Sequence[Tuple[int, str]]) -> None:
        self.problems = list(problems)
        lines = [f"{path}: {len(self.problems)} problem(s), nothing was run: fix these rows and run again."]
        lines += [f"  line {n}: {msg}" for n, msg in self.problems]
        super().__init__("\n".join(lines))


@dataclass
class CaseSpec:
    """One checked case: everything a worker needs (plain data, JSON-able; stored in the case's record)."""

    case_id: str
    line: int
    image: str
    model: str
    output: str                                 # absolute path of the label map / DICOM SEG
    format: str
    weights: Optional[str] = None               # resolved weights file
    weights_sha256: Optional[str] = None
    boxes: List[List[int]] = field(default_factory=list)
    label_values: List[int] = field(default_factory=list)   # MedSAM with label + labels: the value of each box
    examples: List[List[str]] = field(default_factory=list)
    library: Optional[str] = None
    value: Optional[int] = None
    roi: Optional[List[int]] = None
    propagation: str = DEFAULT_PROPAGATION
    axis: str = DEFAULT_AXIS
    intensity: Optional[str] = None
    reference: Optional[str] = None
    structures: List[str] = field(default_factory=list)

    @property
    def is_medsam(self) -> bool:
        return self.model in MEDSAM_MODELS

    def as_dict(self) -> Dict:
        d = asdict(self)
        d.pop("line")  # where it sits in the manifest is not what produced it
        return d


# ------------------------------------------------------------------------------------------------- helpers --
def image_shape(path: str) -> Tuple[Tuple[int, ...], bool]:
    """(K, J, I) array shape of a volume file or DICOM folder from its header(s) only, and whether it is DICOM."""
    from ..io import _sitk

    sitk = _sitk()
    try:
        if os.path.isdir(path):
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(path)
            if not series:
                raise InputError(f"no DICOM series in folder {path}: point to a folder of one series' .dcm files")
            files = reader.GetGDCMSeriesFileNames(path, series[0])
            info = sitk.ImageFileReader()
            info.SetFileName(files[0])
            info.ReadImageInformation()
            size = info.GetSize()
            return (len(files), size[1], size[0]), True
        info = sitk.ImageFileReader()
        info.SetFileName(path)
        info.ReadImageInformation()
        size = info.GetSize()
    except RuntimeError:
        raise InputError(f"cannot read {path} as an image: give a volume file (NRRD, NIfTI, MHA) or a DICOM "
                         "folder") from None
    if len(size) != 3 or info.GetNumberOfComponents() != 1:
        raise InputError(f"{path} is not a grey-level 3-D volume ({len(size)}-D, {info.GetNumberOfComponents()} "
                         "component(s)): batch runs segment volumes")
    return tuple(int(n) for n in size[::-1]), False


def _ints(text: str, what: str) -> List[int]:
    try:
        return [int(t) for t in text.replace(",", ";").split(";") if t.strip()]
    except ValueError:
        raise InputError(f"{what} '{text}' is not a list of integers: write e.g. 5;1") from None


def _path(base: str, text: str, what: str, folder_ok: bool = False) -> str:
    p = os.path.normpath(os.path.join(base, os.path.expanduser(text)))
    if not os.path.exists(p):
        raise InputError(f"{what} {text} not found (looked for {p}): fix the path (relative to the manifest's folder)")
    if os.path.isdir(p) and not folder_ok:
        raise InputError(f"{what} {text} is a folder: give a file")
    return p


def _weights(model: str, weights: Optional[str], cache: Dict) -> Tuple[str, str]:
    """The weights file of a row and its sha256 (hashed once per file per run)."""
    from ..download import sha256_file
    from ..weights.store import resolve_weights

    key = (model, weights)
    if key not in cache:
        try:
            path = str(resolve_weights(WEIGHTS_NAME[model], weights))
            cache[key] = (path, sha256_file(path))
        except MedSegError as exc:
            cache[key] = exc
    got = cache[key]
    if isinstance(got, Exception):
        raise got
    return got


def _check_row(row: Dict[str, str], base: str, outdir: str, fmt: str, line: int, wcache: Dict) -> CaseSpec:
    from ..textforms import parse_box, quiet_check
    from ..runspec import check_choice
    from ..slicing import axis_name, bbox3d, check_box

    case_id = row.get("case_id", "")
    if not _CASE_ID.match(case_id):
        raise InputError(f"case_id '{case_id}' must start with a letter or digit and hold only letters, digits, "
                         "'.', '_' and '-' (it names the outputs)")
    if not row.get("image"):
        raise InputError("image is empty: give a volume file or a DICOM folder")
    image = _path(base, row["image"], "image", folder_ok=True)
    model = row.get("model") or "lite-medsam"
    if model not in MODELS:
        raise InputError(f"model '{model}' is unknown: use {', '.join(MODELS)}")
    axis = axis_name(row.get("axis") or DEFAULT_AXIS)          # the run spec's axis check and message
    shape, is_dicom = image_shape(image)
    if fmt == "dicom-seg" and not is_dicom:
        raise InputError(f"--format dicom-seg needs a DICOM folder as image, {row['image']} is a file: drop "
                         "--format dicom-seg or give the DICOM series")
    spec = CaseSpec(case_id=case_id, line=line, image=image, model=model, output="", format=fmt, axis=axis,
                    intensity=row.get("intensity") or None)
    ext = DEFAULT_EXT[fmt]
    name = row.get("output") or case_id + ext
    if os.path.basename(name) != name or name in (".", ".."):
        raise InputError(f"output '{name}' must be a file name (no folder): it is written into the output folder")
    if fmt == "dicom-seg":
        if not name.lower().endswith(".dcm"):
            raise InputError(f"output '{name}' must end with .dcm with --format dicom-seg")
    elif not any(name.lower().endswith(e) for e in VOLUME_OUTPUTS):
        raise InputError(f"output '{name}' must end with one of {', '.join(VOLUME_OUTPUTS)}")
    spec.output = os.path.join(outdir, name)
    medsam_cols = [c for c in ("boxes", "label", "labels", "margin", "propagation") if row.get(c)]
    useg_cols = [c for c in ("examples", "library", "value", "roi") if row.get(c)]
    if model in MEDSAM_MODELS:
        if useg_cols:
            raise InputError(f"{', '.join(useg_cols)} belong to UniverSeg rows: set model to universeg or clear them")
        spec.propagation = check_choice(row.get("propagation") or DEFAULT_PROPAGATION, PROPAGATIONS, "propagation")
        if row.get("boxes") and (row.get("label") or row.get("labels")):
            raise InputError("give boxes, or label + labels, not both")
        if row.get("boxes"):
            boxes = [parse_box(b, 3) for b in row["boxes"].split(";") if b.strip()]
        elif row.get("label") and row.get("labels"):
            from ..io import read_image

            lab = read_image(_path(base, row["label"], "label"), label=True).array
            if lab.shape != shape:
                raise InputError(f"label {row['label']} {lab.shape} and image {shape} differ in shape: give the "
                                 "label map drawn on this image")
            try:
                margin = int(row.get("margin") or 0)
            except ValueError:
                raise InputError(f"margin '{row['margin']}' is not an integer") from None
            if margin < 0:
                raise InputError(f"margin {margin} is negative: give 0 or more voxels")
            values = _ints(row["labels"], "labels")
            absent = [v for v in values if not (lab == v).any()]
            if absent:
                raise InputError(f"label value(s) {', '.join(map(str, absent))} not in {row['label']}: pick values "
                                 "present in the label map")
            boxes = [bbox3d(lab == v, margin) for v in values]
            spec.label_values = values
        else:
            raise InputError("no prompt: give boxes (x0,y0,z0,x1,y1,z1;...) or label + labels")
        if not boxes:
            raise InputError("boxes is empty: give x0,y0,z0,x1,y1,z1 (several separated by ';')")
        for i, b in enumerate(boxes):
            quiet_check(check_box, b, shape, what=f"Box {i + 1}", axis=axis)
        spec.boxes = [list(map(int, b)) for b in boxes]
    else:
        if medsam_cols:
            raise InputError(f"{', '.join(medsam_cols)} belong to MedSAM rows: clear them for universeg")
        if bool(row.get("examples")) == bool(row.get("library")):
            raise InputError("a universeg row needs examples (IMG:LABEL;...) or library, exactly one of them")
        if row.get("examples"):
            from ..textforms import split_pair

            for pair in (p for p in row["examples"].split(";") if p.strip()):
                a, b = split_pair(pair.strip())
                spec.examples.append([_path(base, a, "example image"), _path(base, b, "example label")])
        else:
            from ..universeg.library import read_manifest, resolve_library

            lib = row["library"]
            cand = os.path.join(base, lib)
            root = resolve_library(cand if os.path.isdir(cand) else lib)
            read_manifest(root)
            spec.library = str(root)
        if row.get("value"):
            spec.value = _ints(row["value"], "value")[0] if _ints(row["value"], "value") else None
        if row.get("roi"):
            spec.roi = list(parse_box(row["roi"], 3))
            quiet_check(check_box, spec.roi, shape, what="ROI", axis=axis)
    if row.get("intensity"):
        from ..intensity import resolve_preset
        import numpy as np

        resolve_preset(row["intensity"], np.array([0.0, 1.0]))  # an unknown name is refused here
    if row.get("reference"):
        spec.reference = _path(base, row["reference"], "reference")
        ref_shape, _ = image_shape(spec.reference)
        if ref_shape != shape:
            raise InputError(f"reference {row['reference']} {ref_shape} and image {shape} differ in shape: give a "
                             "label map on the image's grid")
    if row.get("structures"):
        spec.structures = [s.strip() for s in row["structures"].split(";")]
        n = len(spec.boxes) if spec.is_medsam else 1
        if len(spec.structures) != n:
            raise InputError(f"structures names {len(spec.structures)} structure(s) for {n} object(s): give one "
                             "name per box (or label value)")
    if fmt == "dicom-seg":
        from .dicomseg import structure_code

        for s in spec.structures:
            structure_code(s)
    spec.weights, spec.weights_sha256 = _weights(model, _path(base, row["weights"], "weights")
                                                 if row.get("weights") else None, wcache)
    return spec


def load_manifest(path: str, outdir: str, fmt: str = "nifti") -> List[CaseSpec]:
    """Read and check every row of the manifest at ``path`` (outputs go into ``outdir``); raise
    :class:`ManifestError` naming every bad row, or return the cases."""
    if fmt not in FORMATS:
        raise InputError(f"Unknown format '{fmt}': use {', '.join(FORMATS)}.")
    if not os.path.isfile(path):
        raise InputError(f"Manifest {path} not found: give a CSV file with one row per case.")
    base = os.path.dirname(os.path.abspath(path))
    outdir = os.path.abspath(outdir)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"Manifest {path} is not a readable CSV text file ({exc}): save it as UTF-8 CSV.") from None
    if not rows:
        raise InputError(f"Manifest {path} is empty: write a header row (case_id,image,...) and one row per case.")
    header = [h.strip().lower() for h in rows[0]]
    unknown = [h for h in header if h not in COLUMNS]
    missing = [c for c in ("case_id", "image") if c not in header]
    if unknown or missing or len(set(header)) != len(header):
        what = (f"unknown column(s) {', '.join(unknown)}" if unknown else
                f"missing column(s) {', '.join(missing)}" if missing else "a column named twice")
        raise ManifestError(path, [(1, f"{what}: the header names columns among {', '.join(COLUMNS)}")])
    problems: List[Tuple[int, str]] = []
    cases: List[CaseSpec] = []
    seen_ids: Dict[str, int] = {}
    seen_out: Dict[str, int] = {}
    wcache: Dict = {}
    for n, raw in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in raw) or raw[0].lstrip().startswith("#"):
            continue
        if len(raw) > len(header):
            problems.append((n, f"{len(raw)} fields for {len(header)} columns: quote fields that hold commas "
                                '(e.g. "10,20,0,80,90,5")'))
            continue
        row = {h: (raw[i].strip() if i < len(raw) else "") for i, h in enumerate(header)}
        try:
            spec = _check_row(row, base, outdir, fmt, n, wcache)
        except MedSegError as exc:
            problems.append((n, str(exc).rstrip(".")))
            continue
        if spec.case_id in seen_ids:
            problems.append((n, f"case_id '{spec.case_id}' is already used on line {seen_ids[spec.case_id]}: give "
                                "each case its own id"))
            continue
        key = os.path.normcase(spec.output)
        if key in seen_out:
            problems.append((n, f"output {os.path.basename(spec.output)} is already written by line {seen_out[key]}: "
                                "give each case its own output name"))
            continue
        seen_ids[spec.case_id], seen_out[key] = n, n
        cases.append(spec)
    if problems:
        raise ManifestError(path, problems)
    if not cases:
        raise InputError(f"Manifest {path} has no cases: add one row per case below the header.")
    return cases
