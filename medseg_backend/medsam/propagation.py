"""Slice-to-slice propagation of one box through a volume (MedSAM's 3-D procedure), in five modes.

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
* ``adaptive`` (opt-in; it lost to ``official`` on held-out tumour MR, see ``choices.DEFAULT_PROPAGATION``): the walk starts where the model is surest of the user's box, with three rules on top of
  the carried box; each rule uses a signal the model or the image gives, none a threshold fitted per case:

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

Encoder inputs do not depend on the prompt, so slices are encoded in batches ahead of the propagation front
(:meth:`MedSAMPredictor.embeddings`); decoding is sequential (each box depends on the last mask).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..choices import DIRECTIONS
from ..confidence import SliceRecord, combine, intensity_range, mask_iou, profile_match
from ..progress import CancelToken, check
from ..slicing import bbox2d, middle_slice, start_window
from .predictor import MedSAMPredictor, SliceView
from .transforms import CARRY_MARGIN, LITE_SIZE

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


def propagate(predictor: MedSAMPredictor, work: np.ndarray, labels: np.ndarray, probs: np.ndarray, obj: int,
              s0: int, s1: int, box2d: Tuple[int, int, int, int], mode: str, stop_after: int,
              cancel: Optional[CancelToken], tick: Callable[[int, np.ndarray], None],
              seed: Optional[Tuple[int, np.ndarray]] = None, direction: str = "both") -> Dict:
    """Run object ``obj`` through slices ``s0..s1`` of ``work`` (a slice view, slices first) from its 2-D box
    (x0, y0, x1, y1); writes ``obj`` into ``labels`` (later objects overwrite) and the max probability into
    ``probs``; ``tick(k, mask)`` is called as each slice is done (the first one, the middle slice, is encoded on its
    own so that it is ready after one encoder pass; with ``adaptive`` it is provisional until the start is chosen,
    and ``tick`` is called again for it with its final mask if that differs). Returns the run's summary with one
    :class:`SliceRecord` per slice written (key ``records``).

    ``seed`` = (slice k, 2-D mask): a slice the user corrected. It is kept exactly as given (confidence 1) and the
    walk starts from it instead of the middle slice: its mask gives the box of slice k + 1 (up) and k - 1 (down),
    by the mode's rule. ``direction``: ``up`` (k + 1 .. s1), ``down`` (k - 1 .. s0) or ``both``."""
    depth, h, w = work.shape
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if mode == "guarded":
        if seed is not None or direction != "both":  # from a corrected slice / one way: the official walk
            return propagate(predictor, work, labels, probs, obj, s0, s1, box2d, "official", stop_after, cancel,
                             tick, seed, direction)
        return _guarded(predictor, work, labels, probs, obj, s0, s1, box2d, stop_after, cancel, tick)
    masks: Dict[int, np.ndarray] = {}
    views: Dict[int, SliceView] = {}
    records: Dict[int, SliceRecord] = {}
    roi_box = predictor.box_to_model(box2d, h, w)
    encoded: Dict[int, object] = {}  # embeddings computed ahead of the walk (the adaptive start's candidates)
    shown: Dict[int, np.ndarray] = {}  # masks already passed to tick (adaptive: the provisional middle slice)
    start_view: Optional[SliceView] = None  # adaptive: the start slice's ROI decode, made while choosing it
    if seed is None:
        mid = middle_slice(s0, s1)
        if mode == "adaptive":
            def show(k: int, view: SliceView) -> None:
                shown[k] = predictor.upsample(view.low, h, w, want_logits=False)[1] > 0.5
                tick(k, shown[k])

            mid, encoded, start_view = _sure_start(predictor, work, s0, s1, roi_box, cancel, show)
        first_up = mid
    else:
        mid, seed_mask = int(seed[0]), np.asarray(seed[1]) > 0
        labels[mid][seed_mask] = obj
        np.maximum(probs[mid], seed_mask.astype(np.float32), out=probs[mid])
        masks[mid] = seed_mask
        area = int(np.count_nonzero(seed_mask))
        records[mid] = SliceRecord(object=obj, slice=mid, area=area, confidence=1.0 if area else 0.0,
                                   flagged=area == 0, source="user", iou=1.0, stability=1.0, agreement=1.0,
                                   neighbour=1.0)
        first_up = mid + 1
    up = list(range(first_up, min(s1 + 1, depth))) if direction in ("both", "up") else []
    down = list(range(mid - 1, max(-1, s0 - 1), -1)) if direction in ("both", "down") else []
    sources = {"middle": 0, "previous": 0, "fallback": 0, "roi": 0}
    ends: Dict[str, Optional[int]] = {"up": None, "down": None}
    # The object's intensity range: under the user's corrected slice, or (set below) under the start slice's mask.
    rng = intensity_range(work[mid], masks[mid]) if seed is not None else None
    first_chunk = True
    for order, step, side in ((up, -1, "up"), (down, +1, "down")):
        empty_run = 0
        for chunk in _chunks(order, predictor.batch_size, first_alone=first_chunk and seed is None):
            first_chunk = False
            check(cancel)
            todo = [k for k in chunk if k not in encoded]
            if todo:
                encoded.update(zip(todo, predictor.embeddings([work[k] for k in todo], cancel)))
            stop = False
            for k in chunk:
                emb = encoded.pop(k)
                is_mid = k == mid and seed is None
                prev = masks.get(k + step)
                if is_mid and start_view is not None:  # decoded (ROI box, no neighbour) while choosing the start
                    view, prob = start_view, predictor.upsample(start_view.low, h, w, want_logits=False)[1]
                else:
                    view, prob = _choose(predictor, emb, work[k], mode, is_mid, prev, views.get(k + step), obj,
                                         roi_box, h, w, rng)
                mask = prob > 0.5
                if is_mid:
                    rng = intensity_range(work[k], mask)
                profile = profile_match(work[k], mask, rng)
                area = int(np.count_nonzero(mask))
                sources[view.source] += 1
                prev_area = records[k + step].area if prev is not None else None
                if mode == "adaptive" and not is_mid and (area == 0 or _left_object(profile, area, prev_area, rng)):
                    ends[side] = k
                    stop = True
                    break
                labels[k][mask] = obj
                np.maximum(probs[k], prob, out=probs[k])
                masks[k] = mask
                views[k] = view
                records[k] = view.record(obj, k, area, profile)
                if k not in shown or not np.array_equal(shown.pop(k), mask):
                    tick(k, mask)
                if mode == "stop":
                    empty_run = 0 if area else empty_run + 1
                    if empty_run >= stop_after:
                        stop = True
                        break
            if stop:
                break
    recs = [records[k] for k in sorted(records)]
    return {"z_middle": middle_slice(s0, s1), "z_start": mid, "slices_run": len(masks) - (seed is not None),
            **sources, "ended_at": ends, "records": recs}


