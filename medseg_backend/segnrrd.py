"""Slicer's segmentation file (``.seg.nrrd``) read and written without Slicer, through slicerio.

The format (Slicer's developer guide, "Segmentation labelmap file format"): a standard NRRD image - 3 spatial axes,
or a leading ``list`` axis of *layers* when segments overlap - whose voxels hold each segment's label value in its
layer, plus header fields: ``SegmentN_ID / _Name / _Color / _LabelValue / _Layer / _Extent / _Tags`` per segment and
``Segmentation_MasterRepresentation`` / ``Segmentation_ContainedRepresentationNames`` /
``Segmentation_ReferenceImageExtentOffset`` for the whole file. A file written here opens in Slicer by drag and drop
with its segment names, colours and tags (the terminology is the ``TerminologyEntry`` tag); a file saved by Slicer
reads back here.

The file itself is read and written by **slicerio** (Slicer's core developers' pure-Python reader / writer of
Slicer data; optional extra ``medseg-backend[segnrrd]``): :func:`read` and :func:`write` go through its
segmentation dict (``voxels``, ``ijkToLPS``, ``segments`` with ``id``, ``name``, ``color``, ``labelValue``, ``layer``,
``extent``, ``terminology``, ``status``, ``tags``). What stays here: the name check before anything is written
(:func:`check_name`: slicerio writes any name, and a newline would corrupt the header), the checks of the arrays and
segments, the label type, each segment's extent, the all-or-nothing write (temporary file + rename, umask), the
errors with their fix, and the (K, J, I) arrays with SimpleITK geometry (``spacing``, ``origin``, a row-major 3x3
``direction`` in LPS).

Why a fallback (:func:`_write_fields` / :func:`_read_fields`, pynrrd only): the example libraries (``medseg library
export``, the UniverSeg effect's libraries) write and read ``.seg.nrrd`` files on the local path, which needs only
the core dependencies; without slicerio the same dict is written and read for the fields this module uses, and the
tests check that both give the same fields. One visible difference from files written before slicerio: a segment
without tags has ``Tags:=|`` (slicerio's, which older Slicer releases expect) instead of an empty value; Slicer
reads both as no tag (``vtkMRMLSegmentationStorageNode::SetSegmentTagsFromString``).
"""
from __future__ import annotations

import os
import tempfile
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError

SUFFIX = ".seg.nrrd"


def check_name(name: str, what: str = "Segment name", *, in_file: bool = False) -> str:
    """The one check of a segment or structure name, wherever one is made (command line, library export, Slicer
    segment): no control character (a newline, tab, NUL, escape, line or paragraph separator ...), which would end
    the header line of a ``.seg.nrrd`` and make the file unreadable. ``in_file``: the name goes into a file
    written here, whose header is ASCII (pynrrd), so letters outside ASCII are refused too. Returns ``name``."""
    name = str(name)
    for i, ch in enumerate(name):
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            raise InputError(f"{what} {name!r} holds a control character ({_char_name(ch)} at position {i + 1}), "
                             "which would corrupt the segmentation file: type the name on one line, without it.")
    if in_file and not name.isascii():
        ch = next(c for c in name if not c.isascii())
        raise InputError(f"{what} {name!r} holds {ch!r} ({_char_name(ch)}), which a .seg.nrrd header written here "
                         "cannot hold: use ASCII letters (e.g. 'e' for 'é').")
    return name


_CONTROL_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\x00": "a NUL"}


def _char_name(ch: str) -> str:
    if ch in _CONTROL_NAMES:
        return f"{_CONTROL_NAMES[ch]}, U+{ord(ch):04X}"
    return f"U+{ord(ch):04X}" + (f" {unicodedata.name(ch)}" if unicodedata.name(ch, "") else "")


@dataclass
class Segment:
    name: str
    color: Tuple[float, float, float] = (0.9, 0.6, 0.0)
    label_value: int = 1
    layer: int = 0
    id: str = ""
    tags: Dict[str, str] = field(default_factory=dict)


