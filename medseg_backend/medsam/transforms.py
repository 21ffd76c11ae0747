"""How an image and a box enter each MedSAM model, and how its masks come back: one transform per model.

A transform is to MedSAM what ``ResizeLongestSide`` is to SAM: it owns the model's input size and every
coordinate change between the original slice and the model, so the predictor and the propagation never ask
which model they run. Both follow the official pipelines exactly (``MODEL_FACTS.md``):

* :class:`LiteMedSAMTransform` - longest side to 256 with OpenCV ``INTER_AREA``, min-max to [0, 1], zero padding
  bottom/right; boxes scaled by ``int(v * 256 / max(H, W))``; low-res logits cropped to the unpadded part and
  upsampled bilinearly as logits.
* :class:`MedSAMViTTransform` - stretched to 1024 x 1024 with scikit-image's anti-aliased bicubic ``resize``
  (truncated to uint8), min-max to [0, 1]; boxes scaled per axis as floats; probabilities upsampled.

The module-level functions (:func:`lite_prepare`, :func:`lite_box`, :func:`vit_prepare`, :func:`vit_box`) are
the same steps for one image, as the official scripts write them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..slicing import bbox2d
from .resize import resize_area_u8, resize_skimage_bicubic

LITE_SIZE = 256
VIT_SIZE = 1024
#: Margin (pixels of a 256 grid) the official propagation adds around the previous slice's mask.
CARRY_MARGIN = 3


@dataclass(frozen=True)
class Prepared:
    """Encoder input for one slice plus what is needed to map prompts and outputs."""

    tensor: Optional[np.ndarray]     # (3, S, S) float32 in [0, 1]; None where only the sizes are needed
    original_size: Tuple[int, int]   # (H, W)
    resized_size: Tuple[int, int]    # (h, w) inside the S x S input (LiteMedSAM pads; ViT-B stretches)


def _as_hw3(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected (H, W) or (H, W, 3), got {image.shape}")


def _minmax01(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(), x.max()
    return (x - lo) / np.clip(float(hi) - float(lo), 1e-8, None)


def lite_resized_size(h: int, w: int) -> Tuple[int, int]:
    s = LITE_SIZE / max(h, w)
    return int(h * s + 0.5), int(w * s + 0.5)


def lite_prepare(image_u8: np.ndarray) -> Prepared:
    """LiteMedSAM: longest side to 256 (INTER_AREA), min-max to [0, 1], zero-pad bottom/right to 256.
    A grey (H, W) slice is processed once and repeated to 3 channels (identical to repeating first)."""
    img = _as_hw3(image_u8)
    h, w = img.shape[:2]
    nh, nw = lite_resized_size(h, w)
    resized = resize_area_u8(img, (nh, nw))
    norm = _minmax01(resized)
    out = np.zeros((3, LITE_SIZE, LITE_SIZE), dtype=np.float32)
    if norm.ndim == 2:
        out[:, :nh, :nw] = norm[None]
    else:
        out[:, :nh, :nw] = norm.transpose(2, 0, 1)
    return Prepared(out, (h, w), (nh, nw))


def lite_box(box: Sequence[float], h: int, w: int) -> np.ndarray:
    """Box (x0, y0, x1, y1) in original pixels -> 256-space, ``int(v * (256 / max(H, W)))``."""
    r = LITE_SIZE / max(h, w)
    return np.array([int(v * r) for v in box], dtype=np.float32)


def vit_prepare(image_u8: np.ndarray) -> Prepared:
    """MedSAM ViT-B: stretch to 1024x1024 (anti-aliased bicubic), truncate to uint8, min-max to [0, 1]."""
    img = _as_hw3(image_u8)
    h, w = img.shape[:2]
    resized = resize_skimage_bicubic(img, (VIT_SIZE, VIT_SIZE)).astype(np.uint8)
    norm = _minmax01(resized).astype(np.float32)
    out = np.repeat(norm[None], 3, axis=0) if norm.ndim == 2 else np.ascontiguousarray(norm.transpose(2, 0, 1))
    return Prepared(out, (h, w), (VIT_SIZE, VIT_SIZE))


def vit_box(box: Sequence[float], h: int, w: int) -> np.ndarray:
    """Box in original pixels -> 1024-space, scaled per axis as floats."""
    return (np.asarray(box, dtype=np.float64) / np.array([w, h, w, h]) * VIT_SIZE).astype(np.float32)


class LiteMedSAMTransform:
    """LiteMedSAM (256 x 256 input, padded)."""

    kind = "lite"
    size = LITE_SIZE

    def apply_image(self, image_u8: np.ndarray) -> Prepared:
        return lite_prepare(image_u8)

    def apply_box(self, box: Sequence[float], h: int, w: int) -> np.ndarray:
        return lite_box(box, h, w)

    def geometry(self, h: int, w: int) -> Prepared:
        """The sizes needed to map low-res logits back to an (h, w) slice (no pixels)."""
        return Prepared(None, (h, w), lite_resized_size(h, w))

    def low_crop(self, h: int, w: int) -> Tuple[int, int]:
        """Rows and columns of the 256 x 256 low-res output that cover the image (the rest is padding)."""
        return lite_resized_size(h, w)

    def upsample(self, low: torch.Tensor, prep: Prepared,
                 want_logits: bool = True) -> Tuple[Optional[np.ndarray], np.ndarray]:
        """(logits, probabilities) at the original size: logits cropped, upsampled bilinearly, then sigmoid."""
        (h, w), (nh, nw) = prep.original_size, prep.resized_size
        up = F.interpolate(low[..., :nh, :nw], size=(h, w), mode="bilinear", align_corners=False)
        logits = up[0, 0].float().cpu().numpy()
        return logits, 1.0 / (1.0 + np.exp(-logits))

    def box_from_mask(self, mask: np.ndarray, obj: int, h: int, w: int) -> Optional[np.ndarray]:
        """Next slice's prompt from the previous mask (official rule): the previous slice's label image (values
        ``obj``, as the official script keeps them) resized to the 256 grid with INTER_AREA; the box of its
        non-zero pixels +-3 px, clipped to [0, 256]. None when nothing is left."""
        box = bbox2d(resize_area_u8(mask.astype(np.uint8) * np.uint8(obj), lite_resized_size(h, w)))
        if box is None:
            return None
        x0, y0, x1, y1 = box
        s, c = LITE_SIZE, CARRY_MARGIN
        return np.array([max(0, x0 - c), max(0, y0 - c), min(s, x1 + c), min(s, y1 + c)], dtype=np.float32)


class MedSAMViTTransform:
    """MedSAM ViT-B (1024 x 1024 input, stretched)."""

    kind = "vit"
    size = VIT_SIZE

    def apply_image(self, image_u8: np.ndarray) -> Prepared:
        return vit_prepare(image_u8)

    def apply_box(self, box: Sequence[float], h: int, w: int) -> np.ndarray:
        return vit_box(box, h, w)

    def geometry(self, h: int, w: int) -> Prepared:
        return Prepared(None, (h, w), (VIT_SIZE, VIT_SIZE))

    def low_crop(self, h: int, w: int) -> Tuple[int, int]:
        return LITE_SIZE, LITE_SIZE

    def upsample(self, low: torch.Tensor, prep: Prepared,
                 want_logits: bool = True) -> Tuple[Optional[np.ndarray], np.ndarray]:
        """(logits, probabilities) at the original size: the official script upsamples probabilities; logits
        are only derived from them when ``want_logits``."""
        h, w = prep.original_size
        prob = F.interpolate(torch.sigmoid(low), size=(h, w), mode="bilinear", align_corners=False)
        p = prob[0, 0].float().cpu().numpy()
        if not want_logits:
            return None, p
        with np.errstate(divide="ignore"):
            logits = np.log(p) - np.log1p(-p)
        return logits.astype(np.float32), p

    def box_from_mask(self, mask: np.ndarray, obj: int, h: int, w: int) -> Optional[np.ndarray]:
        """The official margin (3 px of a 256 grid) expressed in original pixels, then scaled to 1024-space."""
        tight = bbox2d(mask)
        if tight is None:
            return None
        margin = float(CARRY_MARGIN) * max(h, w) / LITE_SIZE
        box = np.asarray(tight, dtype=np.float64) + np.array([-margin, -margin, margin, margin])
        box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])
        return vit_box(box, h, w)


def transform_for(kind: str):
    """The transform of a model kind (``lite`` or ``vit``)."""
    return LiteMedSAMTransform() if kind == "lite" else MedSAMViTTransform()
