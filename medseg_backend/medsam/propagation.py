"""Slice-to-slice propagation of one box through a volume (MedSAM's 3-D procedure): the five modes, each a small
:class:`~.walk.Mode` object, and :func:`propagate`, the walk of one box as a generator (:mod:`.walk`).

Every mode starts at the middle slice of the box (``adaptive``: possibly another slice of its middle third) and
walks up, then down from there:

* ``official`` (default): the LiteMedSAM procedure (``MODEL_FACTS.md``): each slice prompted with the previous
  slice's mask box (+3 px in 256-space, see the transforms), the middle box again when the previous mask is
  empty. Never stops early.
* ``roi``: the user's 2-D box on every slice. ``stop``: ``official``, stopping after ``stop_after`` empty slices.
* ``guarded`` (opt-in): the ``official`` walk and the ``adaptive`` walk on the same embeddings (decodes only), and
  on each side of the middle slice ``adaptive``'s masks only where :func:`take_adaptive` says so from both walks'
  run-time signals; elsewhere, from a corrected slice and in one direction only, ``official``'s. Its thresholds
  (``GUARD_*``) were chosen on a tuning part of the labelled data and checked once on a held-back part
  (``benchmarks/PROPAGATION.md``: never more than 0.002 below ``official`` there, +0.015 on average).
* ``adaptive`` (opt-in; it lost to ``official`` on held-out tumour MR, see ``choices.DEFAULT_PROPAGATION``): the
  walk starts where the model is surest of the user's box, with three rules on top of the carried box; each rule
  uses a signal the model or the image gives, none a threshold fitted per case:

  - *a sure start*: the user's box is decoded on each slice of the middle third of the box's slices (the middle
    slice +- a sixth of the box's depth, see :func:`start_window`) and the walk starts from the one the model is
    surest of (confidence, its neighbour term = agreement with the adjacent slices' masks), if it beats the middle
    slice by :data:`START_GAIN`: the middle slice's mask can be another structure, and every later box follows it;
  - *not trapped by the previous mask*: the carried box is kept within the user's box + 3 px, and where the mask
    is flush with a side of its box (the object goes on past it) that side is pushed out (by max(4 px, 10 %) on a
    256 grid, at most :data:`GROW_STEPS` times, never past the user's box + 3 px) and the slice decoded again;
  - *the user's box where the carried one is doubtful*: below confidence :data:`ROI_BELOW` the user's box is
    decoded too, and its mask kept when it is more confident and no further from the object's intensity range;
  - *stop at the end of the object*: the walk on one side ends at an empty mask, or at a mask that has left the
    object (fewer than :data:`END_PROFILE_BELOW` of its pixels within the object's intensity range, the profile
    of :mod:`medseg_backend.confidence` taken under the start slice's mask) and is no larger than the previous
    slice's (the object is running out, not turning into a bigger part of itself), or with fewer than
    :data:`GONE_PROFILE_BELOW` in that range whatever its size (it jumped onto another tissue); that slice is not
    written.

:data:`MODES` maps each name of ``choices.PROPAGATIONS`` to its class; :func:`mode_for` makes one.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..choices import PROPAGATIONS
from ..confidence import SliceRecord, combine, mask_iou, profile_match
from ..errors import InputError
from ..progress import CancelToken, check
from ..slicing import bbox2d, middle_slice, start_window
from .predictor import MedSAMPredictor, SliceView
from .transforms import CARRY_MARGIN, LITE_SIZE
from .walk import (EMPTY_SLICES, OBJECT_ENDED, SIDES, Mode, Preview, Side, SliceResult, Start, Step, WalkEnd,
                   WalkJob)

#: Adaptive propagation: the user's box is tried too on slices where the carried box's confidence is below this.
ROI_BELOW = 0.7
#: Adaptive propagation: a mask with fewer than this share of its pixels in the object's intensity range has left
#: the object; if it is also no larger than the previous slice's mask, the walk on that side ends there.
END_PROFILE_BELOW = 0.4
#: ... and a mask with fewer than this share in that range is off the object whatever its size.
GONE_PROFILE_BELOW = 0.15
#: Adaptive propagation: the walk may start on a slice of :func:`~medseg_backend.slicing.start_window` (the middle
#: third of the box's slices), but leaves the middle slice (the official start) only for a slice whose start score
#: is at least this much higher than the middle slice's.
START_GAIN = 0.05
#: Adaptive propagation: how often a box side the mask is flush with is pushed out on one slice, and by how much
#: (256-grid pixels, share of the box's size).
GROW_STEPS = 2
GROW_PX = 4.0
GROW_FRACTION = 0.1
#: A mask side within this many low-res pixels of its box side is "flush" with it.
FLUSH_PX = 1.0
#: Guarded propagation: one side of the walk is taken from ``adaptive`` only where its mean slice confidence on
#: that side is at least this much above ``official``'s on the same slices ...
GUARD_MARGIN = 0.2
#: ... and where every slice ``official`` wrote on that side but ``adaptive`` did not (it stopped earlier) has an
#: ``official`` confidence below this (the object has ended there by both walks' signals).
GUARD_DROP_BELOW = 0.7
#: ... and where ``adaptive``'s masks there are no further off the object's intensities: their mean profile match
#: (:func:`~medseg_backend.confidence.profile_match`) at most this much below ``official``'s.
GUARD_PROFILE_DROP = 0.1
#: Guarded propagation: where the two walks' masks agree on the slices both wrote (mean IoU at least this), the
#: side is ``adaptive``'s when it only ended earlier, on slices ``official`` is unsure of (see GUARD_DROP_BELOW).
GUARD_SAME_IOU = 0.9


def centre_first(first: int, last: int) -> List[int]:
    """Slice indices first..last in the order propagation reaches them: the middle slice, then outwards, upper
    side first (the order to encode ahead in)."""
    mid = middle_slice(first, last)
    order = [mid]
    for d in range(1, last - first + 1):
        for k in (mid + d, mid - d):
            if first <= k <= last:
                order.append(k)
    return order


def propagate(predictor: MedSAMPredictor, work: np.ndarray, s0: int, s1: int, box2d: Tuple[int, int, int, int],
              mode: Mode, *, obj: int = 1, seed: Optional[Tuple[int, np.ndarray]] = None, direction: str = "both",
              cancel: Optional[CancelToken] = None) -> Iterator[Step]:
    """Walk object ``obj`` through slices ``s0..s1`` of ``work`` (a slice view, slices first) from its 2-D box
    (x0, y0, x1, y1) under ``mode`` (:func:`mode_for`): a generator of :class:`~.walk.SliceResult` (one per slice
    written), :class:`~.walk.Preview` (masks to show before their result is final) and, last, one
    :class:`~.walk.WalkEnd` (why each side stopped, the run's summary). It writes nothing: the caller labels each
    result, keeps the larger probability, shows what is marked to show and counts progress. The middle slice is
    encoded on its own, so that it is ready after one encoder pass.

    ``seed`` = (slice k, 2-D mask): a slice the user corrected. It is kept exactly as given (confidence 1, the first
    result) and the walk starts from it instead of the middle slice: its mask gives the box of slice k + 1 (up) and
    k - 1 (down), by the mode's rule. ``direction``: ``up`` (k + 1 .. s1), ``down`` (k - 1 .. s0) or ``both``.
    ``cancel`` is checked between encoder batches; once it is set the walk ends, its sides ``cancelled``."""
    return mode.walk(WalkJob(predictor, work, s0, s1, tuple(box2d), obj, seed, direction, cancel))


class Official(Mode):
    """The published rule: the previous slice's mask box (+3 px); the user's box where that mask is empty."""
    name = "official"
    #: the source of the user's box decoded on a slice whose previous mask is empty
    fallback = "fallback"

    def carried(self, job: WalkJob, prev_mask: np.ndarray) -> Optional[np.ndarray]:
        """The box carried from the previous slice's (non-empty) mask, model-input space; None if none."""
        return job.predictor.transform.box_from_mask(prev_mask, job.obj, job.height, job.width)

    def refine(self, job: WalkJob, emb, image: np.ndarray, view: SliceView, prev_view: Optional[SliceView],
               rng) -> Tuple[SliceView, np.ndarray]:
        """The carried box's decode as this mode keeps it (here: as it is) and its probabilities."""
        return view, job.probability(view)

    def decode(self, job, emb, k, is_start, prev_mask, prev_view, rng):
        p = job.predictor
        box = None
        if not is_start and prev_mask is not None and prev_mask.any():
            box = self.carried(job, prev_mask)
        if box is None:
            view = p.decode_view(emb, job.roi_box, "middle" if is_start else self.fallback, prev_view,
                                 job.height, job.width)
            return view, job.probability(view)
        view = p.decode_view(emb, box, "previous", prev_view, job.height, job.width)
        return self.refine(job, emb, job.work[k], view, prev_view, rng)


class Roi(Mode):
    """The user's box on every slice."""
    name = "roi"

    def decode(self, job, emb, k, is_start, prev_mask, prev_view, rng):
        view = job.predictor.decode_view(emb, job.roi_box, "middle" if is_start else "roi", prev_view,
                                         job.height, job.width)
        return view, job.probability(view)


class Stop(Official):
    """``official``, ending a side after ``stop_after`` empty slices in a row."""
    name = "stop"

    def __init__(self, stop_after: int = 2) -> None:
        self.stop_after = stop_after

    def ends_after(self, side: Side) -> Optional[str]:
        return EMPTY_SLICES if side.empty_run >= self.stop_after else None


class Adaptive(Official):
    """The sure start, the carried box kept in the user's box and grown where the mask is flush with it, the
    user's box where the carried one is doubtful, the end of the object (see the module docstring)."""
    name = "adaptive"
    fallback = "roi"

    def start(self, job: WalkJob) -> Iterator[Preview]:
        return (yield from _sure_start(job))

    def carried(self, job, prev_mask):
        box = super().carried(job, prev_mask)
        return None if box is None else _adapt_box(box, job.roi_box, job.predictor.img_size)

    def refine(self, job, emb, image, view, prev_view, rng):
        roi_box = job.roi_box
        view = _grow(job.predictor, emb, view, roi_box, prev_view, job.height, job.width)
        prob = job.probability(view)
        if view.confidence < ROI_BELOW:
            # The carried box looks doubtful here: try the user's box; keep its mask if the model is surer of it and
            # it has not slid further off the object's intensities.
            alt = job.predictor.decode_view(emb, roi_box, "roi", prev_view, job.height, job.width)
            alt_prob = job.probability(alt)
            if alt.confidence > view.confidence and (
                    profile_match(image, alt_prob > 0.5, rng) >= profile_match(image, prob > 0.5, rng)):
                return alt, alt_prob
        return view, prob

    def ends_before(self, is_start, area, profile, prev_area, rng):
        if not is_start and (area == 0 or _left_object(profile, area, prev_area, rng)):
            return OBJECT_ENDED
        return None


class Guarded(Mode):
    """The ``official`` walk (shown as it goes), then the ``adaptive`` walk on the same embeddings (decodes only),
    and on each side of the middle slice ``adaptive``'s masks instead of ``official``'s only where
    :func:`take_adaptive` says so from both walks' records (run-time signals, never the image's label). From a
    corrected slice, or in one direction only: the ``official`` walk."""
    name = "guarded"

    def walk(self, job: WalkJob) -> Iterator[Step]:
        if job.seed is not None or job.direction != "both":
            yield from Official().walk(job)
            return
        runs = {}
        for mode in (Official(), Adaptive()):
            results: Dict[int, SliceResult] = {}
            for step in mode.walk(job):
                if isinstance(step, SliceResult):
                    results[step.slice] = step
                if isinstance(step, WalkEnd):
                    if step.cancelled:
                        yield step
                        return
                    runs[mode.name] = (results, step)
                elif mode.name == "official" and step.show:
                    yield Preview(step.slice, step.mask)
        (res_o, end_o), (res_a, end_a) = runs["official"], runs["adaptive"]
        mid = job.middle
        final = dict(res_o)
        chosen = {}
        for side, ks in (("up", sorted(k for k in res_o if k > mid)), ("down", sorted(k for k in res_o if k < mid))):
            both = [k for k in ks if k in res_a]
            same = float(np.mean([mask_iou(res_o[k].mask, res_a[k].mask) for k in both])) if both else 0.0
            take = bool(ks) and take_adaptive([res_o[k].record for k in ks], [res_a[k].record for k in both], same)
            chosen[side] = "adaptive" if take else "official"
            for k in ks if take else ():
                if k in res_a:
                    final[k] = SliceResult(k, res_a[k].mask, res_a[k].probability, res_a[k].record, res_a[k].box,
                                           show=False)
                    yield Preview(k, res_a[k].mask)
                else:  # adaptive ended before this slice: the preview's mask there goes
                    del final[k]
                    yield Preview(k, np.zeros_like(res_o[k].mask))
        for k in sorted(final):
            r = final[k]
            yield SliceResult(k, r.mask, r.probability, r.record, r.box, show=False)
        ends = {side: end_a.summary["ended_at"][side] if chosen[side] == "adaptive" else None for side in SIDES}
        yield WalkEnd({side: (end_a if chosen[side] == "adaptive" else end_o).stopped[side] for side in SIDES},
                      {"z_middle": mid, "z_start": mid, "slices_run": len(final),
                       **{k: end_o.summary[k] for k in ("middle", "previous", "fallback", "roi")}, "ended_at": ends,
                       "chosen": chosen})


#: The propagation modes by name (the names are ``choices.PROPAGATIONS``).
MODES = {m.name: m for m in (Official, Adaptive, Roi, Stop, Guarded)}


def mode_for(name: str, stop_after: int = 2) -> Mode:
    """The mode object for a ``propagation`` choice (``stop_after``: ``stop``'s number of empty slices)."""
    if name not in MODES:
        raise InputError(f"Unknown propagation '{name}': use {', '.join(PROPAGATIONS)}.")
    return Stop(stop_after) if name == "stop" else MODES[name]()


def take_adaptive(official: List[SliceRecord], adaptive: List[SliceRecord], same: float) -> bool:
    """``guarded``'s rule for one side of the walk, from the two walks' records on that side and ``same``, the mean
    IoU of their masks on the slices both wrote. ``adaptive``'s masks replace ``official``'s there only when every
    slice ``official`` wrote that ``adaptive`` did not (it ended earlier) is one ``official`` is unsure of
    (confidence below :data:`GUARD_DROP_BELOW`), and either

    * the walks agree on the slices both wrote (``same`` >= :data:`GUARD_SAME_IOU`) and ``adaptive`` ended earlier:
      both say the object has ended there; or
    * ``adaptive`` is clearly surer there (mean confidence at least :data:`GUARD_MARGIN` above ``official``'s) and
      its masks are no further off the object's intensities (mean profile match at most
      :data:`GUARD_PROFILE_DROP` below ``official``'s): the published walk was trapped or on another structure.

    A walk that stopped inside the object, slid onto another tissue, or is only about as sure as the published one
    never replaces it."""
    if not adaptive:
        return False
    written = {r.slice for r in adaptive}
    dropped = [r for r in official if r.slice not in written]
    if any(r.confidence >= GUARD_DROP_BELOW for r in dropped):
        return False
    if dropped and same >= GUARD_SAME_IOU:
        return True
    both = [r for r in official if r.slice in written]
    if np.mean([r.profile for r in adaptive]) < np.mean([r.profile for r in both]) - GUARD_PROFILE_DROP:
        return False
    return float(np.mean([r.confidence for r in adaptive])) >= float(np.mean([r.confidence for r in both])) + \
        GUARD_MARGIN


def _sure_start(job: WalkJob) -> Iterator[Preview]:
    """``adaptive``'s :class:`~.walk.Start`: its slice, the embeddings of the :func:`start_window` slices and the
    start slice's view (the walk reuses both instead of encoding and decoding them again). The
    user's box is decoded on each window slice; the start is the slice whose mask the model is surest of *and*
    that agrees with the masks of the box on the adjacent window slices: the slice confidence of
    :mod:`medseg_backend.confidence` with its neighbour term = the mean IoU with those masks (a mask that jumps to
    another structure on one slice does not win). The middle slice stays the start unless another one scores at
    least :data:`START_GAIN` higher (the nearest to the middle wins a tie).

    The middle slice is encoded on its own first and yielded as a :class:`~.walk.Preview` at once (a progressive
    preview is not held up by the rest of the window's encoding); it is final when the walk starts there, and is
    shown again, as the walk decodes it, when the walk starts elsewhere (if the walk ends before reaching it, the
    complete result has nothing there and replaces the preview)."""
    p, work, h, w = job.predictor, job.work, job.height, job.width
    roi_box = job.roi_box
    window = start_window(job.first, job.last)
    mid = job.middle
    check(job.cancel)
    embs = {mid: p.embeddings([work[mid]], job.cancel)[0]}
    views = {mid: p.decode_view(embs[mid], roi_box, "middle", None, h, w)}
    yield Preview(mid, job.probability(views[mid]) > 0.5)
    rest = [k for k in window if k != mid]
    if not rest:
        return Start(mid, embs, views[mid])
    embs.update(zip(rest, p.embeddings([work[k] for k in rest], job.cancel)))
    views.update({k: p.decode_view(embs[k], roi_box, "middle", None, h, w) for k in rest})

    def score(k: int) -> float:
        v = views[k]
        if not v.low_mask.any():
            return 0.0
        nb = [mask_iou(v.low_mask, views[j].low_mask) for j in (k - 1, k + 1) if j in views]
        return combine(v.iou, v.stability, v.agreement, float(np.mean(nb)))

    scores = {k: score(k) for k in window}
    best = max(window, key=lambda k: (scores[k], -abs(k - mid)))
    start = best if scores[best] >= scores[mid] + START_GAIN else mid
    return Start(start, embs, views[start])


def _left_object(profile: float, area: int, prev_area: Optional[int], rng) -> bool:
    """The mask has left the object: off its intensity range (profile below :data:`END_PROFILE_BELOW`) and no
    larger than the previous slice's mask (the object running out), or almost entirely off it (profile below
    :data:`GONE_PROFILE_BELOW`: it jumped onto another tissue)."""
    if rng is None:
        return False
    shrinking = prev_area is not None and area <= prev_area
    return profile < GONE_PROFILE_BELOW or (profile < END_PROFILE_BELOW and shrinking)


def _roi_limits(roi_box: np.ndarray, img_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """The user's box plus the official +3 px margin (a 256-grid's 3 px in model-input space): (x0, y0), (x1, y1)."""
    m = float(CARRY_MARGIN) * img_size / LITE_SIZE
    return roi_box[:2] - m, roi_box[2:] + m


def _adapt_box(carried: np.ndarray, roi_box: np.ndarray, img_size: int) -> np.ndarray:
    """The carried box kept inside the user's box + 3 px (:func:`_roi_limits`): it cannot wander off, and keeps
    the context the model was trained with."""
    lo_lim, hi_lim = _roi_limits(roi_box, img_size)
    lo = np.minimum(np.maximum(carried[:2], lo_lim), hi_lim)
    hi = np.maximum(np.minimum(carried[2:], hi_lim), lo)
    return np.concatenate([lo, hi]).astype(np.float32)


def flush_sides(low_mask: np.ndarray, box_low: np.ndarray, tol: float = FLUSH_PX) -> List[bool]:
    """Which sides (x0, y0, x1, y1) of a box (low-res grid units, exclusive upper corner) the mask touches."""
    b = bbox2d(low_mask)
    if b is None:
        return [False] * 4
    x0, y0, x1, y1 = b
    return [x0 <= box_low[0] + tol, y0 <= box_low[1] + tol, x1 >= box_low[2] - 1 - tol, y1 >= box_low[3] - 1 - tol]


def _grow(predictor: MedSAMPredictor, emb, view: SliceView, roi_box: np.ndarray, prev_view: Optional[SliceView],
          h: int, w: int) -> SliceView:
    """Where the mask is flush with a side of its box the object likely goes on past it: push that side out
    (max(:data:`GROW_PX`, :data:`GROW_FRACTION` of the box) on a 256 grid, within the user's box + 3 px) and decode
    again, at most :data:`GROW_STEPS` times."""
    scale = predictor.img_size / LITE_SIZE  # model-input units per low-res pixel
    lim_lo, lim_hi = _roi_limits(roi_box, predictor.img_size)
    lim_lo, lim_hi = np.maximum(lim_lo, 0.0), np.minimum(lim_hi, float(predictor.img_size))
    for _ in range(GROW_STEPS):
        sides = flush_sides(view.low_mask, view.box / scale)
        if not any(sides):
            break
        box = view.box.astype(np.float64).copy()
        step = np.maximum(GROW_PX * scale, GROW_FRACTION * (box[2:] - box[:2]))
        for i in (0, 1):
            if sides[i]:
                box[i] = max(box[i] - step[i], lim_lo[i])
            if sides[i + 2]:
                box[i + 2] = min(box[i + 2] + step[i], lim_hi[i])
        if np.allclose(box, view.box):
            break
        view = predictor.decode_view(emb, box.astype(np.float32), view.source, prev_view, h, w)
    return view