@dataclass
class SegmentationFile:
    segments: List[Segment]
    layers: np.ndarray                    # (L, K, J, I) label values per layer
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: Tuple[float, ...]          # 9 values, row-major, LPS

    def mask(self, name_or_id: str) -> np.ndarray:
        """The (K, J, I) bool mask of the segment with this name (or ID)."""
        for s in self.segments:
            if name_or_id in (s.name, s.id):
                return self.layers[s.layer] == s.label_value
        names = ", ".join(s.name for s in self.segments) or "none"
        raise InputError(f"No segment '{name_or_id}' in the segmentation file (segments: {names}): use one of them.")

    @property
    def names(self) -> List[str]:
        return [s.name for s in self.segments]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _slicerio():
    """The slicerio package, or None when it is not installed (the pynrrd fallback is used)."""
    try:
        import slicerio.segmentation as sio
    except ImportError:
        return None
    return sio


def write(path: str, layers: np.ndarray, segments: Sequence[Segment], *, spacing: Sequence[float],
          origin: Sequence[float], direction: Sequence[float]) -> None:
    """Write a segmentation file. ``layers``: (K, J, I) or (L, K, J, I) integer label values; each segment names
    its layer and label value. The file appears complete or not at all (temporary file + rename)."""
    data = np.asarray(layers)
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4 or data.shape[0] < 1 or min(data.shape[1:]) < 1:
        raise InputError(f"A segmentation needs a (K, J, I) or (layers, K, J, I) label array, not shape {data.shape}.")
    if not segments:
        raise InputError("A segmentation file needs at least one segment.")
    if not np.issubdtype(data.dtype, np.integer):
        raise InputError(f"Segment label arrays must be integers, not {data.dtype}.")
    for s in segments:
        check_name(s.name, in_file=True)
        check_name(s.id or "Segment", "Segment ID", in_file=True)
        if not (0 <= int(s.layer) < data.shape[0]) or int(s.label_value) < 1:
            raise InputError(f"Segment '{s.name}': layer {s.layer} / label value {s.label_value} do not fit the data "
                             f"({data.shape[0]} layer(s), label values >= 1).")
    dtype = np.uint8 if data.max(initial=0) < 256 and data.min(initial=0) >= 0 else np.int16
    data = data.astype(dtype)
    fields = _segmentation_fields(data, segments, spacing, origin, direction)
    folder = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=folder)
    os.close(fd)
    try:
        sio = _slicerio()
        if sio is not None:
            sio.write_segmentation(tmp, fields, index_order="C")
        else:
            _write_fields(tmp, fields)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _segmentation_fields(data: np.ndarray, segments: Sequence[Segment], spacing, origin, direction) -> dict:
    """slicerio's segmentation dict for (L, K, J, I) ``data``: voxels in C order ((K, J, I), or (K, J, I, L) with
    the layer axis fastest, which is the file's leading ``list`` axis), ``ijkToLPS`` from the SimpleITK geometry,
    one dict per segment (colour values already formatted as the file shows them, ``%g``)."""
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = np.asarray(direction, float).reshape(3, 3) * np.asarray(spacing, float)[None, :]
    ijk_to_lps[:3, 3] = np.asarray(origin, float)
    fields = OrderedDict()
    fields["masterRepresentation"] = "Binary labelmap"
    fields["containedRepresentationNames"] = ["Binary labelmap"]
    fields["referenceImageExtentOffset"] = [0, 0, 0]
    fields["voxels"] = data[0] if data.shape[0] == 1 else np.moveaxis(data, 0, -1)
    fields["ijkToLPS"] = ijk_to_lps
    fields["segments"] = []
    for n, s in enumerate(segments):
        layer = data[int(s.layer)] == int(s.label_value)
        if layer.any():
            idx = np.nonzero(layer)
            extent = [idx[2].min(), idx[2].max(), idx[1].min(), idx[1].max(), idx[0].min(), idx[0].max()]
        else:
            extent = [0, -1, 0, -1, 0, -1]
        fields["segments"].append(OrderedDict([
            ("id", s.id or f"Segment_{n + 1}"), ("name", s.name), ("nameAutoGenerated", False),
            ("color", [f"{float(c):g}" for c in s.color[:3]]), ("colorAutoGenerated", False),
            ("labelValue", int(s.label_value)), ("layer", int(s.layer)), ("extent", [int(v) for v in extent]),
            ("tags", dict(s.tags))]))
    return fields


