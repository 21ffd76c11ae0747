"""What the command modules share: the one progress printer, box parsing and the quiet validation helper.

The sub-command modules (:mod:`.medsam`, :mod:`.universeg`, :mod:`.models`) import only from here and the
backend; :mod:`medseg_backend.cli` (the ``medseg`` entry point) imports them, never the other way round.
"""
from __future__ import annotations

import sys
import warnings
from typing import Tuple

from ..errors import InputError, MedSegWarning


class ProgressPrinter:
    """A ``progress(fraction, message)`` callback for every command, on stderr.

    On a terminal: one line, rewritten in place. Otherwise (logs, pipes, tests): a ``[ 40%] message`` line at
    each 10 % step, at the end, and whenever a different kind of step begins (the message's words change, not
    only its numbers), so "waiting for another process ..." is never hidden behind a download's deciles.
    """

    def __init__(self, stream=None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last_decile = -1
        self.last_kind = None
        self.last_line = ""

    @staticmethod
    def _kind(message: str) -> str:
        return "".join(c for c in message if not c.isdigit() and c not in ".,/%")

    def __call__(self, fraction: float, message: str) -> None:
        pct = int(max(0.0, min(1.0, float(fraction))) * 100)
        line = f"[{pct:3d}%] {message}"
        if self.tty:
            self.stream.write("\r" + line[:79].ljust(79) + ("\n" if pct >= 100 else ""))
            self.stream.flush()
            return
        decile, kind = pct // 10, self._kind(message)
        if line != self.last_line and (decile != self.last_decile or kind != self.last_kind or pct >= 100):
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_line = line
        self.last_decile, self.last_kind = decile, kind

    def close(self) -> None:
        """End a rewritten terminal line that stopped short of 100 % (a failed or cancelled step)."""
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def parse_box(text: str, ndim: int) -> Tuple[int, ...]:
    """'X0,Y0,X1,Y1' (2-D) or 'X0,Y0,Z0,X1,Y1,Z1' (3-D) -> ints (checked against the image by
    :func:`medseg_backend.slicing.check_box`)."""
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


def quiet_check(fn, *a, **kw):
    """Run a validation whose warnings (box clipped, ...) the real run repeats: errors now, warnings once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedSegWarning)
        return fn(*a, **kw)
