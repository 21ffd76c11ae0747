"""Intensity presets: map raw scanner values to the uint8 range MedSAM / LiteMedSAM were trained on.

Rules follow MedSAM's ``pre_CT_MR.py`` (see ``MODEL_FACTS.md``), applied over the whole volume:

* CT window (level L, width W): clip to ``[L - W/2, L + W/2]``, then min-max of the *clipped* volume to
  0..255 and truncate to uint8.
* MR: clip to the 0.5 / 99.5 percentiles of voxels > 0, min-max to 0..255, voxels that were 0 stay 0,
  truncate to uint8.
* raw: 8-bit data as is.

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
    return lo >= 0 and hi <= 255 and bool(np.all(np.mod(array, 1) == 0))


def apply_intensity(array: np.ndarray, rule: IntensityRule) -> np.ndarray:
    """Map ``array`` (any shape, whole volume at once) to uint8 with ``rule``. Float64 arithmetic as MedSAM."""
    if rule.kind == "raw":
        if array.dtype == np.uint8:
            return array
        if not _fits_uint8(array):
            raise InputError("Intensity preset 'raw' needs 8-bit data (values 0..255): use --intensity auto, mr, "
                             "a CT preset or window:L,W.")
        return array.astype(np.uint8)
    data = np.asarray(array, dtype=np.float64)
    if rule.kind == "window":
        lower = rule.level - rule.width / 2.0
        upper = rule.level + rule.width / 2.0
        clipped = np.clip(data, lower, upper)
        return _minmax_u8(clipped)
    if rule.kind == "mr":
        positive = data[data > 0]
        if positive.size == 0:
            raise InputError("Intensity preset 'mr' found no voxel > 0 in the image: use a CT preset, "
                             "window:L,W or raw.")
        lo, hi = np.percentile(positive, 0.5), np.percentile(positive, 99.5)
        clipped = np.clip(data, lo, hi)
        out = _minmax_float(clipped)
        out[data == 0] = 0
        return out.astype(np.uint8)
    raise InputError(f"Unknown intensity rule kind '{rule.kind}'.")


def _minmax_float(clipped: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(clipped)), float(np.max(clipped))
    if hi <= lo:
        # Everything falls on one side of the window: the official code would divide by zero.
        return np.zeros(clipped.shape, dtype=np.float64)
    return (clipped - lo) / (hi - lo) * 255.0


def _minmax_u8(clipped: np.ndarray) -> np.ndarray:
    return _minmax_float(clipped).astype(np.uint8)
