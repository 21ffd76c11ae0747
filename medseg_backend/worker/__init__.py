"""The model worker: a separate Python process that owns the models for the Slicer module.

Inside Slicer the main thread keeps Python's GIL while Qt's event loop runs, so model work in a thread of Slicer's
Python would crawl. The Slicer layer therefore starts ``python -m medseg_backend.worker`` (Slicer's own Python),
talks to it with the messages of :mod:`.protocol` (read that docstring for the protocol) and keeps it alive so that
the loaded models and the embedding cache stay warm between runs.

* :mod:`.protocol` - message framing, array files in the private session folder, result objects, error encoding;
* :mod:`.handlers` - the request handlers (segment box, segment with examples, encode, diagnostics), shared by the
  worker and by in-process runs;
* :mod:`.server` - the worker's main loop (``python -m medseg_backend.worker``);
* :mod:`.client` - the client half: starts the worker and talks to it without blocking (the Slicer layer and the
  benchmarks use it).

Nothing here imports Qt, VTK or Slicer; torch is imported only when a model is needed.
"""
from .protocol import PROTOCOL_VERSION, Request, RunResult

__all__ = ["PROTOCOL_VERSION", "Request", "RunResult"]
