"""Intensity presets: map raw scanner values to the uint8 range MedSAM / LiteMedSAM were trained on.

Rules follow MedSAM's ``pre_CT_MR.py`` (see ``MODEL_FACTS.md``), applied over the whole volume:

* CT window (level L, width W): clip to ``[L - W/2, L + W/2]``, then min-max of the *clipped* volume to
  0..255 and truncate to uint8.
* MR: clip to the 0.5 / 99.5 percentiles of voxels > 0, min-max to 0..255, voxels that were 0 stay 0,
  truncate to uint8.
* raw: 8-bit data as is.

The numbers these rules take from the whole volume (min / max, percentiles) are computed without a float64 copy
of it (:func:`intensity_stats`), and any part of the volume - the slab of slices a box covers,
:class:`VolumeSlab` - is mapped with them exactly as the whole volume would be, in pieces of bounded size.

``auto`` picks ``raw`` for 8-bit images, ``ct-abdomen`` for data that look like Hounsfield units and ``mr``
otherwise; :func:`resolve_preset` returns the reason so that the CLI / Slicer can say what it chose.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .errors import InputError

CT_WINDOWS = {
    "ct-abdomen": (40.0, 400.0),
    "ct-lung": (-600.0, 1500.0),
    "ct-brain": (40.0, 80.0),
    "ct-mediastinum": (50.0, 350.0),
}
PRESET_NAMES = ("auto", "raw", *CT_WINDOWS, "mr", "window:L,W")


@dataclass(frozen=True)
class IntensityRule:
    """A resolved preset. ``kind`` is ``raw``, ``window`` or ``mr``; ``level``/``width`` for windows."""

    name: str
    kind: str
    level: Optional[float] = None
    width: Optional[float] = None

    def describe(self) -> str:
        if self.kind == "window":
            return f"{self.name} (window level {self.level:g}, width {self.width:g})"
        if self.kind == "mr":
            return f"{self.name} (0.5-99.5 percentiles of voxels > 0)"
        return f"{self.name} (8-bit values as they are)"

    def key(self) -> str:
        """A string that identifies the rule in cache keys."""
        return f"{self.kind}:{self.level}:{self.width}"


_WINDOW_RE = re.compile(r"^window:\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*,\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*$")


def parse_preset(text: str) -> Optional[IntensityRule]:
    """Parse a preset name; returns ``None`` for ``auto`` (resolved later against the data)."""
    name = (text or "auto").strip().lower()
    if name == "auto":
        return None
    if name == "raw":
        return IntensityRule("raw", "raw")
    if name == "mr":
        return IntensityRule("mr", "mr")
    if name in CT_WINDOWS:
        level, width = CT_WINDOWS[name]
        return IntensityRule(name, "window", level, width)
    m = _WINDOW_RE.match(name)
    if m:
        level, width = float(m.group(1)), float(m.group(2))
        if not width > 0:
            raise InputError(f"Intensity preset '{text}' has width {width:g}: the window width must be > 0, "
                             f"e.g. window:40,400.")
        return IntensityRule(f"window:{level:g},{width:g}", "window", level, width)
    raise InputError(f"Unknown intensity preset '{text}': use one of {', '.join(PRESET_NAMES)}.")


def is_8bit(array: np.ndarray) -> bool:
    return array.dtype == np.uint8


def looks_like_hu(array: np.ndarray) -> bool:
    """CT in Hounsfield units: air around -1000 and soft tissue / bone above 0."""
    if array.size == 0:
        return False
    lo, hi = float(np.min(array)), float(np.max(array))
    return lo <= -500.0 and hi >= 100.0


def resolve_preset(text: str, array: np.ndarray) -> Tuple[IntensityRule, str]:
    """Return the rule for ``text`` on ``array`` and a sentence saying what was chosen and why."""
    rule = parse_preset(text)
    if rule is not None:
        if rule.kind == "raw" and not _fits_uint8(array):
            raise InputError("Intensity preset 'raw' needs 8-bit data (values 0..255) but the image spans "
                             f"{float(np.min(array)):g}..{float(np.max(array)):g}: use --intensity auto, mr, a CT "
                             "preset or window:L,W.")
        if rule.kind == "window":
            check_window(rule, array)
        return rule, f"intensity preset {rule.describe()}"
    if is_8bit(array):
        rule = IntensityRule("raw", "raw")
        why = "8-bit image"
    elif looks_like_hu(array):
        rule = IntensityRule("ct-abdomen", "window", *CT_WINDOWS["ct-abdomen"])
        why = "values look like CT Hounsfield units"
    else:
        rule = IntensityRule("mr", "mr")
        why = "not 8-bit and not Hounsfield-like, treated as MR"
    return rule, f"auto intensity: {rule.describe()} ({why})"


def check_window(rule: IntensityRule, array: np.ndarray) -> None:
    """Refuse a window that lies wholly outside the data: every voxel would be clipped to one value and the
    model would be shown a blank image (and still return a confident mask)."""
    if array.size == 0:
        return
    lower, upper = rule.level - rule.width / 2.0, rule.level + rule.width / 2.0
    lo, hi = float(np.min(array)), float(np.max(array))
    if hi <= lower or lo >= upper:
        raise InputError(f"Intensity window {rule.describe()} covers {lower:g}..{upper:g} but the image values are "
                         f"{lo:g}..{hi:g}: every voxel would become one grey level (a blank image); use --intensity "
                         "auto or a window inside the data range (e.g. the window displayed in the viewer).")


def _fits_uint8(array: np.ndarray) -> bool:
    if array.dtype == np.uint8:
        return True
    if array.size == 0:
        return False
    lo, hi = float(np.min(array)), float(np.max(array))
    if not (lo >= 0 and hi <= 255):
        return False
    if array.dtype.kind in "biu":
        return True
    return all(bool(np.all(np.mod(c, 1) == 0)) for c in _chunks(array))


#: Voxels mapped at once: the float64 temporaries of a mapping stay this size whatever the volume's size.
CHUNK_VOXELS = 1 << 19


def _chunks(array: np.ndarray):
    """``array`` in pieces along its first axis of about :data:`CHUNK_VOXELS` voxels each (views, no copies)."""
    if array.ndim == 0 or array.shape[0] == 0:
        yield array
        return
    per = max(1, array.size // max(array.shape[0], 1))
    step = max(1, CHUNK_VOXELS // per)
    for i in range(0, array.shape[0], step):
        yield array[i:i + step]


@dataclass(frozen=True)
class IntensityStats:
    """The whole-volume numbers a rule needs (MedSAM's rules look at the whole volume), so that any part of the
    volume - the slices a box covers - is mapped exactly as the whole volume would be: the clip range
    ``clip_lo..clip_hi`` and the min-max range ``lo..hi`` of the clipped volume; ``zero_stays`` for MR."""

    clip_lo: float
    clip_hi: float
    lo: float
    hi: float
    zero_stays: bool = False


def _order_statistics(array: np.ndarray, ranks: Tuple[int, ...]) -> Tuple[float, ...]:
    """The values of rank ``ranks`` (0-based, ascending) among the voxels > 0 of ``array``, without copying the
    volume: integer data through a histogram of their values, float data through a partition of a copy of the
    positive voxels in their own type (never float64 unless the data are)."""
    if array.dtype.kind in "biu":
        top = int(np.max(array))
        if top <= (1 << 24):
            counts = np.zeros(top + 1, dtype=np.int64)
            for c in _chunks(array):
                pos = c[c > 0]
                if pos.size:
                    counts[:int(pos.max()) + 1] += np.bincount(pos.ravel(), minlength=0)
            cum = np.cumsum(counts)
            return tuple(float(np.searchsorted(cum, r, side="right")) for r in ranks)
    pos = np.concatenate([c[c > 0].ravel() for c in _chunks(array)])
    part = np.partition(pos, sorted(set(ranks)))
    return tuple(float(part[r]) for r in ranks)


def _percentiles_of_positive(array: np.ndarray, qs: Tuple[float, ...], n: int) -> Tuple[float, ...]:
    """``np.percentile(array[array > 0].astype(float64), q)`` (linear method) for each ``q``, bit for bit, from the
    two order statistics around each virtual index (numpy's ``(n - 1) * q`` and its ``_lerp``)."""
    plan = []
    for q in qs:
        virtual = (n - 1) * np.true_divide(q, 100)
        below = int(np.floor(virtual))
        above = min(below + 1, n - 1)
        plan.append((below, above, np.float64(virtual - below)))
    values = _order_statistics(array, tuple(r for b, a, _ in plan for r in (b, a)))
    out = []
    for i, (_, _, t) in enumerate(plan):
        a, b = np.float64(values[2 * i]), np.float64(values[2 * i + 1])
        diff = b - a
        out.append(float(b - diff * (1 - t)) if t >= 0.5 else float(a + diff * t))
    return tuple(out)


def intensity_stats(array: np.ndarray, rule: IntensityRule) -> Optional[IntensityStats]:
    """The whole-volume numbers of ``rule`` on ``array`` (None for ``raw``), computed without a float64 copy of
    the volume (min / max in place; MR percentiles from a histogram or a copy of the positive voxels)."""
    if rule.kind == "raw":
        return None
    lo_data, hi_data = float(np.min(array)), float(np.max(array))
    if rule.kind == "window":
        lower = rule.level - rule.width / 2.0
        upper = rule.level + rule.width / 2.0
        return IntensityStats(lower, upper, float(np.clip(lo_data, lower, upper)),
                              float(np.clip(hi_data, lower, upper)))
    if rule.kind == "mr":
        n = sum(int(np.count_nonzero(c > 0)) for c in _chunks(array))
        if n == 0:
            raise InputError("Intensity preset 'mr' found no voxel > 0 in the image: use a CT preset, "
                             "window:L,W or raw.")
        lower, upper = _percentiles_of_positive(array, (0.5, 99.5), n)
        return IntensityStats(lower, upper, float(np.clip(lo_data, lower, upper)),
                              float(np.clip(hi_data, lower, upper)), zero_stays=True)
    raise InputError(f"Unknown intensity rule kind '{rule.kind}'.")


def apply_intensity(array: np.ndarray, rule: IntensityRule, stats: Optional[IntensityStats] = None) -> np.ndarray:
    """Map ``array`` (any shape) to uint8 with ``rule``, as MedSAM maps a whole volume (float64 arithmetic).

    ``stats``: the whole volume's :func:`intensity_stats` when ``array`` is only a part of it (the slices a box
    covers): that part then comes out exactly as it would from the whole volume. Mapped in pieces of
    :data:`CHUNK_VOXELS` voxels, so no float64 copy of the whole input is made."""
    if rule.kind == "raw":
        if array.dtype == np.uint8:
            return array
        if not _fits_uint8(array):
            raise InputError("Intensity preset 'raw' needs 8-bit data (values 0..255): use --intensity auto, mr, "
                             "a CT preset or window:L,W.")
        return array.astype(np.uint8)
    if stats is None:
        stats = intensity_stats(array, rule)
    out = np.empty(array.shape, dtype=np.uint8)
    for src, dst in zip(_chunks(array), _chunks(out)):
        dst[...] = _map_u8(src, stats)
    return out


def _map_u8(part: np.ndarray, st: IntensityStats) -> np.ndarray:
    """One piece: clip, min-max to 0..255 with the whole volume's range, (MR) zeros kept, truncated to uint8."""
    if st.hi <= st.lo:
        # Everything falls on one side of the window: the official code would divide by zero.
        return np.zeros(part.shape, dtype=np.uint8)
    out = np.array(part, dtype=np.float64)       # the one float64 temporary, changed in place (same arithmetic)
    np.clip(out, st.clip_lo, st.clip_hi, out=out)
    out -= st.lo
    out /= st.hi - st.lo
    out *= 255.0
    if st.zero_stays:
        out[part == 0] = 0
    return out.astype(np.uint8)


# ------------------------------------------------------------------------------------------- volume slabs --
@dataclass
class VolumeSlab:
    """Slices ``first..last`` along the slicing axis ``axis`` (0 axial, 1 coronal, 2 sagittal) of a volume of
    ``shape`` (K, J, I): what a box run needs of the volume, with the rule resolved on the whole volume and the whole
    volume's numbers, so that the slab is windowed exactly as the whole volume would be. A run on a slab needs
    memory for the slab only; the whole volume may be released once the slab is cut (see :func:`cut_slab`)."""

    array: np.ndarray
    axis: int
    first: int
    last: int
    shape: Tuple[int, int, int]
    rule: IntensityRule
    stats: Optional[IntensityStats]
    why: str = ""

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def index(self) -> Tuple[slice, ...]:
        """Where the slab sits in the whole (K, J, I) volume."""
        return slab_index(self.axis, self.first, self.last)

    def windowed(self) -> np.ndarray:
        """The slab mapped to uint8 with the whole volume's rule and numbers."""
        return apply_intensity(self.array, self.rule, self.stats)


def slab_index(axis: int, first: int, last: int) -> Tuple[slice, ...]:
    """Index of slices ``first..last`` along the slicing axis ``axis`` of a (K, J, I) volume."""
    index = [slice(None)] * 3
    index[axis] = slice(int(first), int(last) + 1)
    return tuple(index)


def cut_slab(volume: np.ndarray, axis: int, first: int, last: int, rule: IntensityRule, why: str = "", *,
             copy: bool = False) -> VolumeSlab:
    """The slab of ``volume`` between slices ``first`` and ``last`` along ``axis``, with ``rule``'s whole-volume
    numbers (:func:`intensity_stats`). ``copy=True``: the slab owns its voxels, so that ``volume`` can be freed."""
    if not 0 <= first <= last < volume.shape[axis]:
        raise InputError(f"Slices {first}-{last} are outside the volume (0..{volume.shape[axis] - 1} along the "
                         "slicing axis).")
    part = volume[slab_index(axis, first, last)]
    return VolumeSlab(np.array(part) if copy else part, int(axis), int(first), int(last),
                      tuple(int(n) for n in volume.shape), rule, intensity_stats(volume, rule), why)
