"""The slice walk of MedSAM's 3-D propagation: a generator over slices, whatever the mode.

:func:`walk` runs one box through its slices and *yields* what it makes, slice by slice, as SAM 2's video
predictor yields each frame; it writes nothing and keeps no progress. The caller owns the rest: it writes each
:class:`SliceResult` into its arrays, shows each :class:`Preview` (and each result marked ``show``), counts
progress, and reads why each side stopped from the :class:`WalkEnd` that closes every walk. A cancelled run ends
the walk with :data:`CANCELLED` on its sides (the caller then discards everything).

How the next slice's box is chosen and when a side stops is the mode's: a :class:`Mode` object
(:mod:`.propagation` holds the modes and their registry). The walk itself is the same for all of them: it starts
at the mode's start slice (the middle slice of the box, or the user's corrected slice), walks up to the box's last
slice, then down to its first, encodes ahead of the front in batches (encoder inputs do not depend on the prompt)
and decodes slice by slice (each box depends on the previous mask).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from ..confidence import SliceRecord, intensity_range, profile_match
from ..errors import CancelledError
from ..progress import CancelToken, check
from ..slicing import middle_slice
from .predictor import MedSAMPredictor, SliceView

#: Why one side of a walk stopped (:attr:`WalkEnd.stopped`).
END_OF_BOX = "end of box"            # it reached the box's last (up) or first (down) slice
NOT_WALKED = "not walked"            # the run's direction leaves this side out
OBJECT_ENDED = "object ended"        # the mode saw the object end (``adaptive``: an empty mask or one off the object)
EMPTY_SLICES = "empty slices"        # ``stop``: ``stop_after`` empty slices in a row
CANCELLED = "cancelled"              # the run was cancelled: nothing of it is to be kept
SIDES = ("up", "down")


@dataclass
class Preview:
    """A mask to show now (progressive preview), not a result: ``adaptive``'s middle slice before its start is
    chosen, ``guarded``'s official walk as it goes, or a slice whose shown mask changed."""
    slice: int
    mask: np.ndarray            # (h, w) bool
    show = True


@dataclass
class SliceResult:
    """One slice's result for the object: the caller labels ``mask`` and keeps the larger probability. ``show``:
    also show it now (False where the same mask was shown already)."""
    slice: int
    mask: np.ndarray            # (h, w) bool
    probability: np.ndarray     # (h, w) float32
    record: SliceRecord
    box: Optional[np.ndarray]   # the box decoded (model-input space x0, y0, x1, y1); None on the user's slice
    show: bool = True


@dataclass
class WalkEnd:
    """The last item of every walk: why each side stopped (``up``, ``down`` -> one of the reasons above) and the
    run's summary (``z_middle``, ``z_start``, ``slices_run``, the prompt counts ``middle`` / ``previous`` /
    ``fallback`` / ``roi``, ``ended_at`` (the slice where ``adaptive`` saw the object end, per side) and, for
    ``guarded``, ``chosen``)."""
    stopped: Dict[str, str]
    summary: Dict

    @property
    def cancelled(self) -> bool:
        return CANCELLED in self.stopped.values()


Step = Union[Preview, SliceResult, WalkEnd]


@dataclass(frozen=True)
class WalkJob:
    """One box through slices ``first..last`` of ``work`` (a slice view, slices first, uint8), its 2-D box
    ``box2d`` (x0, y0, x1, y1) in slice pixels, object ``obj``; ``seed`` = (slice, 2-D mask) of a corrected slice
    to walk from in ``direction`` (``both``, ``up``, ``down``); ``cancel`` is checked between encoder batches."""
    predictor: MedSAMPredictor
    work: np.ndarray
    first: int
    last: int
    box2d: Tuple[int, int, int, int]
    obj: int = 1
    seed: Optional[Tuple[int, np.ndarray]] = None
    direction: str = "both"
    cancel: Optional[CancelToken] = None

    @property
    def height(self) -> int:
        return self.work.shape[1]

    @property
    def width(self) -> int:
        return self.work.shape[2]

    @property
    def middle(self) -> int:
        return middle_slice(self.first, self.last)

    @cached_property
    def roi_box(self) -> np.ndarray:
        """The user's box in model-input space."""
        return self.predictor.box_to_model(self.box2d, self.height, self.width)

    def probability(self, view: SliceView) -> np.ndarray:
        """A decoded view's probabilities at the slice's size."""
        return self.predictor.upsample(view.low, self.height, self.width, want_logits=False)[1]


class Start(NamedTuple):
    """Where a walk without a corrected slice starts, the embeddings already made (slice -> embedding) and the
    start slice's view if it was decoded while choosing it."""
    slice: int
    encoded: Dict[int, object]
    view: Optional[SliceView]


class Side:
    """What a walk knows about the side it is on: the consecutive empty slices it wrote."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.empty_run = 0


class Mode:
    """How a walk chooses each slice's box and when a side stops. The defaults are the published (``official``)
    rule's hooks; a mode overrides what it changes, or :meth:`walk` as a whole."""
    name = ""

    def start(self, job: WalkJob) -> Iterator[Preview]:
        """Generator of previews; returns the :class:`Start` (default: the middle slice, nothing made ahead)."""
        return Start(job.middle, {}, None)
        yield  # noqa: unreachable - makes this a generator

    def decode(self, job: WalkJob, emb, k: int, is_start: bool, prev_mask: Optional[np.ndarray],
               prev_view: Optional[SliceView], rng) -> Tuple[SliceView, np.ndarray]:
        """Slice ``k``'s decoded view and its probabilities (``prev_*``: the neighbouring slice the walk comes
        from; ``rng``: the object's intensity range, or None before the start slice)."""
        raise NotImplementedError

    def ends_before(self, is_start: bool, area: int, profile: float, prev_area: Optional[int], rng) -> Optional[str]:
        """A reason to end the side at this slice without writing it, or None."""
        return None

    def ends_after(self, side: Side) -> Optional[str]:
        """A reason to end the side after writing this slice, or None."""
        return None

    def walk(self, job: WalkJob) -> Iterator[Step]:
        return run(job, self)


