"""A run ready to start (:class:`PreparedRun`: its spec, request, input guard, messages and what the effects need)
and a run started without waiting whose outcome becomes its value on the GUI thread (:class:`Pending`). Made by
:mod:`.segmenter`, started by :mod:`.jobs`' runner."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List

from medseg_backend.worker.protocol import Request

from .jobs import JobOutcome, NodeGuard


@dataclass
class PreparedRun:
    """A run ready to start: its checked spec (:mod:`medseg_backend.runspec`; None for weights jobs), the request
    made from it (``spec.to_message()`` plus the arrays), the guard of its input nodes, messages and what the
    effects need to show and apply it (``info``)."""
    label: str
    request: Request
    guard: NodeGuard
    spec: Any = None
    messages: List[str] = field(default_factory=list)
    info: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Pending:
    """A run started without waiting (the module panel's buttons): :meth:`Segmenter.finish` turns its outcome into
    the run's value on the GUI thread (e.g. writes the segments) once the poll loop has it."""
    label: str
    finish: Callable[[JobOutcome], Any]
