"""The typed run spec: one object per run, from the effect (or the command line, or the Python API) to the engine.

* :class:`BoxRun` - MedSAM / LiteMedSAM from box prompts (the ``segment_box`` request);
* :class:`ExamplesRun` - UniverSeg from examples (``segment_examples``);
* :class:`EncodeRun` - fill MedSAM's embedding cache ahead of a box run (``encode``).

Every choice, default and cross-field check of a run lives here, once: a spec is checked when it is made
(``__post_init__``) and an invalid one is refused there with one :class:`~medseg_backend.errors.InputError` line
naming the problem and the fix, the same line wherever it was made (Slicer layer, worker, command line). Nobody
downstream re-checks or re-defaults what a spec holds; what needs the image (a box against the volume's shape, a
seed mask's shape, the intensity window against the data) is checked by the engine, which is the first to see it.

``to_message()`` gives the worker request ``(op, params)`` (JSON-able) and ``from_message(op, params)`` builds the
same object again (``from_message(*spec.to_message()) == spec``). Arrays never sit in a spec: a seed or an example
names an array of the request's array dict (see :mod:`medseg_backend.worker.protocol`). No torch, numpy only for
its integer types: the Slicer process builds specs.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from . import slicing
from .choices import (DEFAULT_AXIS, DEFAULT_DIRECTION, DEFAULT_MODEL, DEFAULT_PROPAGATION, DEVICES, DIRECTIONS,
                      MEDSAM_MODELS, PRECISIONS, PROPAGATIONS, RUNTIMES)
from .errors import InputError
from .intensity import parse_preset
from .universeg.examples import EXAMPLE_SOURCES

#: At most this many objects (boxes) fit one label map.
MAX_OBJECTS = 255
#: What a box run can return besides its label map, and an examples run besides its mask.
BOX_OUTPUTS = ("labels", "probabilities")
EXAMPLE_OUTPUTS = ("mask", "probabilities")
#: Where an example comes from: an example pair, the target segment's labelled slices, or a labelled volume (the
#: :class:`~medseg_backend.universeg.Example` sources, ``""`` named ``example``).
EXAMPLE_KINDS = tuple(source or "example" for source in EXAMPLE_SOURCES)
DEFAULT_SUPPORT_SIZE = 64      # UniverSeg was trained with 64 examples per support set
DEFAULT_STOP_AFTER = 2
NO_EXAMPLES = ("No examples: label a few slices of the segment, tick other segments or segmentations that show the "
               "same structure, or choose an example library folder.")

_CUDA_N = re.compile(r"^cuda:\d+$")


# ------------------------------------------------------------------------------------------------- checks --
def check_choice(value: Any, choices, what: str) -> str:
    """``value`` if it is one of ``choices``; else the one line ``Unknown <what> '<value>': use ...``."""
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"Unknown {what} '{value}': use {', '.join(choices)}.")
    return value


def check_device(device: Any) -> str:
    if isinstance(device, str) and _CUDA_N.match(device):
        return device
    return check_choice(device, DEVICES, "device")


def _whole(value: Any, what: str) -> int:
    """A whole number (an int, a numpy integer, or an integral float as a box read from JSON may be)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or int(value) != value:
        raise InputError(f"{what} must be a whole number, got {value!r}: give voxel indices and counts as integers.")
    return int(value)


def _at_least(value: Any, low: int, what: str, fix: str) -> int:
    n = _whole(value, what)
    if n < low:
        raise InputError(f"{what} is {n}: {fix}.")
    return n


def _box(value: Any, what: str) -> Tuple[int, ...]:
    """A 2-D (x0, y0, x1, y1) or 3-D (x0, y0, z0, x1, y1, z1) inclusive voxel box of whole numbers, start <= end."""
    try:
        numbers_ = () if isinstance(value, (str, bytes)) else tuple(value)
    except TypeError:
        numbers_ = ()
    if len(numbers_) not in (4, 6):
        raise InputError(f"{what} {value!r} has {len(numbers_)} numbers: give x0,y0,z0,x1,y1,z1 for a volume or "
                         "x0,y0,x1,y1 for a 2-D image (voxel indices, inclusive).")
    box = tuple(_whole(v, what) for v in numbers_)
    slicing.check_box_order(box, what)
    return box


def _outputs(value: Any, allowed: Tuple[str, ...]) -> Tuple[str, ...]:
    out = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    for name in out:
        check_choice(name, allowed, "output")
    return out


def _set(obj, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)     # normalising a frozen dataclass in __post_init__


