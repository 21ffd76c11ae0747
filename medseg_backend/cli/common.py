"""What the command modules share: the one progress printer, box parsing and the quiet validation helper.

The sub-command modules (:mod:`.medsam`, :mod:`.universeg`, :mod:`.models`) import only from here and the
backend; :mod:`medseg_backend.cli` (the ``medseg`` entry point) imports them, never the other way round.
"""
from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

from ..errors import InputError, MedSegWarning
from ..textforms import parse_box, quiet_check  # noqa: F401  (shared with batch manifests)


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


def choices_metavar(values) -> str:
    """``{a,b,c}``: how argparse shows a choice list, for options whose value the run spec checks."""
    return "{" + ",".join(values) + "}"


#: At most this many distinct warnings are printed after a command step (a hostile file may raise many).
MAX_WARNINGS_SHOWN = 20


@contextmanager
def relayed_warnings() -> Iterator[None]:
    """Collect the warnings of a step (MedSegWarnings always, each one) and print them once the step ends - also
    when it fails - as ``warning: ...`` lines; other warnings keep Python's usual route.

    They are shown after the recording ends: inside ``catch_warnings(record=True)`` Python's ``showwarning``
    appends to the very list being shown, so showing them there never ends. Identical warnings are shown once,
    and at most :data:`MAX_WARNINGS_SHOWN` of them (bounded whatever the input file raises)."""
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MedSegWarning)
            yield
    finally:
        show_warnings(list(caught))


def show_warnings(caught) -> None:
    """Print recorded warnings (``warnings.WarningMessage``), duplicates once, at most MAX_WARNINGS_SHOWN."""
    seen = set()
    left = 0
    for w in caught:
        key = (w.category, str(w.message))
        if key in seen:
            continue
        if len(seen) >= MAX_WARNINGS_SHOWN:
            left += 1
            continue
        seen.add(key)
        if issubclass(w.category, MedSegWarning):
            sys.stderr.write(f"warning: {w.message}\n")
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if left:
        sys.stderr.write(f"warning: {left} more warning(s) not shown\n")


