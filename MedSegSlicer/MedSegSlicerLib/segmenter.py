"""The segmenter: prepares and runs the models for the Segment Editor effects (non-blocking) and the Logic (batch).

A run is prepared on the GUI thread (:meth:`Segmenter.prepare_medsam` / :meth:`Segmenter.prepare_universeg`):
node -> numpy array + voxel boxes, the run's checked spec (:mod:`medseg_backend.runspec`: ``BoxRun`` /
``ExamplesRun`` / ``EncodeRun``), plus a :class:`~.jobs.NodeGuard`. The returned :class:`PreparedRun` holds the spec
and the :class:`~medseg_backend.worker.protocol.Request` made from it (``spec.to_message()`` + arrays) that the model
worker process executes (:meth:`Segmenter.start` non-blocking, :meth:`Segmenter.run` blocking); a request with a stand-in
network (tests) runs in-process through the same handler code. Writing the result into the scene is the caller's
job, on the GUI thread, after success. torch is never imported into this process.

The worker keeps engines per (model, weights, device, precision) and the volume per content key: running again
with a moved box sends only the boxes and re-encodes nothing.
"""
from __future__ import annotations

import hashlib
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from medseg_backend import slicing
from medseg_backend.choices import DEFAULT_AXIS, DEFAULT_DIRECTION, DEFAULT_MODEL, DEFAULT_PROPAGATION
from medseg_backend.runspec import BoxRun, EncodeRun, ExampleRef, ExamplesRun, Seed, check_device
from medseg_backend.worker.handlers import EngineCache, Handlers
from medseg_backend.worker.protocol import Request

from . import examples as ex
from . import editing, geometry, labelmaps, segments
from .errors import InputError, MedSegWarning

from . import model_server
from .jobs import JobOutcome, JobRunner, NodeGuard, execute_local, raise_unless_ok, run_blocking
from .encode_around import EncodeAround
from .prepared import Pending, PreparedRun
from .segmenter_batch import BatchRuns

__all__ = ["Segmenter", "RunSettings", "PreparedRun", "Pending", "EncodeAround", "EngineCache", "volume_key",
           "raise_unless_ok"]

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
class RunSettings:
    """Where runs go: the device and precision every prepared run asks for. The Logic and its segmenter share one
    (the one home of the device choice)."""
    device: str = "auto"
    precision: str = "auto"

    def set_device(self, device: str) -> bool:
        """Change the device (checked); True when it changed."""
        check_device(device)
        changed, self.device = device != self.device, device
        return changed


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


