"""The segmenter's blocking and panel API besides the effects' runs: weights checks and imports in the worker, and
whole runs written into segments all or nothing (MedSAM with one segment per ROI, UniverSeg). A mixin of
:class:`.segmenter.Segmenter` (which gives ``prepare_medsam``, ``prepare_universeg``, ``start``, ``run``, ``ctx``)."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

from medseg_backend.worker.protocol import Request

from . import labelmaps, segments, terminology
from .errors import InputError
from .jobs import JobOutcome, raise_unless_ok
from .prepared import Pending, PreparedRun


class BatchRuns:
    """Weights jobs and batch runs of :class:`.segmenter.Segmenter`."""

    # ------------------------------------------------------------------------------------------------------
    # Weights (checked where torch lives: the worker)
    # ------------------------------------------------------------------------------------------------------
    def start_pending(self, prepared: PreparedRun, finish: Callable[[JobOutcome], Any]) -> Pending:
        """Non-blocking: start ``prepared`` and return the :class:`Pending` whose ``finish(outcome)`` gives its
        value; poll :attr:`runner` until the outcome comes (the module panel's QTimer), then call ``finish``."""
        self.start(prepared)
        return Pending(prepared.label, finish)

    @staticmethod
    def _weights_job(op: str, label: str, value: Callable[[Any], Any], **params):
        prepared = PreparedRun(label=label, request=Request(op, params), guard=None)

        def finish(outcome: JobOutcome):
            raise_unless_ok(outcome)
            return value(outcome.result)

        return prepared, finish

    def _verify_job(self, name: Optional[str]):
        return self._weights_job("weights_verify", "Verify weights", lambda r: list(r.results or []), name=name)

    def _import_job(self, name: str, path: str, accept_licence: bool):
        return self._weights_job("weights_import", f"Import {name} weights", lambda r: str(r.path), name=name,
                                 path=str(path), accept_licence=bool(accept_licence))

    def verify_weights(self, name: Optional[str] = None) -> List[Dict[str, Any]]:
        """Hash and layout check of installed weights, in the worker (torch never loads in Slicer's process).
        Blocking (batch use); :meth:`start_verify_weights` for the panel."""
        prepared, finish = self._verify_job(name)
        return finish(self.run(prepared))

    def start_verify_weights(self, name: Optional[str] = None) -> Pending:
        """:meth:`verify_weights` without waiting: its :class:`Pending` gives the list of results."""
        return self.start_pending(*self._verify_job(name))

    def import_weights(self, name: str, path: str, accept_licence: bool = False) -> str:
        """Check a local weights file and install it into the cache, in the worker. Blocking (batch use);
        :meth:`start_import_weights` for the panel."""
        prepared, finish = self._import_job(name, path, accept_licence)
        return finish(self.run(prepared))

    def start_import_weights(self, name: str, path: str, accept_licence: bool = False) -> Pending:
        """:meth:`import_weights` without waiting: its :class:`Pending` gives the installed path."""
        return self.start_pending(*self._import_job(name, path, accept_licence))

    # ------------------------------------------------------------------------------------------------------
    # Batch helpers: run + write segments
    # ------------------------------------------------------------------------------------------------------
    def _write_results(self, segmentation_node, volume_node, default_name: str, items, mode: str, slab=None):
        """Write all result masks into ``segmentation_node`` (created here if None) - all or none: a failed write
        leaves no new node and no segment changed; existing segments change inside the run's ``slab`` only."""
        created = segmentation_node is None
        if created:
            segmentation_node = self.ctx.add_segmentation(default_name, volume_node)
        try:
            ids = labelmaps.write_masks(segmentation_node, volume_node, items, mode=mode, slab=slab)
        except Exception:
            if created:
                self.ctx.remove_node(segmentation_node)
            raise
        return segmentation_node, ids

    def segment_with_medsam(self, volume_node, rois, segmentation_node=None, *, names: Optional[Sequence[str]] = None,
                            segment_ids: Optional[Sequence[Optional[str]]] = None, mode: str = "replace",
                            structures: Optional[Sequence[str]] = None, progress=None, cancel=None, **options):
        """Run MedSAM and write one segment per ROI. Returns ``(segmentation_node, segment_ids, outcome)``.

        ``structures``: one standard structure per ROI (names of :mod:`.terminology`, e.g. ``"left kidney"``):
        new segments get its name, colour and terminology codes. All-or-nothing: names / structures / segment IDs /
        targets are checked before the run, and the scene changes only when the run succeeded and every segment
        could be written (else the error is raised, nothing changed)."""
        prepared, finish = self._medsam_job(volume_node, rois, segmentation_node, names=names,
                                            segment_ids=segment_ids, mode=mode, structures=structures, **options)
        return finish(self.run(prepared, progress=progress, cancel=cancel))

    def start_segment_with_medsam(self, volume_node, rois, segmentation_node=None, **options) -> Pending:
        """:meth:`segment_with_medsam` without waiting (the panel's "Segment them"): the same checks before the
        run; its :class:`Pending` writes the segments and gives ``(segmentation_node, segment_ids, outcome)``."""
        return self.start_pending(*self._medsam_job(volume_node, rois, segmentation_node, **options))

    def _medsam_job(self, volume_node, rois, segmentation_node=None, *, names=None, segment_ids=None,
                    mode: str = "replace", structures=None, **options):
        """Checks and prepares a MedSAM batch run: ``(prepared, finish)``, ``finish(outcome)`` writes it."""
        if mode not in ("replace", "add"):
            raise InputError(f"Unknown write mode '{mode}': use replace or add.")
        if structures is not None:
            names = [self.structure(n) for n in structures]
        if segmentation_node is not None:
            segments.check_write_targets(segmentation_node, list(segment_ids or []))
        prepared = self.prepare_medsam(volume_node, rois, segmentation_node=segmentation_node, **options)
        n = len(prepared.info["boxes"])
        names = list(names) if names else list(prepared.info["names"])
        targets = list(segment_ids) if segment_ids else [None] * n
        if len(names) != n or len(targets) != n:
            raise InputError(f"{n} boxes but {len(names)} names / {len(targets)} segment IDs: give one per ROI.")
        if any(t is not None for t in targets) and segmentation_node is None:
            raise InputError("Segment IDs were given without their segmentation: pass segmentation_node too.")

        def finish(outcome: JobOutcome):
            raise_unless_ok(outcome)
            labels = outcome.result.labels
            items = [(labels == obj, targets[obj - 1], names[obj - 1]) for obj in range(1, n + 1)]
            seg, written = self._write_results(segmentation_node, volume_node, f"{volume_node.GetName()} MedSAM",
                                               items, mode, slab=prepared.info["slabs"])
            outcome.result.messages = prepared.messages + list(outcome.result.messages)
            return seg, written, outcome

        return prepared, finish

    @staticmethod
    def structure(name):
        """The standard structure (:mod:`.terminology`) of ``name``; InputError naming the list otherwise."""
        if isinstance(name, terminology.Structure):
            return name
        found = terminology.lookup(name)
        if found is None:
            raise InputError(f"'{name}' is not in the list of standard structures: use one of "
                             f"{', '.join(terminology.names())}, or give segment names instead.")
        return found

    def segment_with_universeg(self, volume_node, examples, segmentation_node=None, *, name: str = "UniverSeg",
                               segment_id: Optional[str] = None, mode: str = "replace", progress=None,
                               cancel=None, **options):
        """Run UniverSeg and write the mask into a new (or the given) segment - all or nothing, as
        :meth:`segment_with_medsam`. Returns ``(segmentation_node, segment_id, outcome)``."""
        if mode not in ("replace", "add"):
            raise InputError(f"Unknown write mode '{mode}': use replace or add.")
        if segment_id is not None and segmentation_node is None:
            raise InputError("A segment ID was given without its segmentation: pass segmentation_node too.")
        if segmentation_node is not None:
            segments.check_write_targets(segmentation_node, [segment_id])
        prepared = self.prepare_universeg(volume_node, examples, segmentation_node=segmentation_node, **options)
        outcome = self.run(prepared, progress=progress, cancel=cancel)
        raise_unless_ok(outcome)
        items = [(outcome.result.mask, segment_id, None if segment_id else name)]
        segmentation_node, (sid,) = self._write_results(segmentation_node, volume_node,
                                                        f"{volume_node.GetName()} UniverSeg", items, mode,
                                                        slab=prepared.info.get("slab"))
        outcome.result.messages = prepared.messages + list(outcome.result.messages)
        return segmentation_node, sid, outcome