def _plain(value: Any) -> Any:
    """Tuples -> lists, nested dataclasses -> dicts: the JSON-able form of a spec's field."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _Spec:
    """What the three specs share: the message form and the refusal of unknown fields."""

    OP = ""

    def to_message(self) -> Tuple[str, Dict[str, Any]]:
        """``(op, params)`` of the worker request (JSON-able; arrays are referred to by name)."""
        return self.OP, {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def _fields_of(cls, op: str, params: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        if op != cls.OP:
            raise InputError(f"A '{op}' request cannot become a {cls.__name__}: send it as '{cls.OP}'.")
        params = dict(params or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise InputError(f"Unknown field(s) {', '.join(unknown)} in a '{op}' request: use "
                             f"{', '.join(sorted(known))} (client and worker of different versions? restart the "
                             "worker).")
        return params

    @classmethod
    def from_message(cls, op: str, params: Optional[Dict[str, Any]]):
        """The spec of a worker request: the same object as the one whose :meth:`to_message` made it."""
        return cls(**cls._fields_of(op, params))


# ---------------------------------------------------------------------------------------------- box run --
@dataclass(frozen=True)
class Seed:
    """A corrected 2-D slice that starts a box's propagation: its index along the run's axis and the name of its
    mask in the request's arrays (the slice as :func:`medseg_backend.slicing.take_slice` cuts it)."""

    slice: int
    mask: str = "seed"

    def __post_init__(self) -> None:
        _set(self, "slice", _whole(self.slice, "The corrected slice"))
        if not isinstance(self.mask, str) or not self.mask:
            raise InputError(f"Seed mask {self.mask!r} is not an array name: name the seed's array in the request.")


def _seed(value: Any) -> Optional[Seed]:
    if value is None or isinstance(value, Seed):
        return value
    if isinstance(value, dict):
        return Seed(**value)
    raise InputError(f"Seed {value!r} is neither a corrected slice {{'slice': k, 'mask': name}} nor None: give one "
                     "per box.")


@dataclass(frozen=True)
class BoxRun(_Spec):
    """A MedSAM / LiteMedSAM run from box prompts (see :meth:`medseg_backend.medsam.MedSAMEngine.run`).

    ``boxes``: 3-D boxes (x0, y0, z0, x1, y1, z1), one per object (labels 1..N), voxel indices of the volume's
    own index space, inclusive, whatever ``axis`` is; or one 2-D box (x0, y0, x1, y1) for a 2-D image.
    ``axis``: the slicing axis (``axial``, ``coronal``, ``sagittal``). ``propagation``: how a box walks from slice
    to slice (:data:`~medseg_backend.choices.PROPAGATIONS`); ``stop_after``: empty slices before ``stop`` stops.
    ``seeds``: one :class:`Seed` (or None) per box, a corrected slice inside its box that starts the walk, which
    then goes ``direction`` (``both``, ``up`` = towards higher slice indices, ``down``). ``outputs``: ``labels``
    and optionally ``probabilities``. ``partial``: send each finished slice as it comes (progressive preview).
    ``model`` / ``weights`` / ``device`` / ``precision`` / ``runtime``: the engine that runs it; ``intensity``: the
    intensity preset (:mod:`medseg_backend.intensity`).
    """

    OP = "segment_box"

    boxes: Tuple[Tuple[int, ...], ...]
    model: str = DEFAULT_MODEL
    weights: Optional[str] = None
    device: str = "auto"
    precision: str = "auto"
    runtime: str = "auto"
    intensity: str = "auto"
    axis: str = DEFAULT_AXIS
    propagation: str = DEFAULT_PROPAGATION
    stop_after: int = DEFAULT_STOP_AFTER
    direction: str = DEFAULT_DIRECTION
    seeds: Optional[Tuple[Optional[Seed], ...]] = None
    outputs: Tuple[str, ...] = ("labels",)
    partial: bool = False

    def __post_init__(self) -> None:
        _check_engine(self, MEDSAM_MODELS, "MedSAM model")
        check_choice(self.runtime, RUNTIMES, "runtime")
        check_choice(self.propagation, PROPAGATIONS, "propagation")
        check_choice(self.direction, DIRECTIONS, "direction")
        _set(self, "stop_after", _at_least(self.stop_after, 1, "stop_after", "give the number of empty slices "
                                           "(>= 1) after which propagation stops"))
        if isinstance(self.boxes, (str, bytes)) or not hasattr(self.boxes, "__len__") or len(self.boxes) == 0:
            raise InputError("No box given: draw at least one box (ROI) around the structure.")
        if len(self.boxes) > MAX_OBJECTS:
            raise InputError(f"{len(self.boxes)} boxes given: at most {MAX_OBJECTS} objects fit one label map.")
        boxes = tuple(_box(b, f"Box {i}") for i, b in enumerate(self.boxes, start=1))
        _set(self, "boxes", boxes)
        if len({len(b) for b in boxes}) > 1:
            raise InputError("The boxes mix 2-D (x0,y0,x1,y1) and 3-D (x0,y0,z0,x1,y1,z1) boxes: give 3-D boxes for "
                             "a volume, one 2-D box for a 2-D image.")
        if self.ndim == 2 and len(boxes) != 1:
            raise InputError(f"A 2-D image takes one box (x0, y0, x1, y1), got {len(boxes)}.")
        _set(self, "outputs", _outputs(self.outputs, BOX_OUTPUTS))
        _set(self, "partial", bool(self.partial))
        if self.seeds is not None:
            seeds = tuple(_seed(s) for s in self.seeds)
            _set(self, "seeds", seeds)
            if self.ndim == 2:
                raise InputError("A corrected slice (seed) is for 3-D runs: drop it for a 2-D image.")
            if len(seeds) != len(boxes):
                raise InputError(f"{len(seeds)} seed(s) for {len(boxes)} box(es): give one corrected slice (or None) "
                                 "per box.")
            for i, (seed, box) in enumerate(zip(seeds, boxes), start=1):
                if seed is None:
                    continue
                s0, s1, _ = slicing.project_box(box, self.axis)
                if not s0 <= seed.slice <= s1:
                    raise InputError(f"Box {i}: the corrected slice {seed.slice} is outside the box's slices {s0}-{s1} "
                                     f"along {self.axis}: go to a slice inside the box (or widen the box) before "
                                     "propagating from it.")

    @property
    def ndim(self) -> int:
        """2 for a 2-D image's box, 3 for volume boxes."""
        return len(self.boxes[0]) // 2

    def slices(self, index: int = 0) -> Tuple[int, int]:
        """First and last slice of box ``index`` along the run's axis."""
        return slicing.project_box(self.boxes[index], self.axis)[:2]

    def replace(self, **changes) -> "BoxRun":
        """A copy with ``changes``, checked again (e.g. the boxes clipped to the volume)."""
        return dataclasses.replace(self, **changes)



