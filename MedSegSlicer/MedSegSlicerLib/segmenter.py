"""The segmenter: prepares and runs the models for the Segment Editor effects (non-blocking) and the Logic (batch).

A run is prepared on the GUI thread (:meth:`Segmenter.prepare_medsam` / :meth:`Segmenter.prepare_universeg`):
node -> numpy array + voxel boxes, plus a :class:`~.jobs.NodeGuard`. The returned :class:`PreparedRun` holds a
:class:`~medseg_backend.worker.protocol.Request` (operation + parameters + arrays) that the model worker process
executes (:meth:`Segmenter.start` non-blocking, :meth:`Segmenter.run` blocking); a request with a stand-in
network (tests) runs in-process through the same handler code. Writing the result into the scene is the caller's
job, on the GUI thread, after success. torch is never imported into this process.

The worker keeps engines per (model, weights, device, precision) and the volume per content key: running again
with a moved box sends only the boxes and re-encodes nothing.
"""
from __future__ import annotations

import hashlib
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from medseg_backend import slicing
from medseg_backend.choices import AXES, DEFAULT_PROPAGATION, DEVICES, DIRECTIONS, MEDSAM_MODELS, PROPAGATIONS
from medseg_backend.worker.handlers import EngineCache, Handlers
from medseg_backend.worker import protocol as proto
from medseg_backend.worker.protocol import Request

from . import examples as ex
from . import editing, geometry, labelmaps, segments, terminology
from .errors import InputError, MedSegWarning

from . import model_server
from .jobs import JobOutcome, JobRunner, NodeGuard, execute_local, poll_step, run_blocking

__all__ = ["Segmenter", "PreparedRun", "Pending", "EngineCache", "volume_key", "raise_unless_ok"]

DEFAULT_MODEL = MEDSAM_MODELS[0]
#: Seconds per slice on a 2-core CPU, fp32 (benchmarks/bench_medsam3d.py, bench_universeg.py; BENCHMARKS.md "Speed"),
#: rounded up: what the time estimate before a long CPU run uses.
CPU_SECONDS_PER_SLICE = {"lite-medsam": 1.0, "medsam-vit-b": 10.0, "universeg": 1.0}
UNIVERSEG_SUPPORT_SECONDS = 0.6   # once per support set (pass)


@contextmanager
def collect_warnings(messages: List[str]):
    """Record MedSegWarnings raised on this (GUI) thread into ``messages`` instead of printing them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MedSegWarning)
        yield
    for w in caught:
        if issubclass(w.category, MedSegWarning):
            messages.append(str(w.message))
        else:  # pragma: no cover - other warnings keep their normal route
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def display_window_preset(volume_node) -> Optional[str]:
    """The volume's current window/level as a backend preset ``window:L,W`` (None without a display node)."""
    display = volume_node.GetDisplayNode() if volume_node is not None else None
    if display is None or not display.IsA("vtkMRMLScalarVolumeDisplayNode"):
        return None
    width, level = float(display.GetWindow()), float(display.GetLevel())
    if not np.isfinite(width) or not np.isfinite(level) or width <= 0:
        return None
    return f"window:{level:g},{width:g}"


def resolve_intensity(volume_node, intensity: Optional[str]) -> str:
    """``None`` / ``"display"`` -> the volume's window/level (else ``auto``); any other preset unchanged."""
    if intensity in (None, "", "display"):
        return display_window_preset(volume_node) or "auto"
    return intensity


@dataclass
class PreparedRun:
    label: str
    request: Request
    guard: NodeGuard
    messages: List[str] = field(default_factory=list)
    info: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Pending:
    """A run started without waiting (the module panel's buttons): :meth:`Segmenter.finish` turns its outcome into
    the run's value on the GUI thread (e.g. writes the segments) once the poll loop has it."""
    label: str
    finish: Callable[[JobOutcome], Any]


