"""The UniverSeg effect's runs, Qt-free (issue 26): its examples collected from the scene and the run they make.

The slices of the segment that the user painted or corrected become the examples by themselves
(:class:`ExampleSlices`): before the first Apply, every labelled slice (the user painted them); after an Apply, the
slices used last time plus every slice whose voxels changed since (a correction with the brush, in this effect or in
Slicer's Paint / Erase effects) - never the slices the model filled in, which would only teach it its own result.
Typed slice numbers (the panel's *Use only slices*) still take precedence.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from medseg_backend import slicing
from medseg_backend.choices import DEFAULT_AXIS

from . import examples as ex
from . import labelmaps, preview, segments
from .errors import InputError

#: Segments whose state after their last Apply is remembered (the oldest is forgotten: its next run uses every
#: labelled slice again).
REMEMBERED_SEGMENTS = 4


class ExampleSlices:
    """Which slices of a segment are the user's own (see the module docstring); one per UniverSeg effect."""

    def __init__(self) -> None:
        self._state: "OrderedDict[Tuple[str, str, str], Tuple[Optional[np.ndarray], frozenset]]" = OrderedDict()

    @staticmethod
    def _key(segmentation, segment_id: str, axis: str):
        return segmentation.GetID(), segment_id, slicing.axis_name(axis)

    def slices(self, volume, segmentation, segment_id: str, axis: str) -> List[int]:
        """The example slices for the next run of ``segment_id`` along ``axis`` (only slices that hold voxels)."""
        label = labelmaps.segment_to_array(segmentation, segment_id, volume) > 0
        labelled = {int(k) for k in slicing.labelled_slices(label, axis)}
        baseline, used = self._state.get(self._key(segmentation, segment_id, axis), (None, frozenset()))
        if baseline is None or baseline.shape != label.shape:
            return sorted(labelled)
        changed = {int(k) for k in slicing.labelled_slices(label != baseline, axis)}
        return sorted((set(used) | changed) & labelled)

    def used(self, segmentation, segment_id: str, axis: str, slices: Sequence[int]) -> None:
        """A run was prepared with ``slices`` as the examples (they stay examples after its Apply)."""
        key = self._key(segmentation, segment_id, axis)
        baseline, _ = self._state.get(key, (None, frozenset()))
        self._remember(key, baseline, frozenset(int(k) for k in slices))

    def applied(self, volume, segmentation, segment_id: str) -> None:
        """The segment was written by an Apply: what it holds now is the baseline changes are found against."""
        keys = [key for key in self._state if key[:2] == (segmentation.GetID(), segment_id)]
        if not keys:
            return
        label = labelmaps.segment_to_array(segmentation, segment_id, volume) > 0     # read once, for every axis
        for key in keys:
            self._remember(key, label, self._state[key][1])

    def _remember(self, key, baseline, used) -> None:
        self._state.pop(key, None)
        self._state[key] = (baseline, used)
        while len(self._state) > REMEMBERED_SEGMENTS:
            self._state.popitem(last=False)


@dataclass
class UniverSegOptions:
    """The UniverSeg effect's choices (its panel, or a script). ``example_slices``: typed slice numbers (None: the
    slices the user painted or corrected, :class:`ExampleSlices`); ``segments``: ``(segmentation node ID, segment
    ID)`` pairs of other segments that show the structure, ``segments_volume`` the volume of those without a
    reference volume; ``library``: an example library folder."""
    axis: str = DEFAULT_AXIS
    intensity: Optional[str] = None
    labelled_slices: bool = True
    example_slices: Optional[Sequence[int]] = None
    segments: Sequence[Tuple[str, str]] = ()
    segments_volume: Any = None
    library: Optional[str] = None
    support_size: int = 64
    ensemble: int = 1
    tta: bool = False


def example_candidates(scene, segmentation=None, segment_id: Optional[str] = None) -> List[Tuple[str, str, str]]:
    """The segments a user may tick as examples: ``(segmentation node ID, segment ID, "<node> / <segment>")`` for
    every segment of the scene's segmentations except the target segment itself and the previews."""
    out = []
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
        if preview.is_preview(node):
            continue
        for sid in segments.segment_ids(node):
            if node is segmentation and sid == segment_id:
                continue
            out.append((node.GetID(), sid, f"{node.GetName()} / {node.GetSegmentation().GetSegment(sid).GetName()}"))
    return out


def collect_examples(scene, volume, segmentation, segment_id: str, o: UniverSegOptions,
                     tracker: Optional[ExampleSlices] = None, include_library: bool = True):
    """``(examples, keep)``: every example the options name, and the target segment's own example slices (kept
    exactly in the result), or None when they are not used."""
    found, keep = [], None
    if o.labelled_slices:
        chosen = o.example_slices
        if chosen is None and tracker is not None:
            chosen = tracker.slices(volume, segmentation, segment_id, o.axis)
            if not chosen:
                raise InputError("No slice of this segment was painted or corrected since the last Apply: paint the "
                                 "structure on a few slices (Ctrl-drag), then run.")
        keep = ex.from_labelled_slices(volume, segmentation, segment_id, o.axis, slices=chosen)
        found.append(keep)
    by_node = {}
    for node_id, sid in o.segments:
        by_node.setdefault(node_id, []).append(sid)
    for node_id, ids in by_node.items():
        node = scene.GetNodeByID(node_id)
        if node is None:
            raise InputError("A ticked example segmentation was deleted: press Refresh list.")
        try:
            example_volume = ex.source_volume_for(node, None)
        except InputError:
            if o.segments_volume is None:
                raise
            example_volume = o.segments_volume
        found.extend(ex.from_segments(node, ids, example_volume, o.axis, exclude=(segmentation, segment_id)))
    if include_library and o.library:
        found.extend(ex.from_library(o.library)[0])
    ex.require_examples(found)
    return found, keep


def fit_box(volume, segmentation, segment_id: str, o: UniverSegOptions, tracker: Optional[ExampleSlices] = None):
    """*Fit to examples*: the box a run without one covers (the example slices plus a margin)."""
    chosen = o.example_slices
    if chosen is None and tracker is not None:
        chosen = tracker.slices(volume, segmentation, segment_id, o.axis) or None
    labelled = ex.from_labelled_slices(volume, segmentation, segment_id, o.axis, slices=chosen)
    return ex.default_roi_box(labelled, o.axis)


def universeg_runs(segmenter: Callable[[], Any], options: Callable[[Any], UniverSegOptions],
                   tracker: Optional[ExampleSlices] = None):
    """The UniverSeg effect's ``prepare(volume, segmentation, segment_id, roi, seed)``: a run from the examples the
    options name (``options(volume)``); without a box, the example slices plus a margin. The slices used are
    remembered by ``tracker``."""

    def prepare(volume, segmentation, segment_id, roi, seed=None):
        o = options(volume)
        found, keep = collect_examples(segmentation.GetScene(), volume, segmentation, segment_id, o, tracker)
        if roi is None and keep is not None:
            roi = ex.default_roi_box(keep, o.axis)     # the example slices plus a margin, not the whole volume
        prepared = segmenter().prepare_universeg(
            volume, found, roi=roi, support_size=o.support_size, ensemble=o.ensemble, tta=o.tta,
            intensity=o.intensity, axis=o.axis, keep_labelled=keep, segmentation_node=segmentation)
        if keep is not None:
            prepared.messages.append(f"examples: slices {', '.join(str(k) for k in keep.slices)}")
            if tracker is not None:
                tracker.used(segmentation, segment_id, o.axis, keep.slices)
        return prepared

    return prepare