def _guarded(predictor: MedSAMPredictor, work: np.ndarray, labels: np.ndarray, probs: np.ndarray, obj: int,
             s0: int, s1: int, box2d: Tuple[int, int, int, int], stop_after: int, cancel: Optional[CancelToken],
             tick: Callable[[int, np.ndarray], None]) -> Dict:
    """``guarded``: the ``official`` walk (shown as it goes), then the ``adaptive`` walk on the same embeddings
    (decodes only), and on each side of the middle slice the ``adaptive`` masks replace the official ones only
    where :func:`take_adaptive` says so from both walks' records (run-time signals, never the image's label)."""
    lo, hi = max(0, s0), min(work.shape[0] - 1, s1)
    view = work[lo: hi + 1]
    runs = {}
    for m in ("official", "adaptive"):
        lab = np.zeros(view.shape, dtype=np.uint8)
        prob = np.zeros(view.shape, dtype=np.float32)
        show = (lambda k, mask: tick(k + lo, mask)) if m == "official" else (lambda k, mask: None)
        info = propagate(predictor, view, lab, prob, obj, s0 - lo, s1 - lo, box2d, m, stop_after, cancel, show)
        runs[m] = (lab, prob, {r.slice: r for r in info["records"]}, info)
    mid = middle_slice(s0, s1) - lo
    (lab_o, prob_o, rec_o, info_o), (lab_a, prob_a, rec_a, info_a) = runs["official"], runs["adaptive"]
    chosen = {}
    records = dict(rec_o)
    for side, ks in (("up", [k for k in rec_o if k > mid]), ("down", [k for k in rec_o if k < mid])):
        both = [k for k in ks if k in rec_a]
        same = float(np.mean([mask_iou(lab_o[k] == obj, lab_a[k] == obj) for k in both])) if both else 0.0
        take = bool(ks) and take_adaptive([rec_o[k] for k in ks], [rec_a[k] for k in both], same)
        chosen[side] = "adaptive" if take else "official"
        if not take:
            continue
        for k in ks:
            lab_o[k], prob_o[k] = lab_a[k], prob_a[k]
            records.pop(k)
            if k in rec_a:
                records[k] = rec_a[k]
            tick(k + lo, lab_o[k] == obj)
    for k, r in records.items():
        r.slice = k + lo
    for k in range(view.shape[0]):
        labels[k + lo][lab_o[k] == obj] = obj
        np.maximum(probs[k + lo], prob_o[k], out=probs[k + lo])
    recs = [records[k] for k in sorted(records)]
    ends = {side: (info_a["ended_at"][side] + lo if chosen[side] == "adaptive" and
                   info_a["ended_at"][side] is not None else None) for side in ("up", "down")}
    return {"z_middle": middle_slice(s0, s1), "z_start": middle_slice(s0, s1), "slices_run": len(recs),
            **{k: info_o[k] for k in ("middle", "previous", "fallback", "roi")}, "ended_at": ends,
            "chosen": chosen, "records": recs}


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


