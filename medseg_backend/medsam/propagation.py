"""Slice-to-slice propagation of one box through a volume (MedSAM's 3-D procedure), in four modes.

Every mode starts at the middle slice of the box and walks up, then down from the middle:

* ``official`` (default): the LiteMedSAM procedure (``MODEL_FACTS.md``): each slice prompted with the previous
  slice's mask box (+3 px in 256-space, see the transforms), the middle box again when the previous mask is
  empty. Never stops early.
* ``roi``: the user's 2-D box on every slice. ``stop``: ``official``, stopping after ``stop_after`` empty slices.
* ``adaptive`` (experimental): the carried box (the official rule, kept within the user's box + 3 px); where its
  mask's confidence is below :data:`ROI_BELOW` the user's box is decoded too and the more confident mask is
  kept; the walk stops where the object ends (empty mask, or confidence below :data:`END_BELOW` while the area
  shrinks).

Encoder inputs do not depend on the prompt, so slices are encoded in batches ahead of the propagation front
(:meth:`MedSAMPredictor.embeddings`); decoding is sequential (each box depends on the last mask).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..choices import DIRECTIONS
from ..confidence import SliceRecord
from ..progress import CancelToken, check
from .predictor import MedSAMPredictor, SliceView
from .transforms import CARRY_MARGIN, LITE_SIZE

#: Adaptive propagation: the object has ended where the confidence falls below this while the area shrinks.
END_BELOW = 0.5
#: Adaptive propagation: the user's box is tried too on slices where the carried box's confidence is below this.
ROI_BELOW = 0.8


def middle_slice(first: int, last: int) -> int:
    """Where propagation starts: the official rule ``int((last - first) / 2 + first)``."""
    return int((last - first) / 2 + first)


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
    own so that it is ready after one encoder pass). Returns the run's summary with one :class:`SliceRecord` per
    slice written (key ``records``).

    ``seed`` = (slice k, 2-D mask): a slice the user corrected. It is kept exactly as given (confidence 1) and the
    walk starts from it instead of the middle slice: its mask gives the box of slice k + 1 (up) and k - 1 (down),
    by the mode's rule. ``direction``: ``up`` (k + 1 .. s1), ``down`` (k - 1 .. s0) or ``both``."""
    depth, h, w = work.shape
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    masks: Dict[int, np.ndarray] = {}
    views: Dict[int, SliceView] = {}
    records: Dict[int, SliceRecord] = {}
    if seed is None:
        mid = middle_slice(s0, s1)
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
    roi_box = predictor.box_to_model(box2d, h, w)
    sources = {"middle": 0, "previous": 0, "fallback": 0, "roi": 0}
    ends: Dict[str, Optional[int]] = {"up": None, "down": None}
    first_chunk = True
    for order, step, side in ((up, -1, "up"), (down, +1, "down")):
        empty_run = 0
        ended = _EndOfObject()
        for chunk in _chunks(order, predictor.batch_size, first_alone=first_chunk and seed is None):
            first_chunk = False
            check(cancel)
            embs = predictor.embeddings([work[k] for k in chunk], cancel)
            stop = False
            for k, emb in zip(chunk, embs):
                view = _choose(predictor, emb, mode, k == mid and seed is None, masks.get(k + step),
                               views.get(k + step), obj, roi_box, h, w)
                sources[view.source] += 1
                if mode == "adaptive" and ended.update(view):
                    ends[side] = k
                    stop = True
                    break
                _, prob = predictor.upsample(view.low, h, w, want_logits=False)
                mask = prob > 0.5
                labels[k][mask] = obj
                np.maximum(probs[k], prob, out=probs[k])
                masks[k] = mask
                views[k] = view
                records[k] = view.record(obj, k, int(np.count_nonzero(mask)))
                tick(k, mask)
                if mode == "stop":
                    empty_run = 0 if mask.any() else empty_run + 1
                    if empty_run >= stop_after:
                        stop = True
                        break
            if stop:
                break
    recs = [records[k] for k in sorted(records)]
    return {"z_middle": mid, "slices_run": len(masks) - (seed is not None), **sources, "ended_at": ends,
            "records": recs}


def _chunks(order: List[int], size: int, first_alone: bool) -> List[List[int]]:
    """Encoder batches along a walk; with ``first_alone`` the first slice is a batch of its own (the user sees it
    after one encoder pass instead of a whole batch)."""
    head = order[:1] if first_alone else []
    rest = order[len(head):]
    return ([head] if head else []) + [rest[i: i + size] for i in range(0, len(rest), size)]


def _choose(predictor: MedSAMPredictor, emb, mode: str, is_mid: bool, prev: Optional[np.ndarray],
            prev_view: Optional[SliceView], obj: int, roi_box: np.ndarray, h: int, w: int) -> SliceView:
    """The slice's decoded mask under ``mode``, with its confidence signals."""
    carried = None
    if mode != "roi" and not is_mid and prev is not None and prev.any():
        carried = predictor.transform.box_from_mask(prev, obj, h, w)
        if carried is not None and mode == "adaptive":
            carried = _adapt_box(carried, roi_box, predictor.img_size)
    if carried is None:
        source = "middle" if is_mid else ("roi" if mode in ("roi", "adaptive") else "fallback")
        return predictor.decode_view(emb, roi_box, source, prev_view, h, w)
    view = predictor.decode_view(emb, carried, "previous", prev_view, h, w)
    if mode == "adaptive" and view.confidence < ROI_BELOW:
        # The carried box looks doubtful here: try the user's box and keep the more confident mask.
        alt = predictor.decode_view(emb, roi_box, "roi", prev_view, h, w)
        if alt.confidence > view.confidence:
            view = alt
    return view


def _adapt_box(carried: np.ndarray, roi_box: np.ndarray, img_size: int) -> np.ndarray:
    """The carried box kept inside the user's box plus the official +3 px margin (a 256-grid's 3 px in
    model-input space): it cannot wander off, and keeps the context the model was trained with."""
    m = float(CARRY_MARGIN) * img_size / LITE_SIZE
    lo_lim, hi_lim = roi_box[:2] - m, roi_box[2:] + m
    lo = np.minimum(np.maximum(carried[:2], lo_lim), hi_lim)
    hi = np.maximum(np.minimum(carried[2:], hi_lim), lo)
    return np.concatenate([lo, hi]).astype(np.float32)


class _EndOfObject:
    """Adaptive propagation: has the object ended? Yes on an empty mask, or when the confidence has fallen
    below :data:`END_BELOW` and the area is shrinking."""

    def __init__(self) -> None:
        self.prev_area: Optional[int] = None

    def update(self, view: SliceView) -> bool:
        area = int(np.count_nonzero(view.low_mask))
        if area == 0:
            return True
        shrinking = self.prev_area is not None and area < self.prev_area
        self.prev_area = area
        return view.confidence < END_BELOW and shrinking
