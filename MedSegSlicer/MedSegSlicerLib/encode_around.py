"""Encoding before the box, seen from Slicer: the handle of a background ``encode`` request around the slice in view
(:meth:`.segmenter.Segmenter.start_encode_around`), read from the worker's events without blocking."""
from __future__ import annotations

from typing import Any, Dict


class EncodeAround:
    """Encoding before the box, running in the worker (:meth:`Segmenter.start_encode_around`). :meth:`update`
    reads its events (call it from the poll loop); ``state``: ``running``, ``done`` (``result``: encoded, cached,
    order), ``preempted`` (a run came first: it stops between two slices), ``stopped`` or ``failed``
    (``message``)."""

    def __init__(self, segmenter, client, jid: int, axis: str, centre: int) -> None:
        self._segmenter, self._client, self.id = segmenter, client, int(jid)
        self.axis, self.centre = axis, centre
        self.state, self.fraction, self.message = "running", 0.0, ""
        self.result: Dict[str, Any] = {}

    @property
    def running(self) -> bool:
        return self.state == "running"

    def update(self) -> str:
        if not self.running:
            return self.state
        if not self._segmenter.runner.running:   # a run in flight reads the worker's messages itself
            for msg in self._client.poll():
                if msg.get("event") == "died":
                    self.state, self.message = "failed", str(msg.get("message") or "")
        for msg in self._client.watched(self.id):
            event = msg.get("event")
            if event == "progress":
                self.fraction, self.message = float(msg.get("fraction", 0.0)), str(msg.get("message", ""))
            elif event == "done":
                self.state, self.result, self.fraction = "done", dict(msg.get("result") or {}), 1.0
            elif event == "cancelled":
                self.state = "preempted" if msg.get("preempted") else "stopped"
            elif event == "error":
                self.state, self.message = "failed", str(msg.get("message") or "")
        if not self.running:
            self._client.unwatch(self.id)
        return self.state

    def stop(self) -> None:
        if self.update() == "running":
            self._client.cancel(self.id)
            self._client.unwatch(self.id)     # its late 'cancelled' event is nobody's
            self.state = "stopped"