# ------------------------------------------------------------------------------------------- encode run --
@dataclass(frozen=True)
class EncodeRun(_Spec):
    """Encode ahead of a box run: the image embeddings of slices ``slices`` (first, last; None = all) along
    ``axis``, with the engine and intensity of that run (:meth:`from_box_run`); or, encoding before the box, the
    slices around ``centre`` nearest first, in the ``background``."""

    OP = "encode"

    model: str = DEFAULT_MODEL
    weights: Optional[str] = None
    device: str = "auto"
    precision: str = "auto"
    runtime: str = "auto"
    intensity: str = "auto"
    axis: str = DEFAULT_AXIS
    slices: Optional[Tuple[int, int]] = None
    #: encode before the box: the slices around slice ``centre``, nearest first, as many as the cache holds
    centre: Optional[int] = None
    #: any later request pre-empts this one between two slices (the worker's ``cancelled`` event says so)
    background: bool = False

    def __post_init__(self) -> None:
        _check_engine(self, MEDSAM_MODELS, "MedSAM model")
        check_choice(self.runtime, RUNTIMES, "runtime")
        if self.centre is not None:
            _set(self, "centre", _at_least(self.centre, 0, "The slice to encode around",
                                           "give a slice index of the volume (0 or more)"))
        if not isinstance(self.background, bool):
            raise InputError(f"background must be true or false, got {self.background!r}.")
        if self.slices is not None:
            pair = tuple(self.slices) if isinstance(self.slices, (list, tuple)) else ()
            if len(pair) != 2:
                raise InputError(f"Slices {self.slices!r} to encode: give the first and the last slice.")
            first, last = _whole(pair[0], "The first slice"), _whole(pair[1], "The last slice")
            if not 0 <= first <= last:
                raise InputError(f"Slices {first}-{last} to encode: give 0 <= first <= last.")
            _set(self, "slices", (first, last))

    @classmethod
    def from_box_run(cls, run: BoxRun, slices: Optional[Tuple[int, int]] = None) -> "EncodeRun":
        """What ``run`` will encode: its engine, intensity and axis; ``slices`` (default: every box's slices)."""
        if slices is None:
            ranges = [run.slices(i) for i in range(len(run.boxes))]
            slices = (min(r[0] for r in ranges), max(r[1] for r in ranges))
        return cls(model=run.model, weights=run.weights, device=run.device, precision=run.precision,
                   runtime=run.runtime, intensity=run.intensity, axis=run.axis, slices=slices)