def _sure_start(predictor: MedSAMPredictor, work: np.ndarray, s0: int, s1: int, roi_box: np.ndarray,
                cancel: Optional[CancelToken],
                show: Callable[[int, SliceView], None]) -> Tuple[int, Dict[int, object], SliceView]:
    """``adaptive``'s start slice, the embeddings of the :func:`start_window` slices and the start slice's view
    (the walk reuses both instead of encoding and decoding them again). The
    user's box is decoded on each window slice; the start is the slice whose mask the model is surest of *and*
    that agrees with the masks of the box on the adjacent window slices: the slice confidence of
    :mod:`medseg_backend.confidence` with its neighbour term = the mean IoU with those masks (a mask that jumps to
    another structure on one slice does not win). The middle slice stays the start unless another one scores at
    least :data:`START_GAIN` higher (the nearest to the middle wins a tie).

    The middle slice is encoded on its own first and passed to ``show`` at once (a progressive preview is not held
    up by the rest of the window's encoding); it is final when the walk starts there, and is shown again, as the
    walk decodes it, when the walk starts elsewhere (if the walk ends before reaching it, the complete result has
    nothing there and replaces the preview)."""
    window = start_window(s0, s1)
    h, w = work.shape[1:]
    mid = middle_slice(s0, s1)
    check(cancel)
    embs = {mid: predictor.embeddings([work[mid]], cancel)[0]}
    views = {mid: predictor.decode_view(embs[mid], roi_box, "middle", None, h, w)}
    show(mid, views[mid])
    rest = [k for k in window if k != mid]
    if not rest:
        return mid, embs, views[mid]
    embs.update(zip(rest, predictor.embeddings([work[k] for k in rest], cancel)))
    views.update({k: predictor.decode_view(embs[k], roi_box, "middle", None, h, w) for k in rest})

    def score(k: int) -> float:
        v = views[k]
        if not v.low_mask.any():
            return 0.0
        nb = [mask_iou(v.low_mask, views[j].low_mask) for j in (k - 1, k + 1) if j in views]
        return combine(v.iou, v.stability, v.agreement, float(np.mean(nb)))

    scores = {k: score(k) for k in window}
    best = max(window, key=lambda k: (scores[k], -abs(k - mid)))
    start = best if scores[best] >= scores[mid] + START_GAIN else mid
    return start, embs, views[start]


def _left_object(profile: float, area: int, prev_area: Optional[int], rng) -> bool:
    """The mask has left the object: off its intensity range (profile below :data:`END_PROFILE_BELOW`) and no
    larger than the previous slice's mask (the object running out), or almost entirely off it (profile below
    :data:`GONE_PROFILE_BELOW`: it jumped onto another tissue)."""
    if rng is None:
        return False
    shrinking = prev_area is not None and area <= prev_area
    return profile < GONE_PROFILE_BELOW or (profile < END_PROFILE_BELOW and shrinking)


def _chunks(order: List[int], size: int, first_alone: bool) -> List[List[int]]:
    """Encoder batches along a walk; with ``first_alone`` the first slice is a batch of its own (the user sees it
    after one encoder pass instead of a whole batch)."""
    head = order[:1] if first_alone else []
    rest = order[len(head):]
    return ([head] if head else []) + [rest[i: i + size] for i in range(0, len(rest), size)]


def _choose(predictor: MedSAMPredictor, emb, image: np.ndarray, mode: str, is_mid: bool, prev: Optional[np.ndarray],
            prev_view: Optional[SliceView], obj: int, roi_box: np.ndarray, h: int, w: int,
            rng: Optional[Tuple[float, float]]) -> Tuple[SliceView, np.ndarray]:
    """The slice's decoded mask under ``mode`` with its confidence signals, and its probabilities at (h, w)."""
    def prob_of(v: SliceView) -> np.ndarray:
        return predictor.upsample(v.low, h, w, want_logits=False)[1]

    carried = None
    if mode != "roi" and not is_mid and prev is not None and prev.any():
        carried = predictor.transform.box_from_mask(prev, obj, h, w)
        if carried is not None and mode == "adaptive":
            carried = _adapt_box(carried, roi_box, predictor.img_size)
    if carried is None:
        source = "middle" if is_mid else ("roi" if mode in ("roi", "adaptive") else "fallback")
        view = predictor.decode_view(emb, roi_box, source, prev_view, h, w)
        return view, prob_of(view)
    view = predictor.decode_view(emb, carried, "previous", prev_view, h, w)
    if mode != "adaptive":
        return view, prob_of(view)
    view = _grow(predictor, emb, view, roi_box, prev_view, h, w)
    prob = prob_of(view)
    if view.confidence < ROI_BELOW:
        # The carried box looks doubtful here: try the user's box; keep its mask if the model is surer of it and it
        # has not slid further off the object's intensities.
        alt = predictor.decode_view(emb, roi_box, "roi", prev_view, h, w)
        alt_prob = prob_of(alt)
        if alt.confidence > view.confidence and (
                profile_match(image, alt_prob > 0.5, rng) >= profile_match(image, prob > 0.5, rng)):
            return alt, alt_prob
    return view, prob


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