def volume_key(volume_node, array: np.ndarray) -> str:
    """Content key of a volume for the worker's volume cache, cheap enough for every run: the node's content stamp
    (image and scalar objects, their modified time, grid, geometry), the array's shape and type, and a sparse sample
    of its voxels (a second guard against in-place edits that did not mark the node modified)."""
    h = hashlib.sha1()
    stamp = NodeGuard._volume_stamp(volume_node) if volume_node is not None else None
    h.update(repr((volume_node.GetID() if volume_node is not None else None, stamp, array.shape,
                   array.dtype.str)).encode())
    flat = np.asarray(array).reshape(-1)
    h.update(np.ascontiguousarray(flat[:: max(1, flat.size // 65536)]).tobytes())
    return h.hexdigest()


class Segmenter:
    """Prepares, starts, polls and cancels model runs, and writes batch results: one per scene (the Logic and
    the effects share it). The effects use :attr:`busy`, :attr:`running_label`, :meth:`start`, :meth:`poll` and
    :meth:`cancel`; the job runner behind them stays an implementation detail."""

    def __init__(self, ctx, device: str = "auto", precision: str = "auto", worker=True) -> None:
        """``worker``: True - where the MedSeg panel says models run (:func:`.model_server.active_client`: the shared
        model worker or a model server); a
        :class:`~.worker_client.WorkerClient`; or False - run every request in-process (no worker)."""
        self.ctx = ctx
        self.device = device
        self.precision = precision
        self.local = Handlers()          # in-process runs: stand-in networks, or worker=False
        if worker is True:
            provider = model_server.active_client      # the local worker, or the model server chosen in the panel
        elif worker:
            provider = (lambda w=worker: w)
        else:
            provider = None
        self.runner = JobRunner(client=provider, local=self.local)

    @property
    def engines(self) -> EngineCache:
        """Engines of in-process runs (the worker keeps its own)."""
        return self.local.engines

    @engines.setter
    def engines(self, cache: EngineCache) -> None:
        self.local.engines = cache

    @property
    def worker(self):
        """The worker client (None when this core runs everything in-process)."""
        return self.runner.client

    def clear_models(self) -> None:
        """Drop loaded models and caches, in-process and in the worker (e.g. after deleting weights)."""
        self.local.engines.clear()
        client = self.worker
        if client is not None and not self.runner.running:
            client.reset()

    @property
    def scene(self):
        return self.ctx.scene

    # ---- the run in flight (one at a time) ---------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while a run (or an encoding ahead) is in flight."""
        return self.runner.running

    @property
    def running_label(self) -> str:
        """What is running (e.g. ``MedSAM (lite-medsam)``)."""
        return self.runner.label

    def poll(self):
        """Non-blocking: ``(fraction, message, outcome or None)`` of the run in flight (:func:`.jobs.poll_step`)."""
        return poll_step(self.runner)

    def cancel(self) -> None:
        """Ask the run in flight to stop (nothing is written; what the worker encoded stays cached)."""
        self.runner.cancel()

    def partial_slices(self):
        """Slices a MedSAM run has finished since the last call, as ``(object, axis, k, 2-D mask)`` - what a
        progressive preview shows before the run completes (never blocks)."""
        return [(int(p["object"]), str(p["axis"]), int(p["slice"]), proto.unpack_mask(p["mask"]))
                for p in self.runner.partials()]

    def set_device(self, device: str) -> None:
        if device not in DEVICES:
            raise InputError(f"Unknown device '{device}': use {', '.join(DEVICES)}.")
        if device != self.device:
            self.device = device
            self.clear_models()

    # ------------------------------------------------------------------------------------------------------
    # MedSAM
    # ------------------------------------------------------------------------------------------------------
    def boxes_from(self, volume_node, rois: Sequence, messages: List[str]) -> List[Tuple[int, ...]]:
        boxes = []
        with collect_warnings(messages):
            for roi in rois:
                if isinstance(roi, (tuple, list, np.ndarray)):
                    boxes.append(geometry.clip_box([int(v) for v in roi], geometry.volume_shape(volume_node)))
                else:
                    boxes.append(geometry.roi_to_voxel_box(roi, volume_node))
        return boxes

    def prepare_medsam(self, volume_node, rois, *, model: str = DEFAULT_MODEL, weights: Optional[str] = None,
                       intensity: Optional[str] = None, propagation: str = DEFAULT_PROPAGATION, axis: str = "axial",
                       slice_range: Optional[Tuple[Optional[int], Optional[int]]] = None,
                       segmentation_node=None, seed_slice: Optional[int] = None, direction: str = "both",
                       segment_id: Optional[str] = None) -> PreparedRun:
        """Inputs for MedSAM from a volume and ROI node(s) (or voxel boxes). Raises InputError on bad input.

        Correct and re-propagate: with ``seed_slice`` (a slice index along ``axis``), the slice of segment
        ``segment_id`` of ``segmentation_node`` there - as the user corrected it - seeds the propagation, which
        runs ``direction`` (``up`` = towards higher slice indices, ``down``, ``both``) to the ROI's end; the run's
        slab (``info["slab"]``, what Apply may change) is just that walk, so the rest of the segment is kept."""
        geometry.check_scalar_volume(volume_node)
        if model not in MEDSAM_MODELS:
            raise InputError(f"Unknown MedSAM model '{model}': use {' or '.join(MEDSAM_MODELS)}.")
        if propagation not in PROPAGATIONS:
            raise InputError(f"Unknown propagation '{propagation}': use {', '.join(PROPAGATIONS)}.")
        if axis not in AXES:
            raise InputError(f"Unknown axis '{axis}': use {', '.join(AXES)}.")
        if rois is None or (not isinstance(rois, (list, tuple)) and not hasattr(rois, "__len__")):
            rois = [rois]
        if isinstance(rois, tuple) and len(rois) == 6 and all(isinstance(v, (int, np.integer)) for v in rois):
            rois = [rois]
        if len(rois) == 0 or any(r is None for r in rois):
            raise InputError("No ROI selected: create or pick an ROI (box) around the structure and run again.")
        messages: List[str] = []
        boxes = self.boxes_from(volume_node, list(rois), messages)
        if slice_range is not None:
            boxes = [slicing.restrict_box(b, axis, slice_range[0], slice_range[1]) for b in boxes]
        shape = geometry.volume_shape(volume_node)
        for box, roi in zip(boxes, rois):
            slicing.check_box(box, shape, what=f"ROI '{roi.GetName()}'" if hasattr(roi, "GetName") else "Box",
                              axis=axis, each_side=True)
        data = geometry.volume_to_array(volume_node)
        preset = resolve_intensity(volume_node, intensity)
        params = dict(boxes=[list(b) for b in boxes], model=model, weights=weights, device=self.device,
                      precision=self.precision, intensity=preset, propagation=propagation, axis=axis,
                      outputs=["labels"], partial=True)
        arrays = {"volume": data.array}
        walk = boxes
        if seed_slice is not None:
            seed = self._seed(volume_node, boxes, axis, seed_slice, direction, segmentation_node, segment_id)
            arrays["seed"] = seed
            params.update(seeds=[{"slice": int(seed_slice), "mask": "seed"}], direction=direction)
            first, last = (seed_slice, None) if direction == "up" else (None, seed_slice) if direction == "down" \
                else (None, None)
            walk = [slicing.restrict_box(boxes[0], axis, first, last)]
        request = Request("segment_box", params, arrays=arrays, keys={"volume": volume_key(volume_node, data.array)})
        guard = NodeGuard(self.scene, volume_node, [segmentation_node] if segmentation_node is not None else [])
        names = [r.GetName() if hasattr(r, "GetName") else f"box {i + 1}" for i, r in enumerate(rois)]
        return PreparedRun(label=f"MedSAM ({model})", request=request, guard=guard, messages=messages,
                           info=dict(boxes=boxes, intensity=preset, names=names, volume=volume_node.GetName(),
                                     axis=axis, model=model, seed_slice=seed_slice,
                                     slab=editing.run_slab(walk, axis, data.array.shape),
                                     slabs=[editing.run_slab([b], axis, data.array.shape) for b in walk]))

    @staticmethod
    def _seed(volume_node, boxes, axis: str, k: int, direction: str, segmentation_node, segment_id) -> np.ndarray:
        """The corrected slice ``k`` of the segment, checked: one ROI, the slice inside it, voxels on it."""
        if direction not in DIRECTIONS:
            raise InputError(f"Unknown direction '{direction}': use {', '.join(DIRECTIONS)}.")
        if len(boxes) != 1:
            raise InputError(f"Propagate from a slice works on one ROI at a time ({len(boxes)} given): pick the ROI "
                             "of the structure you corrected.")
        if segmentation_node is None or segment_id is None:
            raise InputError("Propagate from a slice needs the corrected segment: select it in the Segment Editor.")
        s0, s1, _ = slicing.project_box(boxes[0], axis)
        if not s0 <= int(k) <= s1:
            raise InputError(f"The current slice {int(k)} is outside the ROI (slices {s0}-{s1} along {axis}): go to the "
                             "slice you corrected, inside the box, or widen the ROI.")
        name = segments.get_segment(segmentation_node, segment_id).GetName()
        mask = slicing.take_slice(labelmaps.segment_to_array(segmentation_node, segment_id, volume_node), axis, k)
        if not mask.any():
            raise InputError(f"Slice {int(k)} of segment '{name}' is empty: paint (or correct) the structure on this "
                             "slice first, then propagate from it.")
        return np.ascontiguousarray(mask, dtype=np.uint8)

    def prepare_encode(self, prepared: PreparedRun) -> PreparedRun:
        """Encode ahead of the click: the slices a prepared MedSAM run will need, centre slice first, so that
        the Preview that follows only decodes (cancel it to preview at once; slices already encoded stay cached)."""
        run = prepared.request
        axis = prepared.info["axis"]
        a = slicing.BOX_INDEX[slicing.axis_index(axis)]
        slab = prepared.info["slab"]
        params = {k: run.params[k] for k in ("model", "weights", "device", "precision", "intensity")}
        request = Request("encode", dict(params, axis=axis, slices=[int(slab[a]), int(slab[a + 3])]),
                          arrays=run.arrays, keys=run.keys)
        return PreparedRun(label="Encoding ahead", request=request, guard=prepared.guard,
                           info=dict(prepared.info, prefetch=True))

    # ------------------------------------------------------------------------------------------------------
    # UniverSeg
    # ------------------------------------------------------------------------------------------------------
    def prepare_universeg(self, volume_node, examples: Sequence, *, roi=None, support_size: int = 64,
                          ensemble: int = 1, seed: int = 0, tta: bool = False, intensity: Optional[str] = "auto",
                          axis: str = "axial", weights: Optional[str] = None, module=None,
                          keep_labelled: Optional[ex.Example] = None, segmentation_node=None,
                          max_slices_per_volume: Optional[int] = None) -> PreparedRun:
        """Inputs for UniverSeg. ``examples``: ``medseg_backend.universeg.Example`` objects (from the collectors in
        :mod:`.examples` or a library);
        ``roi``: ROI node, voxel box or None; ``module``: a stand-in network (tests); ``keep_labelled``: the
        target segment's own labelled slices, kept exactly in the result (few-shot completion)."""
        geometry.check_scalar_volume(volume_node)
        if axis not in AXES:
            raise InputError(f"Unknown axis '{axis}': use {', '.join(AXES)}.")
        if int(support_size) < 1 or int(ensemble) < 1:
            raise InputError(f"Support size {support_size} / ensemble {ensemble}: both must be at least 1.")
        ex.require_examples(examples)
        messages: List[str] = []
        box = None
        if roi is not None:
            box = self.boxes_from(volume_node, [roi], messages)[0]
        data = geometry.volume_to_array(volume_node)
        preset = resolve_intensity(volume_node, intensity)
        arrays: Dict[str, np.ndarray] = {"volume": data.array}
        names_of: Dict[int, str] = {id(data.array): "volume"}

        def add(array, stem: str) -> str:
            """Each distinct array once; an example image equal to the target volume reuses the sent volume."""
            array = np.asarray(array)
            name = names_of.get(id(array))
            if name is None:
                target = data.array
                if array.shape == target.shape and array.dtype == target.dtype and np.array_equal(array, target):
                    name = "volume"
                else:
                    name = f"{stem}{len(arrays)}"
                    arrays[name] = array
                names_of[id(array)] = name
            return name

        specs = []
        for e in examples:    # backend Examples: 3-D ones are cut into slices by the worker, by their source
            specs.append(dict(kind=e.source or "example", image=add(e.image, "image"), label=add(e.label, "label"),
                              name=e.name, max_slices=max_slices_per_volume if e.source == "volume" else None))
        keep = keep_labelled.label.copy() if keep_labelled is not None else None

        def finish(result):
            if keep is not None:
                result.mask = slicing.keep_slices(result.mask, keep, axis)
            return result

        request = Request("segment_examples",
                          dict(examples=specs, roi=list(box) if box is not None else None, axis=axis,
                               intensity=preset, support_size=int(support_size), ensemble=int(ensemble),
                               seed=int(seed), tta=bool(tta), weights=weights, device=self.device,
                               precision=self.precision, outputs=["mask"]),
                          arrays=arrays, keys={"volume": volume_key(volume_node, data.array)},
                          local={"module": module} if module is not None else {}, finish=finish)
        n_examples = len(examples)
        guard = NodeGuard(self.scene, volume_node, [segmentation_node] if segmentation_node is not None else [])
        return PreparedRun(label="UniverSeg", request=request, guard=guard, messages=messages,
                           info=dict(box=box, intensity=preset, n_examples=n_examples, axis=axis,
                                     n_slices=int(data.array.shape[slicing.axis_index(axis)]),
                                     volume=volume_node.GetName(),
                                     slab=editing.run_slab([box], axis, data.array.shape) if box else None))

    # ------------------------------------------------------------------------------------------------------
    # Time estimate (before a long CPU run)
    # ------------------------------------------------------------------------------------------------------
    @staticmethod
    def estimate_seconds(prepared: PreparedRun, on_cpu: Optional[bool]) -> Optional[float]:
        """About how long a prepared run takes on the CPU (None on a GPU or when unknown): slices x the per-slice
        time measured on a 2-core CPU (:data:`CPU_SECONDS_PER_SLICE`, BENCHMARKS.md "Speed"); a workstation with more
        cores is faster, slices already encoded ahead are not counted off."""
        if not on_cpu or prepared.info.get("prefetch"):
            return None
        info, params = prepared.info, prepared.request.params
        axis = info.get("axis", "axial")
        a = slicing.BOX_INDEX[slicing.axis_index(axis)]
        if prepared.request.op == "segment_box":
            walk = info.get("slabs") or [info["slab"]]
            slices = sum(int(b[a + 3]) - int(b[a]) + 1 for b in walk)
            return slices * CPU_SECONDS_PER_SLICE[params.get("model", DEFAULT_MODEL)]
        if prepared.request.op == "segment_examples":
            slab = info.get("slab")
            n = int(slab[a + 3]) - int(slab[a]) + 1 if slab else int(info.get("n_slices") or 0)
            passes = int(params.get("ensemble", 1)) * (2 if params.get("tta") else 1)
            return n * passes * CPU_SECONDS_PER_SLICE["universeg"] + passes * UNIVERSEG_SUPPORT_SECONDS
        return None

    # ------------------------------------------------------------------------------------------------------
    # Running
    # ------------------------------------------------------------------------------------------------------
    def start(self, prepared: PreparedRun):
        """Non-blocking: hand the request to the worker (in-process thread for stand-in networks); :meth:`poll`
        for the outcome."""
        return self.runner.start(prepared.request, label=prepared.label, guard=prepared.guard)

    def run(self, prepared: PreparedRun, progress=None, cancel=None) -> JobOutcome:
        """Blocking run (scripted Logic, self-test): through the worker, or in-process on the calling thread for
        requests with stand-in networks / a core without a worker."""
        if self.runner.running:
            from .errors import JobBusyError

            raise JobBusyError(f"'{self.runner.label}' is still running: wait for it to finish or cancel it first.")
        request = prepared.request
        if request.in_process_only or self.worker is None:
            return run_blocking(lambda p, c: execute_local(self.local, request, p, c), label=prepared.label,
                                guard=prepared.guard, progress=progress, cancel=cancel)
        self.runner.start(request, label=prepared.label, guard=prepared.guard)
        return self.runner.wait(progress=progress, cancel=cancel)

    # ------------------------------------------------------------------------------------------------------
    # Weights (checked where torch lives: the worker)
    # ------------------------------------------------------------------------------------------------------
    def start_pending(self, prepared: PreparedRun, finish: Callable[[JobOutcome], Any]) -> Pending:
        """Non-blocking: start ``prepared`` and return the :class:`Pending` whose ``finish(outcome)`` gives its
        value; :meth:`poll` until the outcome comes (the module panel's QTimer), then call ``finish``."""
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


def raise_unless_ok(outcome: JobOutcome) -> None:
    """Re-raise the error of a failed/cancelled/discarded run (batch use)."""
    if outcome.ok:
        return
    if outcome.error is not None:
        raise outcome.error
    from .errors import CancelledError

    if outcome.status == "cancelled":
        raise CancelledError(outcome.message)
    raise InputError(outcome.message)
