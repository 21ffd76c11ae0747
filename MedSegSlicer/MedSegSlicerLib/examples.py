"""Collect UniverSeg examples (image + label) from the scene.

Three sources, as in the effect's panel:

* **labelled slices of this segment** - the target segment's slices that already contain voxels, on the target
  volume (few-shot completion: label a few slices, get the rest);
* **other segments / segmentation nodes** - each with the volume it was drawn on (explicit, else the
  segmentation's reference-geometry volume), resampled onto that volume's grid;
* **an example library folder** - through ``medseg_backend.universeg.library``.

The collectors return the backend's one example type, ``medseg_backend.universeg.Example`` (plain numpy; the
module it lives in needs no torch): 3-D examples whose ``source`` says how the engine cuts them into slices
(``labelled-slices``: every labelled slice of the target; ``volume``: the labelled slices of another case).
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Sequence

import numpy as np

from medseg_backend import slicing
from medseg_backend.runspec import NO_EXAMPLES
from medseg_backend.universeg.examples import Example, cut_examples

from . import geometry, labelmaps, segments
from .errors import InputError, MedSegWarning


def source_volume_for(segmentation_node, volume_node=None):
    """The volume an example segmentation was drawn on: ``volume_node`` if given, else its reference volume."""
    if volume_node is not None:
        geometry.check_scalar_volume(volume_node)
        return volume_node
    import slicer

    ref = segmentation_node.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
    if ref is None or not ref.IsA("vtkMRMLScalarVolumeNode") or ref.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(f"Segmentation '{segmentation_node.GetName()}' has no source volume: choose the volume its "
                         "segments were drawn on next to it in the examples list.")
    return ref


def from_labelled_slices(volume_node, segmentation_node, segment_id: str, axis: str = "axial",
                         slices: Optional[Sequence[int]] = None) -> Example:
    """Source (a): the target segment's labelled slices on the target volume. ``slices``: use only these slices
    as examples (e.g. the ones the user corrected), not every slice that has voxels - after an Apply every slice
    of the result has voxels, and re-running with all of them as examples could change nothing."""
    label = labelmaps.segment_to_array(segmentation_node, segment_id, volume_node)
    available = [int(k) for k in slicing.labelled_slices(label, axis)]
    name = segments.get_segment(segmentation_node, segment_id).GetName()
    if not available:
        raise InputError(f"Segment '{name}' has no labelled slices yet: paint the structure on a few {axis} slices "
                         "first (or choose other examples).")
    if slices is not None:
        chosen = sorted({int(k) for k in slices})
        empty = [k for k in chosen if k not in available]
        if not chosen or empty:
            raise InputError(f"Slice(s) {empty or chosen} of segment '{name}' hold no voxels: paint the structure "
                             f"there first, or choose example slices among {available[:12]}"
                             f"{'...' if len(available) > 12 else ''}.")
        a = slicing.axis_index(axis)
        keep = np.zeros(label.shape[a], dtype=bool)
        keep[chosen] = True
        shape = [1, 1, 1]
        shape[a] = -1
        label = (label * keep.reshape(shape)).astype(np.uint8)
        available = chosen
    return Example(geometry.volume_to_array(volume_node).array, label, name, source="labelled-slices",
                   slices=tuple(available))


def default_roi_box(example: Example, axis: str = "axial", margin_slices: Optional[int] = None):
    """Where to segment when the user gave no ROI for few-shot completion: the labelled slices' in-plane box
    (+25 %, at least 4 voxels, as the pipeline crops examples) and their slice range widened by the usual gap
    between labelled slices (at least 2) - not the whole volume (minutes on a CPU, false positives far away)."""
    box = slicing.bbox3d(example.label)
    if box is None:
        raise InputError(f"'{example.name}' has no labelled voxels: paint the structure on a few slices first.")
    a = slicing.BOX_INDEX[slicing.axis_index(axis)]
    size = geometry.box_shape_xyz(example.label.shape)
    if margin_slices is None:
        gaps = np.diff(sorted(example.slices)) if len(example.slices) > 1 else np.array([2])
        margin_slices = max(2, int(np.median(gaps)))
    b = list(box)
    for d in range(3):
        if d == a:
            b[d], b[d + 3] = b[d] - margin_slices, b[d + 3] + margin_slices
        else:
            m = max(4, int(round(0.25 * (b[d + 3] - b[d] + 1))))
            b[d], b[d + 3] = b[d] - m, b[d + 3] + m
        b[d], b[d + 3] = max(b[d], 0), min(b[d + 3], size[d] - 1)
    return tuple(int(v) for v in b)


def from_segments(segmentation_node, segment_ids: Sequence[str], volume_node=None, axis: str = "axial",
                  exclude=None) -> List[Example]:
    """Source (b): segments of a segmentation node, each on the grid of the volume it was drawn on.

    ``exclude`` = (segmentation node, segment id) of the target: it is skipped (its labelled slices are source
    (a)). Empty segments are skipped with a :class:`MedSegWarning`.
    """
    segments.check_segmentation(segmentation_node)
    volume = source_volume_for(segmentation_node, volume_node)
    image = None
    out = []
    for sid in segment_ids:
        if exclude is not None and exclude[0] is segmentation_node and exclude[1] == sid:
            continue
        seg = segments.get_segment(segmentation_node, sid)
        label = labelmaps.segment_to_array(segmentation_node, sid, volume)
        slices = [int(k) for k in slicing.labelled_slices(label, axis)]
        if not slices:
            warnings.warn(f"Example segment '{seg.GetName()}' of '{segmentation_node.GetName()}' is empty on volume "
                          f"'{volume.GetName()}': skipped.", MedSegWarning, stacklevel=2)
            continue
        if image is None:
            image = geometry.volume_to_array(volume).array
        out.append(Example(image, label, f"{segmentation_node.GetName()}/{seg.GetName()}", source="volume",
                           slices=tuple(slices)))
    return out


def require_examples(examples: Sequence) -> None:
    if not examples:
        raise InputError(NO_EXAMPLES)


def cut_into_slices(examples: Sequence[Example], axis: str = "axial",
                    max_slices_per_volume: Optional[int] = None) -> List[Example]:
    """The examples as the 2-D slices the engine will use (for an example library); see
    ``medseg_backend.universeg.cut_examples``."""
    require_examples(examples)
    out = cut_examples(examples, axis, max_slices_per_volume)
    require_examples(out)
    return out


def from_library(folder: str):
    """Source (c): ``(examples, manifest)`` from an example library folder."""
    from medseg_backend.universeg.library import load_library

    examples, manifest = load_library(folder)
    require_examples(examples)
    # The effect runs every example source with label value 1: keep the library's structure (manifest label,
    # any value) as a binary mask so that a library labelled e.g. 5 works like the other sources.
    value = int(manifest.get("label", 1))
    examples = [Example(e.image, (np.asarray(e.label) == value).astype(np.uint8), getattr(e, "name", ""))
                for e in examples]
    return examples, manifest


def export(folder: str, backend_examples: Sequence, *, structure: str, modality: str = "CT",
           intensity: str = "auto"):
    """Write examples to an example library folder (images + labels + manifest); returns the folder path."""
    from medseg_backend.universeg.library import export_library

    require_examples(backend_examples)
    if not structure:
        raise InputError("No structure name for the library: type what the examples show (e.g. liver).")
    return export_library(folder, list(backend_examples), structure=structure, modality=modality,
                          intensity=intensity, label=1)
