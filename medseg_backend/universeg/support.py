"""From example segmentations to UniverSeg support tensors, and the crop geometry shared with the queries.

Every 2-D slice the network sees (example or query) goes through the same steps:

1. **Intensity**: the run's intensity rule (:mod:`medseg_backend.intensity` presets, resolved once on the target)
   is applied to the 2-D slice -> uint8, then the slice is min-max normalised to [0, 1]. Doing both per slice
   makes examples from the target, from other volumes and from 2-D library images comparable.
2. **Crop**: a square around the structure. Examples: the bounding box of the label, enlarged by a context
   margin (``margin`` x the box side on each side, at least ``min_pad`` pixels) and made square around its
   centre. Queries: the same rule applied to the ROI's in-plane box (or to a box derived from the examples).
   The square may extend past the image; the outside reads as 0 (the normalised minimum). Voxel space is
   used (no resampling to isotropic pixels): examples and queries cut the same way stay comparable.
3. **Resize** to ``size`` x ``size`` (128 for UniverSeg v1): images bilinear (``align_corners=False``, with
   anti-aliasing when shrinking); labels the same filter on the binary mask followed by a 0.5 threshold
   (an area-style resampling that keeps thin structures better than nearest neighbour).

Predictions go back through the exact inverse: bilinear resize of the probabilities from ``size`` to the
square's side (same pixel-centre convention), the part of the square inside the slice pasted at its place,
and the 0.5 threshold applied at the original resolution.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, MedSegWarning
from ..intensity import IntensityRule, apply_intensity

from ..slicing import axis_index, bbox2d, labelled_slices, take_slice
from .examples import DEFAULT_MARGIN, DEFAULT_MIN_PAD, MODEL_SIZE, Example, _check_label_value, _values_text


def normalise_slice(slice2d: np.ndarray, rule: IntensityRule) -> np.ndarray:
    """Intensity rule on one 2-D slice -> uint8, then min-max to [0, 1] (float32). Constant slices -> zeros."""
    arr = np.asarray(slice2d)
    if arr.size == 0 or np.min(arr) == np.max(arr):
        return np.zeros(arr.shape, np.float32)
    if rule.kind == "mr" and not np.any(arr > 0):
        return np.zeros(arr.shape, np.float32)
    u8 = apply_intensity(arr, rule)
    lo, hi = int(u8.min()), int(u8.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.float32)
    return ((u8.astype(np.float32) - lo) / float(hi - lo)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- geometry --
@dataclass(frozen=True)
class Square:
    """A square crop window in slice pixels: rows ``top .. top+side-1``, columns ``left .. left+side-1``
    (may extend past the slice)."""

    top: int
    left: int
    side: int


def square_around(box: Tuple[int, int, int, int], margin: float = DEFAULT_MARGIN,
                  min_pad: int = DEFAULT_MIN_PAD) -> Square:
    """The square crop for an inclusive box (x0, y0, x1, y1): side = longest box side + 2 x max(margin x side,
    min_pad), centred on the box centre (rounded to whole pixels)."""
    c0, r0, c1, r1 = box
    h, w = r1 - r0 + 1, c1 - c0 + 1
    longest = max(h, w)
    pad = max(int(math.ceil(margin * longest)), int(min_pad))
    side = longest + 2 * pad
    top = int(math.floor((r0 + r1 + 1) / 2.0 - side / 2.0))
    left = int(math.floor((c0 + c1 + 1) / 2.0 - side / 2.0))
    return Square(top, left, side)


def extract(slice2d: np.ndarray, sq: Square) -> np.ndarray:
    """The square window of a 2-D array (float32); outside the slice reads 0."""
    h, w = slice2d.shape
    out = np.zeros((sq.side, sq.side), np.float32)
    r0, c0 = max(sq.top, 0), max(sq.left, 0)
    r1, c1 = min(sq.top + sq.side, h), min(sq.left + sq.side, w)
    if r1 > r0 and c1 > c0:
        out[r0 - sq.top:r1 - sq.top, c0 - sq.left:c1 - sq.left] = slice2d[r0:r1, c0:c1]
    return out


def resize(arr: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a square 2-D float array to size x size (align_corners=False, anti-aliased when
    shrinking)."""
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
    if t.shape[-1] == size and t.shape[-2] == size:
        return t[0, 0].numpy().copy()
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                        antialias=bool(t.shape[-1] > size))
    return out[0, 0].numpy()


def to_model_image(slice01: np.ndarray, sq: Square, size: int = MODEL_SIZE) -> np.ndarray:
    return np.clip(resize(extract(slice01, sq), size), 0.0, 1.0)


def to_model_label(mask: np.ndarray, sq: Square, size: int = MODEL_SIZE) -> np.ndarray:
    return (resize(extract(mask.astype(np.float32), sq), size) > 0.5).astype(np.float32)