class Segmenter(BatchRuns):
    """Prepares and starts model runs, and writes batch results: one per scene (the Logic and the effects share
    it). The run in flight is its :attr:`runner` (a :class:`~.jobs.JobRunner`: ``running``, ``label``, ``poll``,
    ``partials``, ``cancel``), which the effects' editing sessions (:mod:`.session`) and the panel poll directly."""

    def __init__(self, ctx, device: str = "auto", precision: str = "auto", worker=True,
                 settings: Optional[RunSettings] = None) -> None:
        """``worker``: True - the shared model worker (:func:`medseg_backend.worker.client.shared_client`); a
        :class:`~medseg_backend.worker.client.WorkerClient`; or False - run every request in-process (no worker).
        ``settings``: a :class:`RunSettings` shared with the caller (the Logic's); else one from ``device`` and
        ``precision``."""
        self.ctx = ctx
        self.settings = settings if settings is not None else RunSettings(device, precision)
        self.local = Handlers()          # in-process runs: stand-in networks, or worker=False
        if worker is True:
            provider = model_server.active_client      # the local worker, or the model server chosen in the panel
        elif worker:
            provider = (lambda w=worker: w)
        else:
            provider = None
        self.runner = JobRunner(client=provider, local=self.local)
        self.encoding: Optional[EncodeAround] = None    # encoding before the box (start_encode_around)

    @property
    def device(self) -> str:
        return self.settings.device

    @property
    def precision(self) -> str:
        return self.settings.precision

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

    def set_device(self, device: str) -> None:
        if self.settings.set_device(device):
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
                       intensity: Optional[str] = None, propagation: str = DEFAULT_PROPAGATION,
                       axis: str = DEFAULT_AXIS, slice_range: Optional[Tuple[Optional[int], Optional[int]]] = None,
                       segmentation_node=None, seed_slice: Optional[int] = None, direction: str = DEFAULT_DIRECTION,
                       segment_id: Optional[str] = None) -> PreparedRun:
        """Inputs for MedSAM from a volume and ROI node(s) (or voxel boxes). Raises InputError on bad input.

        Correct and re-propagate: with ``seed_slice`` (a slice index along ``axis``), the slice of segment
        ``segment_id`` of ``segmentation_node`` there - as the user corrected it - seeds the propagation, which
        runs ``direction`` (``up`` = towards higher slice indices, ``down``, ``both``) to the ROI's end; the run's
        slab (``info["slab"]``, what Apply may change) is just that walk, so the rest of the segment is kept."""
        geometry.check_scalar_volume(volume_node)
        if rois is None or (not isinstance(rois, (list, tuple)) and not hasattr(rois, "__len__")):
            rois = [rois]
        if isinstance(rois, tuple) and len(rois) == 6 and all(isinstance(v, (int, np.integer)) for v in rois):
            rois = [rois]
        if len(rois) == 0 or any(r is None for r in rois):
            raise InputError("No ROI selected: create or pick an ROI (box) around the structure and run again.")
        messages: List[str] = []
        given = [isinstance(roi, (tuple, list, np.ndarray)) for roi in rois]
        with collect_warnings(messages):
            drawn = [roi if box else geometry.roi_to_voxel_box(roi, volume_node) for roi, box in zip(rois, given)]
        if seed_slice is not None and len(drawn) != 1:
            raise InputError(f"Propagate from a slice works on one ROI at a time ({len(drawn)} given): pick the ROI "
                             "of the structure you corrected.")
        preset = resolve_intensity(volume_node, intensity)
        # The run, checked once: every choice, the boxes' form and order, the corrected slice inside its box.
        spec = BoxRun(boxes=drawn, model=model, weights=weights, device=self.device, precision=self.precision,
                      intensity=preset, propagation=propagation, axis=axis, direction=direction,
                      seeds=None if seed_slice is None else (Seed(seed_slice, "seed"),), partial=True)
        # What needs the volume: voxel boxes clipped to it, the slice range, the drawn-ROI size rule.
        shape = geometry.volume_shape(volume_node)
        with collect_warnings(messages):
            boxes = [geometry.clip_box(b, shape) if box else b for b, box in zip(spec.boxes, given)]
        if slice_range is not None:
            boxes = [slicing.restrict_box(b, spec.axis, slice_range[0], slice_range[1]) for b in boxes]
        for box, roi in zip(boxes, rois):
            slicing.check_box(box, shape, what=f"ROI '{roi.GetName()}'" if hasattr(roi, "GetName") else "Box",
                              axis=spec.axis, each_side=True)
        if tuple(boxes) != spec.boxes:
            spec = spec.replace(boxes=boxes)     # the corrected slice checked again against the run's boxes
        data = geometry.volume_to_array(volume_node)
        arrays = {"volume": data.array}
        walk = spec.boxes
        if spec.seeds is not None:
            k = spec.seeds[0].slice
            arrays["seed"] = self._seed(volume_node, spec.axis, k, segmentation_node, segment_id)
            first, last = (k, None) if direction == "up" else (None, k) if direction == "down" else (None, None)
            walk = (slicing.restrict_box(spec.boxes[0], spec.axis, first, last),)
        request = Request(*spec.to_message(), arrays=arrays, keys={"volume": volume_key(volume_node, data.array)})
        guard = NodeGuard(self.scene, volume_node, [segmentation_node] if segmentation_node is not None else [])
        names = [r.GetName() if hasattr(r, "GetName") else f"box {i + 1}" for i, r in enumerate(rois)]
        return PreparedRun(label=f"MedSAM ({model})", request=request, guard=guard, spec=spec, messages=messages,
                           info=dict(boxes=list(spec.boxes), intensity=preset, names=names,
                                     volume=volume_node.GetName(), axis=spec.axis, model=model, seed_slice=seed_slice,
                                     slab=editing.run_slab(walk, spec.axis, data.array.shape),
                                     slabs=[editing.run_slab([b], spec.axis, data.array.shape) for b in walk]))

    @staticmethod
    def _seed(volume_node, axis: str, k: int, segmentation_node, segment_id) -> np.ndarray:
        """The corrected slice ``k`` of the segment (the spec checked that it lies inside the ROI): voxels on it."""
        if segmentation_node is None or segment_id is None:
            raise InputError("Propagate from a slice needs the corrected segment: select it in the Segment Editor.")
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
        spec = EncodeRun.from_box_run(prepared.spec, slices=slicing.project_box(prepared.info["slab"],
                                                                                prepared.spec.axis)[:2])
        request = Request(*spec.to_message(), arrays={"volume": run.arrays["volume"]}, keys=run.keys)
        return PreparedRun(label="Encoding ahead", request=request, guard=prepared.guard, spec=spec,
                           info=dict(prepared.info, prefetch=True))

    def start_encode_around(self, volume_node, axis: str, slice_index: int, *, model: str = DEFAULT_MODEL,
                            weights: Optional[str] = None, intensity: Optional[str] = None) -> Optional["EncodeAround"]:
        """Encode before the box: the worker encodes the slices of ``volume_node`` around ``slice_index`` (along
        ``axis``), nearest first, as many as its embedding cache holds, in the background - any run started
        meanwhile pre-empts it between two slices (it never waits), and a box drawn there later is served from the
        cache. Returns at once (the volume is sent to the worker now if it does not hold it yet); the returned
        handle (also :attr:`encoding`) is stopped by :meth:`stop_encode`; a new call stops the previous one.
        ``model``, ``weights`` and ``intensity`` must be those of the box runs that follow (``intensity`` None: the
        volume's window/level, as :meth:`prepare_medsam`). None when runs are in-process (no worker) or go to a model
        server."""
        self.stop_encode()
        geometry.check_scalar_volume(volume_node)
        spec = EncodeRun(model=model, weights=weights, device=self.device, precision=self.precision,
                         intensity=resolve_intensity(volume_node, intensity), axis=axis, centre=int(slice_index),
                         background=True)
        client = self.worker
        if client is None or not hasattr(client, "watch"):
            return None            # in-process runs, or a model server (its sessions encode when a box comes)
        # no copy: the local worker's client writes the array into its shared file inside submit()
        array = geometry.image_to_array(volume_node.GetImageData(), copy=False)
        depth = slicing.to_slices(array, spec.axis).shape[0]
        if spec.centre >= depth:
            raise InputError(f"Slice {spec.centre} is outside '{volume_node.GetName()}' (0..{depth - 1} along "
                             f"{spec.axis}): encode around a slice of the volume.")
        jid = client.submit(*spec.to_message(), {"volume": array}, {"volume": volume_key(volume_node, array)})
        client.watch(jid)
        client.release(jid)            # its only array is the keyed volume, which the worker keeps
        self.encoding = EncodeAround(self, client, jid, axis, int(slice_index))
        return self.encoding

    def stop_encode(self) -> None:
        """Stop encoding before the box (what is encoded stays cached); nothing when none runs."""
        if self.encoding is not None:
            self.encoding.stop()
            self.encoding = None

    # ------------------------------------------------------------------------------------------------------
    # UniverSeg
    # ------------------------------------------------------------------------------------------------------
    def prepare_universeg(self, volume_node, examples: Sequence, *, roi=None, support_size: int = 64,
                          ensemble: int = 1, seed: int = 0, tta: bool = False, intensity: Optional[str] = "auto",
                          axis: str = DEFAULT_AXIS, weights: Optional[str] = None, module=None,
                          keep_labelled: Optional[ex.Example] = None, segmentation_node=None,
                          max_slices_per_volume: Optional[int] = None) -> PreparedRun:
        """Inputs for UniverSeg. ``examples``: ``medseg_backend.universeg.Example`` objects (from the collectors in
        :mod:`.examples` or a library);
        ``roi``: ROI node, voxel box or None; ``module``: a stand-in network (tests); ``keep_labelled``: the
        target segment's own labelled slices, kept exactly in the result (few-shot completion)."""
        geometry.check_scalar_volume(volume_node)
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

        refs = []
        for e in examples:    # backend Examples: 3-D ones are cut into slices by the worker, by their source
            refs.append(ExampleRef.of(e, add(e.image, "image"), add(e.label, "label"), max_slices_per_volume))
        spec = ExamplesRun(examples=refs, roi=box, axis=axis, intensity=preset, support_size=support_size,
                           ensemble=ensemble, seed=seed, tta=tta, weights=weights, device=self.device,
                           precision=self.precision)
        keep = keep_labelled.label.copy() if keep_labelled is not None else None

        def finish(result):
            if keep is not None:
                result.mask = slicing.keep_slices(result.mask, keep, spec.axis)
            return result

        request = Request(*spec.to_message(), arrays=arrays, keys={"volume": volume_key(volume_node, data.array)},
                          local={"module": module} if module is not None else {}, finish=finish)
        guard = NodeGuard(self.scene, volume_node, [segmentation_node] if segmentation_node is not None else [])
        return PreparedRun(label="UniverSeg", request=request, guard=guard, spec=spec, messages=messages,
                           info=dict(box=box, intensity=preset, n_examples=len(examples), axis=spec.axis,
                                     n_slices=int(data.array.shape[slicing.axis_index(spec.axis)]),
                                     volume=volume_node.GetName(),
                                     slab=editing.run_slab([box], spec.axis, data.array.shape) if box else None))

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
        info, spec = prepared.info, prepared.spec

        def depth(box) -> int:
            first, last, _ = slicing.project_box(box, spec.axis)
            return last - first + 1

        if isinstance(spec, BoxRun):
            walk = info.get("slabs") or [info["slab"]]
            return sum(depth(b) for b in walk) * CPU_SECONDS_PER_SLICE[spec.model]
        if isinstance(spec, ExamplesRun):
            slab = info.get("slab")
            n = depth(slab) if slab else int(info.get("n_slices") or 0)
            passes = spec.ensemble * (2 if spec.tta else 1)
            return n * passes * CPU_SECONDS_PER_SLICE["universeg"] + passes * UNIVERSEG_SUPPORT_SECONDS
        return None

    # ------------------------------------------------------------------------------------------------------
    # Running
    # ------------------------------------------------------------------------------------------------------
    def start(self, prepared: PreparedRun):
        """Non-blocking: hand the request to the worker (in-process thread for stand-in networks); poll
        :attr:`runner` for the outcome."""
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
