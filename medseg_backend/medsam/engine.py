"""Box-prompted segmentation with MedSAM (ViT-B) and LiteMedSAM: 2-D images and slice-wise 3-D volumes.

:class:`MedSAMEngine` is what the CLI, the worker and the Python API call: :meth:`MedSAMEngine.run` takes a checked
:class:`~medseg_backend.runspec.BoxRun` (the keyword form :meth:`MedSAMEngine.segment_volume` builds one), checks
only what needs the image (the boxes against its shape via :mod:`medseg_backend.slicing`, seed masks), windows only the slab of slices the boxes cover
(with the whole volume's numbers: :class:`~medseg_backend.intensity.VolumeSlab`), cuts it into slices along the
chosen axis and walks each box through its slices with :func:`.propagation.propagate` (a generator: the engine
writes each slice's result, shows the previews, counts progress and acts on a cancel) on its
:class:`.predictor.MedSAMPredictor` (model, transform, embedding cache), so a second box on the same volume
re-encodes nothing.

Every 3-D run returns one :class:`~medseg_backend.confidence.SliceRecord` per object and slice written (area,
confidence, review flag; see :mod:`medseg_backend.confidence`), from the same decoder pass (no extra cost).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .. import slicing
from ..choices import AXES, DEFAULT_AXIS, DEFAULT_DIRECTION, DEFAULT_PROPAGATION
from ..confidence import SliceRecord
from ..errors import InputError, MedSegWarning
from ..intensity import IntensityRule, VolumeSlab, apply_intensity, cut_slab, resolve_preset
from ..progress import CancelToken, ProgressCallback, check, report
from ..runspec import DEFAULT_STOP_AFTER, BoxRun, Seed
from .predictor import MedSAMPredictor
from .propagation import centre_first, mode_for, propagate
from .walk import SliceResult, WalkEnd


@dataclass
class Result2D:
    mask: np.ndarray            # (H, W) uint8 0/1
    logits: np.ndarray          # (H, W) float32 upsampled logits (LiteMedSAM) / logit of upsampled prob (ViT-B)
    probabilities: np.ndarray   # (H, W) float32
    box: Tuple[int, int, int, int]
    messages: List[str] = field(default_factory=list)


@dataclass
class MedSAMResult:
    labels: np.ndarray                   # (K, J, I) uint8, 0 background, 1..N per box
    probabilities: Optional[np.ndarray] = None  # (K, J, I) float32, max over boxes of the slice probability
    messages: List[str] = field(default_factory=list)
    slices_run: int = 0
    slices_encoded: int = 0
    seconds: float = 0.0
    per_box: List[Dict] = field(default_factory=list)
    #: One record per object and slice written (slice index along the run's axis, area, confidence, flag).
    slices: List[SliceRecord] = field(default_factory=list)

    def flagged(self) -> List[SliceRecord]:
        """The slices to review."""
        return [r for r in self.slices if r.flagged]


class MedSAMEngine:
    """2-D and 3-D box segmentation on one :class:`MedSAMPredictor` (same arguments: ``model``, ``weights``,
    ``device``, ``precision``, ``cache_mb``, ``batch_size``, ``module``, ``runtime``)."""

    def __init__(self, model: str = "lite-medsam", weights: Optional[str] = None, device="auto",
                 precision: str = "auto", cache_mb: Optional[float] = None, batch_size: Optional[int] = None,
                 module: Optional[torch.nn.Module] = None, runtime: str = "auto") -> None:
        self.predictor = MedSAMPredictor(model, weights, device, precision, cache_mb, batch_size, module, runtime)

    @property
    def model_name(self) -> str:
        return self.predictor.model_name

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    @property
    def precision(self) -> str:
        return self.predictor.precision

    @property
    def runtime(self) -> str:
        """The image encoder's runtime: ``torch`` or ``openvino``."""
        return self.predictor.runtime

    # -- 2-D -----------------------------------------------------------------------------------------------
    def segment_image(self, image: np.ndarray, box: Sequence[int], intensity: Union[str, IntensityRule] = "auto",
                      ) -> Result2D:
        """One 2-D image (H, W) or (H, W, 3) and one inclusive box (x0, y0, x1, y1)."""
        if image.ndim == 3 and image.shape[2] != 3:
            raise InputError(f"Image of shape {image.shape} is not a 2-D grey or RGB image: give (H, W) or (H, W, 3).")
        rule, why = intensity_rule(intensity, image)
        img = apply_intensity(image, rule)
        box = slicing.check_box(box, img.shape[:2])
        h, w = img.shape[:2]
        p = self.predictor
        emb = p.embeddings([img])[0]  # preprocesses and encodes only on a cache miss
        logits, prob = p.upsample(p.decode(emb, p.box_to_model(box, h, w)), h, w)
        mask = (prob > 0.5).astype(np.uint8)
        return Result2D(mask, logits, prob.astype(np.float32), tuple(box), [why])

    # -- a run spec -----------------------------------------------------------------------------------------
    def run(self, spec: BoxRun, volume: Union[np.ndarray, VolumeSlab], *,
            arrays: Optional[Mapping[str, np.ndarray]] = None, progress: Optional[ProgressCallback] = None,
            cancel: Optional[CancelToken] = None,
            on_slice: Optional[Callable[[int, int, np.ndarray], None]] = None) -> Union[MedSAMResult, Result2D]:
        """Run a checked :class:`~medseg_backend.runspec.BoxRun` on ``volume``: a 2-D grey or RGB image (one 2-D box;
        a :class:`Result2D`) or a 3-D volume (K, J, I) or :class:`~medseg_backend.intensity.VolumeSlab` (a
        :class:`MedSAMResult`; see :meth:`segment_volume`). The spec's seeds name their masks in ``arrays``. The
        spec's model, weights, device, precision and runtime chose this engine (the worker's engine cache); what
        the spec holds is not checked again here, only what needs the image (boxes against its shape, seed masks)."""
        if spec.ndim == 2:                      # one 2-D box: a grey or RGB 2-D image
            return self.segment_image(volume, spec.boxes[0], intensity=spec.intensity)
        return self._run_volume(spec, volume, arrays or {}, progress, cancel, on_slice)

    # -- 3-D -----------------------------------------------------------------------------------------------
    def segment_volume(self, volume: Union[np.ndarray, VolumeSlab], boxes: Sequence[Sequence[int]], *,
                       intensity: Union[str, IntensityRule] = "auto", propagation: str = DEFAULT_PROPAGATION,
                       stop_after: int = DEFAULT_STOP_AFTER, axis: str = DEFAULT_AXIS,
                       progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
                       seeds: Optional[Sequence[Optional[Tuple[int, np.ndarray]]]] = None,
                       direction: str = DEFAULT_DIRECTION,
                       on_slice: Optional[Callable[[int, int, np.ndarray], None]] = None) -> MedSAMResult:
        """Segment ``volume`` (K, J, I) slice-wise from 3-D boxes (x0, y0, z0, x1, y1, z1), voxel indices,
        inclusive, in the volume's own index space whatever ``axis`` is. Returns labels 1..N (later boxes
        overwrite earlier ones, as the official multi-object run). Nothing is returned on cancel. The keyword
        form of :meth:`run`: the arguments become a :class:`~medseg_backend.runspec.BoxRun`, which checks them.

        Correct and re-propagate: ``seeds`` (one per box, or None) = (slice index k along ``axis``, the corrected
        2-D mask of that slice as :func:`medseg_backend.slicing.take_slice` cuts it). The seed slice is kept as
        given and propagation starts there, ``direction`` ``up`` (k + 1 to the box's last slice), ``down`` or
        ``both``; slices outside that walk stay 0 in the result.

        ``on_slice(object, k, mask)`` is called as each slice is finished (k along ``axis``, the slice's 2-D mask as
        :func:`medseg_backend.slicing.take_slice` cuts it): a progressive preview.

        ``volume`` may be a :class:`~medseg_backend.intensity.VolumeSlab` (cut around the boxes, with the rule and
        numbers of the whole volume, which the caller may then free): ``intensity`` is then the slab's, and the
        result is still full-size (zero outside the slab; pages never written take no memory)."""
        arrays: Dict[str, np.ndarray] = {}
        refs = None
        if seeds is not None:
            refs = []
            for i, seed in enumerate(seeds):
                if seed is not None:
                    arrays[f"seed{i}"] = seed[1]
                    seed = Seed(seed[0], f"seed{i}")
                refs.append(seed)
        rule = intensity if isinstance(intensity, IntensityRule) else None
        spec = BoxRun(boxes=boxes, model=self.model_name, intensity="auto" if rule else intensity,
                      propagation=propagation, stop_after=stop_after, axis=axis, seeds=refs, direction=direction)
        return self._run_volume(spec, volume, arrays, progress, cancel, on_slice, rule=rule)

    def _run_volume(self, spec: BoxRun, volume: Union[np.ndarray, VolumeSlab], arrays: Mapping[str, np.ndarray],
                    progress: Optional[ProgressCallback], cancel: Optional[CancelToken],
                    on_slice: Optional[Callable[[int, int, np.ndarray], None]],
                    rule: Optional[IntensityRule] = None) -> MedSAMResult:
        t0 = time.perf_counter()
        ax, direction = slicing.axis_index(spec.axis), spec.direction
        if volume.ndim != 3:
            raise InputError(f"Expected a 3-D volume (K, J, I), got shape {volume.shape}: for 2-D images use "
                             "a 2-D box (X0,Y0,X1,Y1).")
        from ..io import validate_array

        if isinstance(volume, VolumeSlab):
            shape, rule, why = volume.shape, volume.rule, volume.why or f"intensity preset {volume.rule.describe()}"
            if volume.axis != ax:
                raise InputError(f"The volume slab was cut along {AXES_BY_INDEX[volume.axis]} but the run is along "
                                 f"{spec.axis}: cut it along the run's axis.")
        else:
            validate_array(volume, "volume")
            shape = volume.shape
            rule, why = intensity_rule(rule or spec.intensity, volume)
        checked = tuple(slicing.check_box(b, shape, what=f"Box {i + 1}", axis=ax) for i, b in enumerate(spec.boxes))
        if checked != spec.boxes:
            spec = spec.replace(boxes=checked)       # clipped to the volume: the seeds checked again against them
        seeds = _seed_masks(spec, arrays, shape, ax)
        projected = [slicing.project_box(b, ax) for b in checked]
        # Only the slab of slices the boxes cover is windowed and walked (memory bounded by the box, not the
        # volume); it is windowed with the whole volume's numbers, so each slice is what the whole-volume rule
        # gives. Indices inside the slab are shifted by ``first``.
        first, last = min(p[0] for p in projected), max(p[1] for p in projected)
        if isinstance(volume, VolumeSlab):
            if first < volume.first or last > volume.last:
                raise InputError(f"The boxes cover slices {first}-{last} but the volume slab holds {volume.first}-"
                                 f"{volume.last}: cut the slab around every box.")
            part = volume
            first, last = part.first, part.last
        else:
            part = cut_slab(volume, ax, first, last, rule, why)
        slab = part.index
        work = slicing.to_slices(part.windowed(), ax)
        local = [(s0 - first, s1 - first, b2d) for s0, s1, b2d in projected]
        seeds = [None if sd is None else (sd[0] - first, sd[1]) for sd in seeds]
        blank = [first + k for k in _blank_slices(work, local)]
        if blank:
            shown = ", ".join(str(k) for k in blank[:10]) + (", ..." if len(blank) > 10 else "")
            warnings.warn(f"{len(blank)} slice(s) inside the box(es) are uniform after the intensity window "
                          f"({rule.describe()}) and were segmented as blank images: {shown}; check the window if "
                          "the structure is visible there.", MedSegWarning, stacklevel=2)
        labels_work = np.zeros(work.shape, dtype=np.uint8)
        probs_work = np.zeros(work.shape, dtype=np.float32)
        enc_before = self.predictor.cache.misses
        total_slices = sum(_walk_length(s0, s1, seed, direction) for (s0, s1, _), seed in zip(local, seeds))
        done = [0]
        per_box = []

        def tick(obj: int, k: int, mask: np.ndarray) -> None:
            done[0] += 1
            if on_slice is not None:
                on_slice(obj, first + int(k), mask)
            report(progress, done[0] / max(total_slices, 1), f"box {obj}: slice {first + k}")

        report(progress, 0.0, f"MedSAM ({self.model_name}, {self.precision}) on {len(checked)} box(es)")
        mode = mode_for(spec.propagation, spec.stop_after)
        for obj, ((s0, s1, b2d), seed) in enumerate(zip(local, seeds), start=1):
            records = {}
            for step in propagate(self.predictor, work, s0, s1, b2d, mode, obj=obj, seed=seed, direction=direction,
                                  cancel=cancel):
                if isinstance(step, WalkEnd):
                    if step.cancelled:
                        check(cancel)
                    per_box.append(_shifted(dict(step.summary, stopped=step.stopped,
                                                 records=[records[k] for k in sorted(records)]), first))
                    break
                if isinstance(step, SliceResult):
                    labels_work[step.slice][step.mask] = obj
                    np.maximum(probs_work[step.slice], step.probability, out=probs_work[step.slice])
                    records[step.slice] = step.record
                if step.show:
                    tick(obj, step.slice, step.mask)
        # Full-size results, zero outside the slab (np.zeros: pages never written take no memory).
        labels = np.zeros(shape, dtype=np.uint8)
        probs = np.zeros(shape, dtype=np.float32)
        labels[slab] = slicing.from_slices(labels_work, ax)
        probs[slab] = slicing.from_slices(probs_work, ax)
        report(progress, 1.0, "done")
        moved = [f"box {i}: propagation started at slice {p['z_start']}, where the model is surer of the box than on "
                 f"the middle slice {p['z_middle']}" for i, p in enumerate(per_box, start=1)
                 if p["z_start"] != p["z_middle"] and seeds[i - 1] is None]
        return MedSAMResult(labels=labels, probabilities=probs, messages=[why] + moved,
                            slices_run=sum(p["slices_run"] for p in per_box),
                            slices_encoded=self.predictor.cache.misses - enc_before,
                            seconds=time.perf_counter() - t0, per_box=per_box,
                            slices=[r for p in per_box for r in p["records"]])

    def encode_ahead(self, volume: np.ndarray, *, axis: str = DEFAULT_AXIS, intensity: Union[str, IntensityRule] = "auto",
                     slices: Optional[Sequence[int]] = None, cancel: Optional[CancelToken] = None,
                     progress: Optional[ProgressCallback] = None, centre: Optional[int] = None) -> Dict:
        """Fill the embedding cache for slices ``first..last`` (default: all) of ``volume`` along ``axis``, in the
        order propagation reaches them (middle first), so a later :meth:`segment_volume` only decodes them.

        ``centre`` (encode before the box: the slice in view): the slices around it instead, nearest first
        (:func:`nearest_first`), one at a time (``cancel`` stops it between two slices), and no more of them than the
        embedding cache holds (:attr:`MedSAMPredictor.cache_slices`), so that none pushes a nearer one out."""
        ax = slicing.axis_index(axis)
        if volume.ndim != 3:
            raise InputError(f"Encoding ahead needs a 3-D volume (K, J, I), got shape {volume.shape}.")
        rule, _ = intensity_rule(intensity, volume)
        depth = volume.shape[slicing.PERMUTATIONS[ax][0]]
        first, last = slices or (0, depth - 1)
        first, last = max(0, int(first)), min(depth - 1, int(last))
        if centre is not None:
            if not first <= int(centre) <= last:
                raise InputError(f"Slice {int(centre)} is outside the volume (0..{depth - 1} along {axis}): encode "
                                 "around a slice of the volume.")
            order = nearest_first(int(centre), first, last)[:self.predictor.cache_slices]
            first, last = min(order), max(order)
            batch = 1
        else:
            order = centre_first(first, last)
            batch = len(order)
        work = slicing.to_slices(cut_slab(volume, ax, first, last, rule).windowed(), ax)
        misses, done = self.predictor.cache.misses, [0]

        def on_batch(n: int) -> None:
            done[0] += n
            report(progress, done[0] / len(order), f"encoded {done[0]}/{len(order)} slices")

        for start in range(0, len(order), batch):
            self.predictor.embeddings([work[k - first] for k in order[start:start + batch]], cancel,
                                      on_batch=on_batch)
        encoded = self.predictor.cache.misses - misses
        return {"encoded": int(encoded), "cached": int(len(order) - encoded), "order": order}


