"""UniverSeg examples as plain numpy, without torch: the :class:`Example` type and the collectors that cut
examples from labelled volumes. Example libraries and the Slicer layer use these without loading the model code
(torch stays out of Slicer's own process); :mod:`.support` turns examples into support tensors.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..slicing import axis_index, labelled_slices, take_slice
from ..errors import InputError, MedSegWarning
from ..io import to_grey

MODEL_SIZE = 128
DEFAULT_MARGIN = 0.25
DEFAULT_MIN_PAD = 4
EMPTY_POLICIES = ("skip", "warn", "error")
FEW_EXAMPLES = 8
#: How a 3-D example is cut into slices (see :class:`Example`).
EXAMPLE_SOURCES = ("", "labelled-slices", "volume")


# ------------------------------------------------------------------------------------------------ examples --
@dataclass
class Example:
    """One example segmentation: a 2-D slice (H, W) or a 3-D volume (K, J, I) of raw intensities and a label
    of the same shape (binary mask or label map; the run's ``label`` value selects the structure).
    An RGB 2-D image (H, W, 3|4) with a (H, W) label is converted to grey (ITU-R 601) with a warning.

    The same type travels from the Slicer effect to the engine. ``source`` says how a 3-D example is cut into
    slices: ``"labelled-slices"`` (the target's own labelled slices, few-shot completion: every one is used),
    ``"volume"`` (another labelled case: its labelled slices, at most ``max_slices`` of them evenly spread) or
    ``""`` (given as is). ``slices``: the labelled slice indices along the run's axis, where known."""

    image: np.ndarray
    label: np.ndarray
    name: str = ""
    source: str = ""
    slices: Tuple[int, ...] = ()

    def __post_init__(self) -> None:
        image = np.asarray(self.image)
        label = np.asarray(self.label)
        who = f"Example '{self.name}'" if self.name else "Example"
        if (image.ndim == 3 and label.ndim == 2 and image.shape[-1] in (3, 4)
                and image.shape[:2] == label.shape):
            was_u8 = image.dtype == np.uint8
            grey = to_grey(image[..., :3])
            image = np.clip(np.rint(grey), 0, 255).astype(np.uint8) if was_u8 else grey.astype(np.float32)
            warnings.warn(f"{who} is an RGB image: converted to grey levels (0.299 R + 0.587 G + 0.114 B).",
                          MedSegWarning, stacklevel=3)
        if image.ndim not in (2, 3):
            raise InputError(f"{who} has a {image.ndim}-D image {tuple(image.shape)}: give a 2-D slice or a 3-D "
                             "volume (grey levels).")
        if label.shape != image.shape:
            raise InputError(f"{who}: image {tuple(image.shape)} and label {tuple(label.shape)} differ in shape: "
                             "give a label drawn on the same grid as its image.")
        if 0 in image.shape:
            raise InputError(f"{who} is empty (shape {tuple(image.shape)}): give an image with voxels.")
        if image.dtype.kind not in "biuf" or label.dtype.kind not in "biuf":
            raise InputError(f"{who} has pixel types {image.dtype}/{label.dtype}: give numeric images and labels.")
        if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
            raise InputError(f"{who} has NaN/Inf voxels: replace them before using it as an example.")
        if label.dtype.kind == "f":
            if not np.all(np.isfinite(label)) or np.any(np.mod(label, 1) != 0):
                raise InputError(f"{who} has a non-integer label: give a binary mask or an integer label map.")
            label = label.astype(np.int64)
        if label.dtype.kind == "b":
            label = label.astype(np.uint8)
        if self.source not in EXAMPLE_SOURCES:
            raise InputError(f"{who} has source '{self.source}': use one of {', '.join(map(repr, EXAMPLE_SOURCES))}.")
        self.image, self.label, self.slices = image, label, tuple(int(k) for k in self.slices)

    @property
    def ndim(self) -> int:
        return self.image.ndim


def label_values(label: np.ndarray) -> List[int]:
    return [int(v) for v in np.unique(label)]


def _values_text(values: Iterable[int]) -> str:
    vals = sorted(set(int(v) for v in values))
    nz = [v for v in vals if v != 0]
    if not nz:
        return "only 0 (the label is empty)"
    shown = ", ".join(str(v) for v in nz[:20]) + (", ..." if len(nz) > 20 else "")
    return f"{shown} (besides 0)"


def _check_label_value(label: int) -> int:
    try:
        value = int(label)
    except (TypeError, ValueError):
        raise InputError(f"Label value '{label}' is not an integer: give the label map value of the structure, "
                         "e.g. --label 1.") from None
    if value == 0:
        raise InputError("Label value 0 is the background: give the value of the structure, e.g. --label 1.")
    return value


def _volume_and_labelmap(volume, labelmap, what: str) -> Tuple[np.ndarray, np.ndarray]:
    vol = np.asarray(volume)
    lab = np.asarray(labelmap)
    if vol.ndim != 3:
        raise InputError(f"{what}: the image has {vol.ndim} dimensions {tuple(vol.shape)}: give a 3-D volume "
                         "(K, J, I).")
    if lab.shape != vol.shape:
        raise InputError(f"{what}: label map {tuple(lab.shape)} and volume {tuple(vol.shape)} differ in shape: "
                         "give a label map on the volume's grid.")
    return vol, lab


def _slice_examples(vol, lab, value, ax, indices, axis_name, prefix) -> List[Example]:
    out = []
    for n in indices:
        img = take_slice(vol, ax, n)
        sl = take_slice(lab, ax, n)
        mask = np.where(sl == value, value, 0).astype(lab.dtype if lab.dtype.kind in "iu" else np.int64)
        out.append(Example(np.ascontiguousarray(img), np.ascontiguousarray(mask),
                           f"{prefix}{axis_name} slice {int(n)}"))
    return out


def examples_from_labelled_slices(volume, labelmap, label: int = 1, axis: str = "axial",
                                  name: str = "") -> List[Example]:
    """Few-shot completion: the slices of the *target* volume (along ``axis``) whose label map contains
    ``label``, as 2-D examples (label value kept, other structures removed; named ``"<name> axial slice k"``)."""
    value = _check_label_value(label)
    ax = axis_index(axis)
    vol, lab = _volume_and_labelmap(volume, labelmap, "Labelled slices")
    idx = labelled_slices(lab, ax, value)
    if idx.size == 0:
        present = _values_text(label_values(lab))
        raise InputError(f"Labelled slices: label {value} is not in the label map (values {present}): label a few "
                         "slices of the structure with that value, or pass --label with one of those.")
    return _slice_examples(vol, lab, value, ax, idx, axis.strip().lower(), f"{name} " if name else "")


def examples_from_volume(volume, labelmap, label: int = 1, axis: str = "axial", empty_policy: str = "skip",
                         max_slices: Optional[int] = None, name: str = "") -> List[Example]:
    """Examples from another volume with a label map: its slices along ``axis`` that contain ``label``.

    ``empty_policy`` says what happens to slices without the structure: ``skip`` drops them silently, ``warn``
    drops them and says how many gaps lie between the first and last labelled slice, ``error`` refuses a label
    with such gaps (for carefully complete annotations). ``max_slices`` keeps that many evenly spaced labelled
    slices (always including the first and last).
    """
    value = _check_label_value(label)
    ax = axis_index(axis)
    if empty_policy not in EMPTY_POLICIES:
        raise InputError(f"Unknown empty-slice policy '{empty_policy}': use one of {', '.join(EMPTY_POLICIES)}.")
    who = f"Example volume '{name}'" if name else "Example volume"
    vol, lab = _volume_and_labelmap(volume, labelmap, who)
    idx = labelled_slices(lab, ax, value)
    if idx.size == 0:
        raise InputError(f"{who}: label {value} is not in its label map (values {_values_text(label_values(lab))}): "
                         "pass --label with the structure's value.")
    gaps = int(idx[-1] - idx[0] + 1 - idx.size)
    if gaps and empty_policy == "error":
        raise InputError(f"{who}: {gaps} slice(s) between the first ({idx[0]}) and last ({idx[-1]}) labelled slice "
                         f"have no label {value}: complete the annotation or use empty_policy='skip'.")
    if gaps and empty_policy == "warn":
        warnings.warn(f"{who}: {gaps} slice(s) inside the structure's range have no label {value}; they are not "
                      "used as examples.", MedSegWarning, stacklevel=2)
    if max_slices is not None:
        k = int(max_slices)
        if k < 1:
            raise InputError(f"max_slices must be >= 1 (got {max_slices}).")
        if idx.size > k:
            pick = np.unique(np.rint(np.linspace(0, idx.size - 1, k)).astype(int))
            idx = idx[pick]
    prefix = f"{name} " if name else ""
    return _slice_examples(vol, lab, value, ax, idx, axis.strip().lower(), prefix)


def cut_examples(examples: Sequence[Example], axis: str = "axial",
                 max_slices_per_volume: Optional[int] = None) -> List[Example]:
    """Examples as 2-D slices, each 3-D example cut by its ``source``: ``labelled-slices`` -> every labelled
    slice (:func:`examples_from_labelled_slices`), ``volume`` -> its labelled slices, at most
    ``max_slices_per_volume`` (:func:`examples_from_volume`); others are kept as they are. Label value 1."""
    out: List[Example] = []
    for e in examples:
        if e.source == "labelled-slices":
            out += examples_from_labelled_slices(e.image, e.label, label=1, axis=axis, name=e.name)
        elif e.source == "volume":
            out += examples_from_volume(e.image, e.label, label=1, axis=axis, empty_policy="skip",
                                        max_slices=max_slices_per_volume, name=e.name)
        else:
            out.append(e)
    return out


# --------------------------------------------------------------------------------------------- intensity --
