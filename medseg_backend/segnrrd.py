"""Slicer's segmentation file (``.seg.nrrd``) read and written with pynrrd, without Slicer.

The format (Slicer's developer guide, "Segmentation labelmap file format"): a standard NRRD image - 3 spatial axes,
or a leading ``list`` axis of *layers* when segments overlap - whose voxels hold each segment's label value in its
layer, plus header fields: ``SegmentN_ID / _Name / _Color / _LabelValue / _Layer / _Extent / _Tags`` per segment and
``Segmentation_MasterRepresentation`` / ``Segmentation_ContainedRepresentationNames`` /
``Segmentation_ReferenceImageExtentOffset`` for the whole file. A file written here opens in Slicer by drag and drop
with its segment names and colours; a file saved by Slicer reads back here.

Geometry is given and returned the SimpleITK way: ``spacing``, ``origin`` and a row-major 3x3 ``direction`` in LPS
(x, y, z), arrays in (K, J, I) index order.
"""
from __future__ import annotations

import os
import re
import tempfile
import unicodedata
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


def write(path: str, layers: np.ndarray, segments: Sequence[Segment], *, spacing: Sequence[float],
          origin: Sequence[float], direction: Sequence[float]) -> None:
    """Write a segmentation file. ``layers``: (K, J, I) or (L, K, J, I) integer label values; each segment names
    its layer and label value. The file appears complete or not at all (temporary file + rename)."""
    import nrrd

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
    spacing = np.asarray(spacing, float)
    d = np.asarray(direction, float).reshape(3, 3)
    space_directions = (d * spacing[None, :]).T          # row n = direction of voxel axis n, scaled
    header = {
        "type": "unsigned char" if dtype == np.uint8 else "short",
        "space": "left-posterior-superior",
        "space origin": np.asarray(origin, float),
        "encoding": "gzip",
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    K, J, I = data.shape[1:]
    if data.shape[0] == 1:
        array = data[0]
        header["kinds"] = ["domain"] * 3
        header["space directions"] = space_directions
    else:
        array = np.moveaxis(data, 0, -1)                 # C order (K, J, I, L): the list axis is the fastest
        header["kinds"] = ["list", "domain", "domain", "domain"]
        header["space directions"] = np.vstack([np.full(3, np.nan), space_directions])
    for n, s in enumerate(segments):
        layer = data[int(s.layer)] == int(s.label_value)
        if layer.any():
            idx = np.nonzero(layer)
            extent = (idx[2].min(), idx[2].max(), idx[1].min(), idx[1].max(), idx[0].min(), idx[0].max())
        else:
            extent = (0, -1, 0, -1, 0, -1)
        tags = "".join(f"{k}:{v}|" for k, v in s.tags.items())
        header.update({
            f"Segment{n}_ID": s.id or f"Segment_{n + 1}",
            f"Segment{n}_Name": s.name,
            f"Segment{n}_NameAutoGenerated": "0",
            f"Segment{n}_Color": " ".join(f"{float(c):g}" for c in s.color[:3]),
            f"Segment{n}_ColorAutoGenerated": "0",
            f"Segment{n}_LabelValue": str(int(s.label_value)),
            f"Segment{n}_Layer": str(int(s.layer)),
            f"Segment{n}_Extent": " ".join(str(int(v)) for v in extent),
            f"Segment{n}_Tags": tags,
        })
    folder = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=folder)
    os.close(fd)
    try:
        nrrd.write(tmp, array, header, index_order="C")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read(path: str) -> SegmentationFile:
    """Read a ``.seg.nrrd`` (as Slicer writes it, 3-D or layered 4-D). Raises InputError with a fix when the
    file is missing, unreadable or not a segmentation."""
    import nrrd

    if not os.path.isfile(path):
        raise InputError(f"Segmentation file not found: {path}: check the path.")
    try:
        data, header = nrrd.read(path, index_order="C")
    except Exception as exc:  # noqa: BLE001 - pynrrd raises several types for broken files
        raise InputError(f"Cannot read {path} as NRRD ({str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__}): "
                         "re-save the segmentation from Slicer (.seg.nrrd).") from None
    numbers = sorted({int(m.group(1)) for k in header for m in [re.match(r"Segment(\d+)_", k)] if m})
    if not numbers:
        raise InputError(f"{path} is an NRRD image but not a Slicer segmentation (no Segment0_... fields): load it "
                         "as a label map, or save the segmentation from Slicer as .seg.nrrd.")
    kinds = list(header.get("kinds", []))
    if data.ndim == 4:
        list_axis = kinds.index("list") if "list" in kinds else 0
        layers = np.moveaxis(data, 3 - list_axis, 0)     # nrrd axis n is C axis (3 - n)
        dirs = np.asarray(header["space directions"], float)
        dirs = dirs[[i for i in range(4) if i != list_axis]]
    elif data.ndim == 3:
        layers = data[None]
        dirs = np.asarray(header["space directions"], float)
    else:
        raise InputError(f"{path} has {data.ndim} dimensions: a segmentation has 3 (or 4 with layers).")
    space = str(header.get("space", "left-posterior-superior")).lower()
    origin = np.asarray(header.get("space origin", np.zeros(3)), float)
    flip = np.ones(3)
    if space in ("right-anterior-superior", "ras"):
        flip = np.array([-1.0, -1.0, 1.0])              # to LPS
    dirs = dirs * flip[None, :]
    origin = origin * flip
    spacing = np.linalg.norm(dirs, axis=1)
    if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
        raise InputError(f"{path} has an invalid voxel size {tuple(spacing)}: re-save it from Slicer.")
    direction = (dirs / spacing[:, None]).T
    segments = []
    for n in numbers:
        def field_(name, default=None):
            return header.get(f"Segment{n}_{name}", default)
        color = tuple(float(v) for v in str(field_("Color", "0.5 0.5 0.5")).split()[:3])
        tags = {}
        for item in str(field_("Tags", "")).split("|"):
            if ":" in item:
                k, v = item.split(":", 1)
                tags[k] = v
        segments.append(Segment(name=str(field_("Name", f"Segment_{n + 1}")), color=color,
                                label_value=int(field_("LabelValue", 1)), layer=int(field_("Layer", 0)),
                                id=str(field_("ID", f"Segment_{n + 1}")), tags=tags))
    for s in segments:
        if not 0 <= s.layer < layers.shape[0]:
            raise InputError(f"Segment '{s.name}' of {path} refers to layer {s.layer} but the file has "
                             f"{layers.shape[0]}: re-save the segmentation from Slicer.")
    return SegmentationFile(segments=segments, layers=np.ascontiguousarray(layers),
                            spacing=tuple(float(v) for v in spacing), origin=tuple(float(v) for v in origin),
                            direction=tuple(float(v) for v in direction.ravel()))


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