def _write_fields(path: str, fields: dict) -> None:
    """Fallback writer (no slicerio): the header slicerio's ``write_segmentation`` makes from :func:`_segmentation_fields`."""
    import nrrd

    voxels = fields["voxels"]
    space_directions = np.asarray(fields["ijkToLPS"])[:3, :3].T
    header = {
        "Segmentation_MasterRepresentation": fields["masterRepresentation"],
        "Segmentation_ContainedRepresentationNames": "|".join(fields["containedRepresentationNames"]) + "|",
        "Segmentation_ReferenceImageExtentOffset": " ".join(str(v) for v in fields["referenceImageExtentOffset"]),
        "kinds": ["domain"] * 3 if voxels.ndim == 3 else ["list", "domain", "domain", "domain"],
        "space directions": space_directions if voxels.ndim == 3 else np.vstack([np.full(3, np.nan), space_directions]),
        "space origin": np.asarray(fields["ijkToLPS"])[:3, 3],
        "space": "left-posterior-superior",
        "encoding": "gzip",
    }
    names = {"id": "ID", "name": "Name", "nameAutoGenerated": "NameAutoGenerated", "color": "Color",
             "colorAutoGenerated": "ColorAutoGenerated", "labelValue": "LabelValue", "layer": "Layer",
             "extent": "Extent"}
    for n, seg in enumerate(fields["segments"]):
        for key, value in seg.items():
            if key in ("color", "extent"):
                value = " ".join(str(v) for v in value)
            elif isinstance(value, bool):
                value = int(value)
            if key != "tags":
                header[f"Segment{n}_{names[key]}"] = value
        header[f"Segment{n}_Tags"] = "|".join(f"{k}:{v}" for k, v in seg["tags"].items()) + "|"
    nrrd.write(path, voxels, header, index_order="C")


def read(path: str) -> SegmentationFile:
    """Read a ``.seg.nrrd`` (as Slicer writes it, 3-D or layered 4-D). Raises InputError with a fix when the
    file is missing, unreadable or not a segmentation."""
    if not os.path.isfile(path):
        raise InputError(f"Segmentation file not found: {path}: check the path.")
    sio = _slicerio()
    try:
        fields = sio.read_segmentation(path) if sio is not None else _read_fields(path)
    except Exception as exc:  # noqa: BLE001 - pynrrd and slicerio raise several types for broken files
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"Cannot read {path} as NRRD ({detail}): re-save the segmentation from Slicer "
                         "(.seg.nrrd).") from None
    if not fields.get("segments"):
        raise InputError(f"{path} is an NRRD image but not a Slicer segmentation (no Segment0_... fields): load it "
                         "as a label map, or save the segmentation from Slicer as .seg.nrrd.")
    voxels = np.asarray(fields["voxels"])                 # nrrd (Fortran) axis order: ([L,] I, J, K)
    if voxels.ndim == 4:
        layers = voxels.transpose(0, 3, 2, 1)
    elif voxels.ndim == 3:
        layers = voxels.T[None]
    else:
        raise InputError(f"{path} has {voxels.ndim} dimensions: a segmentation has 3 (or 4 with layers).")
    columns = np.asarray(fields["ijkToLPS"], float)[:3, :3]   # column n = voxel axis n, scaled, in LPS
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
        raise InputError(f"{path} has an invalid voxel size {tuple(spacing)}: re-save it from Slicer.")
    direction = columns / spacing[None, :]
    origin = np.asarray(fields["ijkToLPS"], float)[:3, 3]
    segments = [_segment_of(n, seg, sio) for n, seg in enumerate(fields["segments"])]
    for s in segments:
        if not 0 <= s.layer < layers.shape[0]:
            raise InputError(f"Segment '{s.name}' of {path} refers to layer {s.layer} but the file has "
                             f"{layers.shape[0]}: re-save the segmentation from Slicer.")
    return SegmentationFile(segments=segments, layers=np.ascontiguousarray(layers),
                            spacing=tuple(float(v) for v in spacing), origin=tuple(float(v) for v in origin),
                            direction=tuple(float(v) for v in direction.ravel()))