def nearest_first(centre: int, first: int, last: int) -> List[int]:
    """Slice indices first..last ordered by their distance to ``centre`` (the upper one first at equal distance):
    the order to encode in before the box, whose middle slice is most likely the one in view."""
    order = [centre]
    for d in range(1, max(centre - first, last - centre) + 1):
        order += [k for k in (centre + d, centre - d) if first <= k <= last]
    return order


AXES_BY_INDEX = {index: name for name, index in AXES.items()}


def _shifted(info: Dict, first: int) -> Dict:
    """A walk's summary (with its records) on a slab starting at slice ``first``, in the volume's slice numbers."""
    out = dict(info, z_middle=info["z_middle"] + first, z_start=info["z_start"] + first,
               ended_at={side: None if k is None else k + first for side, k in info["ended_at"].items()})
    for r in out["records"]:
        r.slice += first
    return out


def _seed_masks(spec: BoxRun, arrays: Mapping[str, np.ndarray], shape, ax: int
                ) -> List[Optional[Tuple[int, np.ndarray]]]:
    """One (slice, 2-D bool mask) or None per box: the spec's seeds (their slices checked by the spec) with their
    masks from ``arrays``, each of the shape of a slice of this volume along the run's axis."""
    if spec.seeds is None:
        return [None] * len(spec.boxes)
    plane = tuple(n for a, n in enumerate(shape) if a != ax)
    out: List[Optional[Tuple[int, np.ndarray]]] = []
    for i, seed in enumerate(spec.seeds, start=1):
        if seed is None:
            out.append(None)
            continue
        if seed.mask not in arrays:
            raise InputError(f"Box {i}: the corrected slice's mask '{seed.mask}' is not in the request: send the "
                             "seed's array with it.")
        mask = np.asarray(arrays[seed.mask])
        if mask.shape != plane:
            raise InputError(f"Box {i}: the corrected slice's mask has shape {mask.shape}, but a slice of this "
                             f"volume along the run's axis is {plane}.")
        out.append((seed.slice, mask > 0))
    return out


def _walk_length(s0: int, s1: int, seed, direction: str) -> int:
    """How many slices a walk decodes (for progress)."""
    if seed is None:
        return s1 - s0 + 1
    k = seed[0]
    return (s1 - k if direction in ("both", "up") else 0) + (k - s0 if direction in ("both", "down") else 0)


def _blank_slices(work: np.ndarray, projected) -> List[int]:
    """Slices of the slice view ``work`` inside the boxes (``projected`` by :func:`slicing.project_box`) whose box
    region is one grey level after windowing."""
    out = set()
    for s0, s1, (x0, y0, x1, y1) in projected:
        region = work[s0:s1 + 1, y0:y1 + 1, x0:x1 + 1]
        flat = region.max(axis=(1, 2)) == region.min(axis=(1, 2))
        out.update(s0 + int(i) for i in np.flatnonzero(flat))
    return sorted(out)


def intensity_rule(intensity, array) -> Tuple[IntensityRule, str]:
    """The intensity rule for ``array`` (a rule as given, or a preset name resolved) and a line saying which."""
    if isinstance(intensity, IntensityRule):
        return intensity, f"intensity preset {intensity.describe()}"
    return resolve_preset(intensity, array)