# ----------------------------------------------------------------------------------------- examples run --
@dataclass(frozen=True)
class ExampleRef:
    """One example of an examples run: the names of its image and label arrays in the request, a name for
    messages, where it comes from (:data:`EXAMPLE_KINDS`) and, for a labelled volume, at most how many of its
    slices to use."""

    image: str
    label: str
    name: str = ""
    kind: str = "example"
    max_slices: Optional[int] = None

    def __post_init__(self) -> None:
        for what in ("image", "label"):
            if not isinstance(getattr(self, what), str) or not getattr(self, what):
                raise InputError(f"Example '{self.name}' names no {what} array: name its {what} in the request.")
        check_choice(self.kind, EXAMPLE_KINDS, "example kind")
        if self.max_slices is not None:
            _set(self, "max_slices", _at_least(self.max_slices, 1, "max_slices", "use at least 1 slice per volume, "
                                               "or no limit"))

    @classmethod
    def of(cls, example, image: str, label: str, max_slices: Optional[int] = None) -> "ExampleRef":
        """The reference of a :class:`~medseg_backend.universeg.Example` whose arrays travel as ``image`` and
        ``label`` (``max_slices``: for a labelled volume only)."""
        kind = example.source or "example"
        return cls(image, label, example.name, kind, max_slices if kind == "volume" else None)

    @property
    def source(self) -> str:
        """The :class:`~medseg_backend.universeg.Example` source of this kind."""
        return "" if self.kind == "example" else self.kind


def _example(value: Any) -> ExampleRef:
    if isinstance(value, ExampleRef):
        return value
    if isinstance(value, dict):
        return ExampleRef(**value)
    raise InputError(f"Example {value!r} is not an example reference {{'image', 'label', 'name', 'kind'}}.")


@dataclass(frozen=True)
class ExamplesRun(_Spec):
    """A UniverSeg run (see :meth:`medseg_backend.universeg.UniverSegEngine.run`): ``examples`` (references to
    the request's arrays), ``roi`` (a 3-D box, a 2-D box for a 2-D target, or None: the region the examples'
    labels cover), slicing ``axis``, ``intensity``, ``support_size`` examples per pass, ``ensemble`` passes with
    random subsets from ``seed``, ``tta`` (flip test-time augmentation), ``neighbour_hint`` (crop each slice around
    its neighbour's result), ``label`` (the structure's value in the example labels), the engine (``weights``,
    ``device``, ``precision``) and ``outputs`` (``mask``, optionally ``probabilities``)."""

    OP = "segment_examples"

    examples: Tuple[ExampleRef, ...]
    roi: Optional[Tuple[int, ...]] = None
    axis: str = DEFAULT_AXIS
    intensity: str = "auto"
    support_size: int = DEFAULT_SUPPORT_SIZE
    ensemble: int = 1
    seed: int = 0
    tta: bool = False
    neighbour_hint: bool = False
    label: int = 1
    weights: Optional[str] = None
    device: str = "auto"
    precision: str = "auto"
    outputs: Tuple[str, ...] = ("mask",)

    def __post_init__(self) -> None:
        _check_engine(self, None, "")
        if not self.examples:
            raise InputError(NO_EXAMPLES)
        _set(self, "examples", tuple(_example(e) for e in self.examples))
        if self.roi is not None:
            _set(self, "roi", _box(self.roi, "ROI"))
        _set(self, "support_size", _at_least(self.support_size, 1, "Support size",
                                             f"give at least 1 (UniverSeg was trained with {DEFAULT_SUPPORT_SIZE})"))
        _set(self, "ensemble", _at_least(self.ensemble, 1, "Ensemble size", "give at least 1 pass"))
        _set(self, "seed", _whole(self.seed, "The random seed"))
        _set(self, "tta", bool(self.tta))
        _set(self, "neighbour_hint", bool(self.neighbour_hint))
        _set(self, "label", _at_least(self.label, 1, "The examples' label value", "give the structure's value "
                                      "(>= 1) in the example labels"))
        _set(self, "outputs", _outputs(self.outputs, EXAMPLE_OUTPUTS))



def _check_engine(spec, models, what: str) -> None:
    """The fields every spec shares: model (when it has one), device, precision, intensity preset, axis."""
    if models is not None:
        check_choice(spec.model, models, what)
    _set(spec, "device", check_device(spec.device))
    check_choice(spec.precision, PRECISIONS, "precision")
    if spec.weights is not None:
        _set(spec, "weights", str(spec.weights))
    if not isinstance(spec.intensity, str):
        raise InputError(f"Intensity preset {spec.intensity!r} is not a preset name: give auto, raw, mr, a CT preset "
                         "or window:L,W.")
    parse_preset(spec.intensity)              # an unknown preset / a window of width <= 0: its one line
    _set(spec, "axis", slicing.axis_name(spec.axis))


#: The spec type of each run request of the protocol.
SPECS = {cls.OP: cls for cls in (BoxRun, ExamplesRun, EncodeRun)}


def from_message(op: str, params: Optional[Dict[str, Any]]):
    """The spec of a run request (``segment_box``, ``segment_examples``, ``encode``)."""
    if op not in SPECS:
        raise InputError(f"'{op}' is not a run request: use {', '.join(SPECS)}.")
    return SPECS[op].from_message(op, params)
