"""UniverSeg engine: segment a 2-D image or a volume slice-wise from example segmentations, in context.

One run = one support set built from the examples (see :mod:`.support` for the exact crop / resize /
normalisation rules), shared by every query slice: the network's query-independent support work is done
once per pass (:meth:`~medseg_backend.models.universeg_fast.UniverSegFast.prepare_support`). With more usable example slices than ``support_size``,
``ensemble`` seeded random subsets are run and their probabilities averaged; ``tta`` adds a left-right
flipped pass (query and support flipped, prediction flipped back). Probabilities are averaged in model
space and mapped back through the exact inverse transform; the mask is ``probability > 0.5``. Voxels
outside the ROI (all three axes) stay 0.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..choices import DEFAULT_AXIS, PRECISIONS
from ..errors import InputError, MedSegWarning
from ..intensity import IntensityRule, resolve_preset
from ..progress import CancelToken, ProgressCallback, check, report
from . import support as sp
from .. import slicing
from .examples import FEW_EXAMPLES, Example



@dataclass
class UniverSegResult:
    """``mask`` uint8 0/1 and ``probabilities`` float32, both with the target's shape; ``messages`` say what
    was chosen (intensity rule, examples used, passes, region)."""

    mask: np.ndarray
    probabilities: np.ndarray
    messages: List[str] = field(default_factory=list)
    seconds: float = 0.0
    slices_run: int = 0


class UniverSegEngine:
    """UniverSeg v1 on one device.

    ``weights``: a checkpoint path (else the store's installed ``universeg-v1``; both need the
    OpenRAIL++-M licence accepted: ``medseg models fetch universeg-v1 --accept-licence``). ``model``: any
    ``nn.Module`` with ``forward(target (B,1,H,W), support_images (B,S,1,H,W), support_labels (B,S,1,H,W))
    -> logits`` (tests use deterministic stand-ins); when it also has ``prepare_support`` /
    ``predict_with_support`` (the real UniverSeg) the shared-support fast path is used.
    ``precision``: ``auto`` (float32: bf16 changes thresholded masks on the reference cases, see BENCHMARKS.md),
    ``fp32``, ``bf16`` (CPU with bf16 units or CUDA) or ``fp16`` (CUDA).
    """

    def __init__(self, weights: Optional[str] = None, device="auto", model: Optional[torch.nn.Module] = None,
                 precision: str = "auto", chunk_size: Optional[int] = None) -> None:
        from ..devices import configure_cpu_threads, pick_device

        self.device = pick_device(device)
        if self.device.type == "cpu":
            configure_cpu_threads()
        if model is None:
            from ..weights import resolve_weights
            from ..models.loader import load_model

            path = resolve_weights("universeg-v1", weights)   # LicenceError until the licence is accepted
            model = load_model("universeg-v1", weights=str(path), device=self.device)
        self.net = model.to(self.device).eval()
        self.fast = hasattr(self.net, "prepare_support") and hasattr(self.net, "predict_with_support")
        self.dtype = self._resolve_precision(precision)
        if self.fast:
            self.net.compute_dtype = None if self.dtype == torch.float32 else self.dtype
            if chunk_size is None:
                chunk_size = 64 if self.device.type == "cuda" else 16
            self.net.chunk_size = max(1, int(chunk_size))

    # ------------------------------------------------------------------------------------------ precision --
    def _resolve_precision(self, precision: str) -> torch.dtype:
        p = (precision or "auto").strip().lower()
        if p not in PRECISIONS:
            raise InputError(f"Unknown precision '{precision}': use {', '.join(PRECISIONS)}.")
        if p in ("auto", "fp32"):
            return torch.float32
        if p == "fp16":
            if self.device.type != "cuda":
                raise InputError("fp16 needs a CUDA GPU: use --precision bf16 or fp32 on this device.")
            return torch.float16
        from ..devices import cpu_has_native_bf16

        if self.device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn("This CPU has no bf16 units (AMX/AVX512-BF16): bf16 will be slower than fp32.",
                          MedSegWarning, stacklevel=3)
        return torch.bfloat16

    @property
    def precision(self) -> str:
        return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    # ------------------------------------------------------------------------------------------- network --
    def _predictor(self, images: torch.Tensor, labels: torch.Tensor) -> Callable[[np.ndarray], np.ndarray]:
        """A function query (size, size) in [0,1] -> probabilities (size, size) for one support set."""
        dev = self.device
        if self.fast:
            with torch.inference_mode():
                cache = self.net.prepare_support(images.to(dev), labels.to(dev))

            def run(query: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    q = torch.from_numpy(np.ascontiguousarray(query, np.float32))[None, None].to(dev)
                    logits = self.net.predict_with_support(q, cache)
                    return torch.sigmoid(logits.float())[0, 0].cpu().numpy()
            return run

        si, sl = images[None].to(dev), labels[None].to(dev)

        def run_plain(query: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                q = torch.from_numpy(np.ascontiguousarray(query, np.float32))[None, None].to(dev)
                logits = self.net(q, si, sl)
                return torch.sigmoid(logits.float())[0, 0].cpu().numpy()
        return run_plain

    # ------------------------------------------------------------------------------------------------ run --
    def run(self, spec, volume: np.ndarray, examples: Sequence[Example], *,
            progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> UniverSegResult:
        """Run a checked :class:`~medseg_backend.runspec.ExamplesRun` on ``volume`` with ``examples`` (the spec's
        example references, opened and cut into slices): its ROI, axis, label, intensity, support size, ensemble,
        seed, TTA and neighbour hint. The spec's weights, device and precision chose this engine."""
        return self.segment_volume(volume, examples, roi=spec.roi, axis=spec.axis, label=spec.label,
                                   intensity=spec.intensity, support_size=spec.support_size, ensemble=spec.ensemble,
                                   seed=spec.seed, tta=spec.tta, neighbour_hint=spec.neighbour_hint,
                                   progress=progress, cancel=cancel)

    def segment_volume(self, volume: np.ndarray, examples: Sequence[Example], *,
                       roi: Optional[Sequence[int]] = None, axis: str = DEFAULT_AXIS, label: int = 1,
                       intensity: Union[str, IntensityRule] = "auto", support_size: int = 64,
                       ensemble: int = 1, seed: int = 0, tta: bool = False, neighbour_hint: bool = False,
                       progress: Optional[ProgressCallback] = None,
                       cancel: Optional[CancelToken] = None) -> UniverSegResult:
        """Segment ``volume`` (K, J, I) slice-wise along ``axis`` (voxel space), or a 2-D image (H, W), from
        ``examples``. ``roi``: (x0, y0, z0, x1, y1, z1) / (x0, y0, x1, y1) voxel indices, inclusive; voxels outside
        stay 0. ``neighbour_hint``: crop each slice around its already segmented neighbour's mask (processing
        outward from the middle slice) instead of the fixed ROI / example-derived region. Raises
        :class:`CancelledError` when cancelled (nothing is returned)."""
        t0 = time.perf_counter()
        from ..io import validate_array

        vol = np.asarray(volume)
        if vol.ndim not in (2, 3):
            raise InputError(f"Target has {vol.ndim} dimensions {tuple(vol.shape)}: give a 2-D image (H, W) or a "
                             "3-D volume (K, J, I); convert RGB images to grey first.")
        validate_array(vol, "target")
        is2d = vol.ndim == 2
        ax = 0 if is2d else slicing.axis_index(axis)
        axis_name = "2-D" if is2d else str(axis).strip().lower()
        support_size, ensemble = int(support_size), int(ensemble)
        msgs: List[str] = []

        if isinstance(intensity, IntensityRule):
            rule = intensity
            msgs.append(f"intensity preset {rule.describe()}")
        else:
            rule, why = resolve_preset(intensity, vol)
            msgs.append(why)

        work = vol[None] if is2d else slicing.to_slices(vol, ax)          # (slices, rows, cols) view
        n_slices, rows, cols = work.shape
        s_lo, s_hi, plane_box = 0, n_slices - 1, None
        if roi is not None:
            s_lo, s_hi, plane_box = self._roi(roi, vol.shape, ax, is2d)

        items = sp.build_support(examples, rule, label=label, axis=axis_name if not is2d else "axial",
                                 target_ndim=vol.ndim)
        n = len(items)
        if n < FEW_EXAMPLES:
            warnings.warn(f"Only {n} example slice(s): UniverSeg is more reliable with more examples (it was "
                          "trained with 64); label a few more slices.", MedSegWarning, stacklevel=2)
        subsets = sp.choose_subsets(n, support_size, ensemble, seed)
        if n > support_size:
            msgs.append(f"{n} example slices: {len(subsets)} random subset(s) of {support_size} (seed {seed}), "
                        "probabilities averaged")
            if ensemble == 1:
                msgs.append(f"{n - support_size} example slices unused in this pass: raise --ensemble to use more")
        else:
            msgs.append(f"{n} example slices in one pass" + (f" ({ensemble} ensemble passes not needed)"
                                                           if ensemble > 1 else ""))
        if items.skipped:
            msgs.append(f"{len(items.skipped)} example(s) skipped (empty label)")

        if plane_box is None:
            plane_box = sp.derived_box(items.boxes, (rows, cols))
            msgs.append(f"no ROI: region rows {plane_box[1]}-{plane_box[3]}, columns {plane_box[0]}-{plane_box[2]} "
                        "derived from the examples' label boxes, on every slice")
        base_sq = sp.square_around(plane_box)
        slices = list(range(s_lo, s_hi + 1))
        variants: List[Tuple[np.ndarray, bool]] = [(idx, flip) for idx in subsets for flip in
                                                   ((False, True) if tta else (False,))]
        msgs.append(f"{len(slices)} {axis_name} slice(s), {len(variants)} pass(es) per slice, {self.precision}")

        prob_work = np.zeros(work.shape, np.float32)
        total = max(1, len(slices) * len(variants))
        done = 0
        report(progress, 0.0, f"UniverSeg: {len(slices)} slice(s), {n} examples")

        def make_predictor(idx: np.ndarray, flip: bool):
            imgs, labs = items.images[idx], items.labels[idx]
            if flip:
                imgs, labs = torch.flip(imgs, dims=[-1]), torch.flip(labs, dims=[-1])
            run = self._predictor(imgs, labs)
            if not flip:
                return run
            return lambda q: np.ascontiguousarray(run(np.ascontiguousarray(q[:, ::-1]))[:, ::-1])

        def step(k: int, run, q: np.ndarray) -> np.ndarray:
            nonlocal done
            check(cancel)
            out = run(q)
            done += 1
            report(progress, done / total, f"UniverSeg: {axis_name} slice {k} ({done}/{total})")
            return out

        if not neighbour_hint or len(slices) == 1:
            # Fixed region on every slice: one support set alive at a time (bounded memory), probabilities
            # averaged in model space, then mapped back once per slice.
            queries = [sp.to_model_image(sp.normalise_slice(work[k], rule), base_sq) for k in slices]
            acc = np.zeros((len(slices),) + queries[0].shape, np.float32)
            for idx, flip in variants:
                check(cancel)
                run = make_predictor(idx, flip)
                for j, k in enumerate(slices):
                    acc[j] += step(k, run, queries[j])
                del run
            for j, k in enumerate(slices):
                prob_work[k] = sp.paste_back(acc[j] / len(variants), base_sq, (rows, cols))
        else:
            # Outward from the middle slice; each crop from the neighbour's mask (all passes kept alive).
            predictors = [make_predictor(idx, flip) for idx, flip in variants]
            mid = (s_lo + s_hi) // 2
            hinted = 0
            for order, prev in ((range(mid, s_hi + 1), -1), (range(mid - 1, s_lo - 1, -1), +1)):
                for k in order:
                    sq = base_sq
                    if k != mid:
                        box = slicing.bbox2d(self._clip_plane(prob_work[k + prev] > 0.5, plane_box))
                        if box is not None:
                            sq = sp.square_around(box)
                            hinted += 1
                    q = sp.to_model_image(sp.normalise_slice(work[k], rule), sq)
                    p = sum(step(k, run, q) for run in predictors) / len(predictors)
                    prob_work[k] = sp.paste_back(p, sq, (rows, cols))
            msgs.append(f"neighbour hint: {hinted} slice(s) cropped around their neighbour's mask")

        # Only the ROI (in-plane box too) may be non-zero.
        region = np.zeros((rows, cols), bool)
        c0, r0, c1, r1 = plane_box
        region[r0:r1 + 1, c0:c1 + 1] = True
        if roi is not None:
            prob_work[:, ~region] = 0.0
        check(cancel)
        probs = prob_work[0] if is2d else slicing.from_slices(prob_work, ax)
        mask = (probs > 0.5).astype(np.uint8)
        report(progress, 1.0, "UniverSeg: done")
        return UniverSegResult(mask=mask, probabilities=probs, messages=msgs, seconds=time.perf_counter() - t0,
                               slices_run=len(slices))

    # --------------------------------------------------------------------------------------------- helpers --
    @staticmethod
    def _clip_plane(mask: np.ndarray, plane_box) -> np.ndarray:
        c0, r0, c1, r1 = plane_box
        out = np.zeros_like(mask)
        out[r0:r1 + 1, c0:c1 + 1] = mask[r0:r1 + 1, c0:c1 + 1]
        return out

    @staticmethod
    def _roi(roi: Sequence[int], shape: Tuple[int, ...], ax: int, is2d: bool):
        """Validate and clip the ROI; return (first slice, last slice, in-plane box (x0, y0, x1, y1) of the slice
        view). Inverted / outside / empty: InputError; partly outside: clipped with a warning."""
        vals = tuple(int(v) for v in roi)
        if len(vals) != (4 if is2d else 6):
            form = "x0,y0,x1,y1" if is2d else "x0,y0,z0,x1,y1,z1"
            raise InputError(f"ROI {tuple(roi)} has {len(vals)} numbers but the target is {'2' if is2d else '3'}-D: "
                             f"give {form} (voxel indices, inclusive).")
        clipped = slicing.check_box(vals, shape, what="ROI", axis=0 if is2d else ax)
        return (0, 0, clipped) if is2d else slicing.project_box(clipped, ax)
