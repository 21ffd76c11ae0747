"""Progress reporting and cancellation shared by all long-running backend calls.

A *progress callback* is any callable ``progress(fraction: float, message: str)``; ``fraction`` goes from 0 to
1. A :class:`CancelToken` is checked between batches; once cancelled, the run raises
:class:`~medseg_backend.errors.CancelledError` and returns nothing, so callers never see a partial result.
"""
from __future__ import annotations

import threading
from typing import Callable, Optional

from .errors import CancelledError

ProgressCallback = Callable[[float, str], None]


class CancelToken:
    """Thread-safe cancel flag: the GUI thread calls :meth:`cancel`, the worker calls :meth:`check`."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise CancelledError("Run cancelled by the user: nothing was written.")


def report(progress: Optional[ProgressCallback], fraction: float, message: str) -> None:
    if progress is not None:
        progress(float(min(max(fraction, 0.0), 1.0)), message)


def check(cancel: Optional[CancelToken]) -> None:
    if cancel is not None:
        cancel.check()