def paste_back(prob: np.ndarray, sq: Square, shape: Tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`to_model_image`: probabilities (size, size) -> a (H, W) float32 slice, 0 outside."""
    back = resize(prob, sq.side) if prob.shape[-1] != sq.side else np.asarray(prob, np.float32)
    h, w = shape
    out = np.zeros((h, w), np.float32)
    r0, c0 = max(sq.top, 0), max(sq.left, 0)
    r1, c1 = min(sq.top + sq.side, h), min(sq.left + sq.side, w)
    if r1 > r0 and c1 > c0:
        out[r0:r1, c0:c1] = back[r0 - sq.top:r1 - sq.top, c0 - sq.left:c1 - sq.left]
    return np.clip(out, 0.0, 1.0)


# ------------------------------------------------------------------------------------------- support set --
@dataclass
class SupportItems:
    """Support tensors ready for the network: ``images`` and ``labels`` (N, 1, size, size) float32 in [0, 1]
    / {0, 1}; ``boxes`` the labels' bounding boxes relative to their slice size (x0, y0, x1, y1 in 0..1);
    ``names`` one per item; ``skipped`` the names of examples dropped for an empty label."""

    images: torch.Tensor
    labels: torch.Tensor
    boxes: np.ndarray
    names: List[str]
    skipped: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _example_slices(examples: Sequence[Example], value: int, ax: int, target_ndim: int):
    """Yield (image2d, mask2d bool, name) for every example slice; checks dimensionality and label values."""
    if not examples:
        raise InputError("No examples were given: pass example images with labels (--examples IMG:LABEL, "
                         "--library DIR or --labelled-slices LABELMAP).")
    seen_values = set()
    found = False
    for i, ex in enumerate(examples):
        if not isinstance(ex, Example):
            raise InputError(f"Example {i} is a {type(ex).__name__}, not an Example(image, label, name).")
        if target_ndim == 2 and ex.ndim == 3:
            raise InputError(f"Example '{ex.name or i}' is a 3-D volume {tuple(ex.image.shape)} but the target is a "
                             "2-D image: give 2-D example images (or slice the volume first).")
        vals = np.unique(ex.label)
        seen_values.update(int(v) for v in vals)
        found = found or bool(np.any(vals == value))
    if not found:
        raise InputError(f"Label {value} is in none of the {len(examples)} example label(s) (values present: "
                         f"{_values_text(seen_values)}): pass --label with the structure's value.")
    for i, ex in enumerate(examples):
        name = ex.name or f"example {i}"
        if ex.ndim == 2:
            yield ex.image, ex.label == value, name
            continue
        idx = labelled_slices(ex.label, ax, value)
        if idx.size == 0:
            yield None, None, name  # a volume without the structure: reported as empty below
            continue
        for n in idx:
            yield (take_slice(ex.image, ax, n), take_slice(ex.label, ax, n) == value,
                   f"{name} slice {int(n)}")


def build_support(examples: Sequence[Example], rule: IntensityRule, *, label: int = 1, axis: str = "axial",
                  target_ndim: int = 3, size: int = MODEL_SIZE, margin: float = DEFAULT_MARGIN,
                  min_pad: int = DEFAULT_MIN_PAD) -> SupportItems:
    """All usable example slices -> support tensors. Examples whose label lacks the structure are skipped
    with a :class:`MedSegWarning`; :class:`InputError` when none remain."""
    value = _check_label_value(label)
    ax = axis_index(axis)
    images, labels, boxes, names, skipped = [], [], [], [], []
    for img, mask, name in _example_slices(examples, value, ax, target_ndim):
        box = bbox2d(mask) if mask is not None else None  # (x0, y0, x1, y1)
        if box is None:
            skipped.append(name)
            continue
        sq = square_around(box, margin, min_pad)
        try:
            norm = normalise_slice(img, rule)
        except InputError as exc:
            raise InputError(f"Example '{name}': {exc}") from None
        images.append(to_model_image(norm, sq, size))
        labels.append(to_model_label(mask, sq, size))
        h, w = mask.shape
        boxes.append((box[0] / w, box[1] / h, (box[2] + 1) / w, (box[3] + 1) / h))
        names.append(name)
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        if not images:
            raise InputError(f"All {len(skipped)} example(s) have an empty label for value {value} ({shown}): "
                             "give examples in which the structure is labelled.")
        warnings.warn(f"{len(skipped)} example(s) with an empty label for value {value} were skipped: {shown}.",
                      MedSegWarning, stacklevel=2)
    return SupportItems(torch.from_numpy(np.stack(images)[:, None]), torch.from_numpy(np.stack(labels)[:, None]),
                        np.asarray(boxes, np.float64), names, skipped)


def choose_subsets(n: int, support_size: int, ensemble: int, seed: int) -> List[np.ndarray]:
    """Index sets for the passes: everything in one pass when ``n <= support_size``; otherwise ``ensemble``
    seeded random subsets of ``support_size`` items (without replacement inside a subset, sorted)."""
    if support_size < 1:
        raise InputError(f"Support size must be >= 1 (got {support_size}); UniverSeg was trained with 64.")
    if ensemble < 1:
        raise InputError(f"Ensemble size must be >= 1 (got {ensemble}).")
    if n <= support_size:
        return [np.arange(n)]
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(n, size=support_size, replace=False)) for _ in range(ensemble)]


def derived_box(boxes: np.ndarray, shape: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """In-plane query box when no ROI is given: the union of the examples' label boxes (relative to their own
    slice size) scaled to the query slice ``shape`` (rows, columns); inclusive pixel box (x0, y0, x1, y1)."""
    h, w = shape
    c0 = int(math.floor(boxes[:, 0].min() * w))
    r0 = int(math.floor(boxes[:, 1].min() * h))
    c1 = int(math.ceil(boxes[:, 2].max() * w)) - 1
    r1 = int(math.ceil(boxes[:, 3].max() * h)) - 1
    return max(c0, 0), max(r0, 0), min(max(c1, c0), w - 1), min(max(r1, r0), h - 1)