def run(job: WalkJob, mode: Mode) -> Iterator[Step]:
    """The walk of ``job`` under ``mode`` (see the module docstring)."""
    try:
        yield from _run(job, mode)
    except CancelledError:
        yield WalkEnd({side: CANCELLED for side in SIDES}, {})


def _run(job: WalkJob, mode: Mode) -> Iterator[Step]:
    predictor, work, seed, obj = job.predictor, job.work, job.seed, job.obj
    depth = work.shape[0]
    masks: Dict[int, np.ndarray] = {}
    views: Dict[int, SliceView] = {}
    records: Dict[int, SliceRecord] = {}
    shown: Dict[int, np.ndarray] = {}  # masks already previewed (``adaptive``: its provisional middle slice)
    encoded: Dict[int, object] = {}
    start_view: Optional[SliceView] = None
    if seed is None:
        start = yield from _remembered(mode.start(job), shown)
        mid, encoded, start_view = start.slice, dict(start.encoded), start.view
        first_up = mid
    else:
        mid, seed_mask = int(seed[0]), np.asarray(seed[1]) > 0
        area = int(np.count_nonzero(seed_mask))
        masks[mid] = seed_mask
        records[mid] = SliceRecord(object=obj, slice=mid, area=area, confidence=1.0 if area else 0.0,
                                   flagged=area == 0, source="user", iou=1.0, stability=1.0, agreement=1.0,
                                   neighbour=1.0)
        yield SliceResult(mid, seed_mask, seed_mask.astype(np.float32), records[mid], None, show=False)
        first_up = mid + 1
    up = list(range(first_up, min(job.last + 1, depth))) if job.direction in ("both", "up") else []
    down = list(range(mid - 1, max(-1, job.first - 1), -1)) if job.direction in ("both", "down") else []
    sources = {"middle": 0, "previous": 0, "fallback": 0, "roi": 0}
    ends: Dict[str, Optional[int]] = {"up": None, "down": None}
    stopped = {side: (END_OF_BOX if job.direction in ("both", side) else NOT_WALKED) for side in SIDES}
    # The object's intensity range: under the user's corrected slice, or (set below) under the start slice's mask.
    rng = intensity_range(work[mid], masks[mid]) if seed is not None else None
    first_chunk = True
    for order, step, side in ((up, -1, Side("up")), (down, +1, Side("down"))):
        for chunk in _chunks(order, predictor.batch_size, first_alone=first_chunk and seed is None):
            first_chunk = False
            check(job.cancel)
            todo = [k for k in chunk if k not in encoded]
            if todo:
                encoded.update(zip(todo, predictor.embeddings([work[k] for k in todo], job.cancel)))
            reason = None
            for k in chunk:
                emb = encoded.pop(k)
                is_start = k == mid and seed is None
                prev = masks.get(k + step)
                if is_start and start_view is not None:  # decoded (user's box, no neighbour) while choosing it
                    view, prob = start_view, job.probability(start_view)
                else:
                    view, prob = mode.decode(job, emb, k, is_start, prev, views.get(k + step), rng)
                mask = prob > 0.5
                if is_start:
                    rng = intensity_range(work[k], mask)
                profile = profile_match(work[k], mask, rng)
                area = int(np.count_nonzero(mask))
                sources[view.source] += 1
                prev_area = records[k + step].area if prev is not None else None
                reason = mode.ends_before(is_start, area, profile, prev_area, rng)
                if reason is not None:
                    ends[side.name] = k
                    break
                masks[k] = mask
                views[k] = view
                records[k] = view.record(obj, k, area, profile)
                fresh = k not in shown or not np.array_equal(shown.pop(k), mask)
                yield SliceResult(k, mask, prob, records[k], view.box, show=fresh)
                side.empty_run = 0 if area else side.empty_run + 1
                reason = mode.ends_after(side)
                if reason is not None:
                    break
            if reason is not None:
                stopped[side.name] = reason
                break
    yield WalkEnd(stopped, {"z_middle": job.middle, "z_start": mid, "slices_run": len(masks) - (seed is not None),
                            **sources, "ended_at": ends})


def _remembered(previews: Iterator[Preview], shown: Dict[int, np.ndarray]):
    """Pass ``previews`` on, noting each mask shown; return the generator's value."""
    while True:
        try:
            p = next(previews)
        except StopIteration as end:
            return end.value
        shown[p.slice] = p.mask
        yield p


def _chunks(order: List[int], size: int, first_alone: bool) -> List[List[int]]:
    """Encoder batches along a walk; with ``first_alone`` the first slice is a batch of its own (the user sees it
    after one encoder pass instead of a whole batch)."""
    head = order[:1] if first_alone else []
    rest = order[len(head):]
    return ([head] if head else []) + [rest[i: i + size] for i in range(0, len(rest), size)]