def _segment_of(n: int, seg: dict, sio) -> Segment:
    """A :class:`Segment` from one of slicerio's segment dicts; the terminology and status slicerio parses out of
    the tags go back into ``tags`` as the ``TerminologyEntry`` / ``Segmentation.Status`` tags Slicer stores."""
    tags = dict(seg.get("tags") or {})
    if "terminology" in seg:
        tags["TerminologyEntry"] = sio.terminology_entry_to_string(seg["terminology"])
    if "status" in seg:
        tags["Segmentation.Status"] = seg["status"]
    color = tuple(float(v) for v in seg.get("color", (0.5, 0.5, 0.5)))[:3]
    return Segment(name=str(seg.get("name", f"Segment_{n + 1}")), color=color,
                   label_value=int(seg.get("labelValue", 1)), layer=int(seg.get("layer", 0)),
                   id=str(seg.get("id", f"Segment_{n + 1}")), tags=tags)


def _read_fields(path: str) -> dict:
    """Fallback reader (no slicerio): the part of slicerio's ``read_segmentation`` dict :func:`read` uses (the tags
    all stay in ``tags``)."""
    import re

    import nrrd

    voxels, header = nrrd.read(path)
    ijk_to_lps = np.eye(4)
    dirs = np.asarray(header.get("space directions", np.eye(3)), float)
    ijk_to_lps[:3, :3] = (dirs[1:] if dirs.shape[0] == 4 else dirs).T
    ijk_to_lps[:3, 3] = np.asarray(header.get("space origin", np.zeros(3)), float)
    if str(header.get("space", "")).lower() in ("right-anterior-superior", "ras"):
        ijk_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_lps
    found: Dict[int, dict] = {}
    for key, value in header.items():
        m = re.match(r"^Segment([0-9]+)_(.+)", key)
        if m:
            found.setdefault(int(m.group(1)), {})[m.group(2)] = value
    segments = []
    for n in sorted(found):
        f = found[n]
        seg = {"id": f.get("ID", f"Segment_{n + 1}"), "name": f.get("Name", f"Segment_{n + 1}"),
               "color": [float(v) for v in str(f.get("Color", "0.5 0.5 0.5")).split()],
               "labelValue": int(f.get("LabelValue", 1)), "layer": int(f.get("Layer", 0))}
        seg["tags"] = dict(item.split(":", 1) for item in str(f.get("Tags", "")).split("|") if ":" in item)
        segments.append(seg)
    return {"voxels": voxels, "ijkToLPS": ijk_to_lps, "segments": segments}


def from_masks(masks: Dict[str, np.ndarray], colors: Optional[Dict[str, Sequence[float]]] = None):
    """Named (K, J, I) masks -> (layers, segments): non-overlapping masks share layer 0 (label values 1..N);
    a mask that overlaps an earlier one goes to a new layer."""
    if not masks:
        raise InputError("No segments to save.")
    shape = next(iter(masks.values())).shape
    layers: List[np.ndarray] = []
    segments: List[Segment] = []
    for name, m in masks.items():
        m = np.asarray(m) > 0
        if m.shape != shape:
            raise InputError(f"Segment '{name}' has shape {m.shape}, the others {shape}: all masks share one grid.")
        for li, layer in enumerate(layers):
            if not (layer[m] > 0).any():
                break
        else:
            layers.append(np.zeros(shape, np.uint8))
            li = len(layers) - 1
        value = int(layers[li].max()) + 1
        layers[li][m] = value
        color = tuple((colors or {}).get(name, (0.9, 0.6, 0.0)))
        segments.append(Segment(name=name, color=color, label_value=value, layer=li, id=name))
    return np.stack(layers), segments
