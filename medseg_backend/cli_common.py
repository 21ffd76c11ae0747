"""What the command-line modules share: the progress printer and the quiet validation helper.

``cli.py`` (the ``medseg`` entry point and ``medseg medsam``), ``cli_universeg.py`` and ``cli_models.py`` import
from here, so the entry point depends on the sub-command modules and never the other way round.
"""
from __future__ import annotations

import sys
import warnings

from .errors import MedSegWarning


def progress_printer(stream=None):
    """A ``progress(fraction, message)`` callback printing one ``[ 40%] message`` line per 10 % step."""
    stream = stream or sys.stderr
    state = {"last": -1}

    def cb(fraction: float, message: str) -> None:
        pct = int(fraction * 100)
        if pct // 10 != state["last"] // 10 or fraction >= 1.0:
            state["last"] = pct
            stream.write(f"[{pct:3d}%] {message}\n")
            stream.flush()

    return cb


def quiet_check(fn, *a, **kw):
    """Run a validation whose warnings (box clipped, ...) the real run repeats: errors now, warnings once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedSegWarning)
        return fn(*a, **kw)


def parse_box(text: str, ndim: int):
    """'X0,Y0,X1,Y1' (2-D) or 'X0,Y0,Z0,X1,Y1,Z1' (3-D) -> ints."""
    from .errors import InputError

    parts = [p.strip() for p in str(text).split(",")]
    n = 4 if ndim == 2 else 6
    if len(parts) != n:
        form = "X0,Y0,X1,Y1" if n == 4 else "X0,Y0,Z0,X1,Y1,Z1"
        raise InputError(f"Box '{text}' has {len(parts)} numbers: give {form} (voxel indices, inclusive).")
    try:
        vals = tuple(int(round(float(p))) for p in parts)
    except ValueError:
        raise InputError(f"Box '{text}' is not a list of numbers: give integers like 10,20,80,90.") from None
    return vals
