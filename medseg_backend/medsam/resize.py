"""The two resamplers of the official MedSAM pipelines, re-implemented without OpenCV or scikit-image.

LiteMedSAM resizes with OpenCV's ``INTER_AREA``; MedSAM ViT-B with scikit-image's anti-aliased bicubic
``resize``. Neither library is a dependency of this package, so both resamplers are re-implemented here from
their documented arithmetic (the test suite compares them with the real libraries):

* :func:`resize_area_u8` - OpenCV ``INTER_AREA`` on uint8: integer 2x2 block means with round-half-up,
  other integer factors ``round(sum/area)``, fractional downscaling by pixel-overlap weights in float32, and
  upscaling by OpenCV's "area" linear weights in 11-bit fixed point;
* :func:`resize_skimage_bicubic` - Gaussian anti-aliasing (sigma = (factor-1)/2), cubic spline zoom with
  ``grid_mode`` and mirror boundaries, clipped to the input range.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np


# --------------------------------------------------------------------------------------------------------
# OpenCV INTER_AREA (uint8)
# --------------------------------------------------------------------------------------------------------
def _area_tables(ssize: int, dsize: int):
    """Pixel-overlap weights for a fractional downscale along one axis: (dst index, src index, weight)."""
    scale = ssize / dsize
    di, si, alpha = [], [], []
    for dx in range(dsize):
        f1 = dx * scale
        f2 = f1 + scale
        cell = min(scale, ssize - f1)
        s1, s2 = math.ceil(f1), math.floor(f2)
        s2 = min(s2, ssize - 1)
        s1 = min(s1, s2)
        if s1 - f1 > 1e-3:
            di.append(dx); si.append(s1 - 1); alpha.append((s1 - f1) / cell)
        for sx in range(s1, s2):
            di.append(dx); si.append(sx); alpha.append(1.0 / cell)
        if f2 - s2 > 1e-3:
            di.append(dx); si.append(s2); alpha.append(min(min(f2 - s2, 1.0), cell) / cell)
    return np.asarray(di), np.asarray(si), np.asarray(alpha, dtype=np.float32)


def _area_downscale(img: np.ndarray, dh: int, dw: int) -> np.ndarray:
    """Fractional downscale, float32 accumulation in OpenCV's order (row sums, then weighted rows)."""
    h, w = img.shape[:2]
    xd, xs, xa = _area_tables(w, dw)
    yd, ys, ya = _area_tables(h, dh)
    src = img.astype(np.float32)
    extra = img.shape[2:]
    # Horizontal: for each dst column, add its (<= few) weighted source columns in table order.
    rows = np.zeros((h, dw) + extra, dtype=np.float32)
    order = np.argsort(xd, kind="stable")
    xd, xs, xa = xd[order], xs[order], xa[order]
    starts = np.searchsorted(xd, np.arange(dw))
    counts = np.bincount(xd, minlength=dw)
    wmat = xa.reshape((-1,) + (1,) * len(extra))
    for j in range(int(counts.max())):
        sel = np.nonzero(counts > j)[0]
        k = starts[sel] + j
        rows[:, sel] = rows[:, sel] + src[:, xs[k]] * wmat[k].reshape((1, -1) + (1,) * len(extra))
    out = np.zeros((dh, dw) + extra, dtype=np.float32)
    first = np.ones(dh, dtype=bool)
    for d, s, a in zip(yd, ys, ya):
        term = np.float32(a) * rows[s]
        if first[d]:
            out[d] = term
            first[d] = False
        else:
            out[d] = out[d] + term
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _area_linear_coeffs(ssize: int, dsize: int):
    """OpenCV's INTER_AREA weights when enlarging: source index and 11-bit fixed-point weights."""
    scale = ssize / dsize
    inv = dsize / ssize
    dx = np.arange(dsize)
    sx = np.floor(dx * scale).astype(np.int64)
    fx = ((dx + 1) - (sx + 1) * inv).astype(np.float32)
    fx = np.where(fx <= 0, np.float32(0), fx - np.floor(fx)).astype(np.float32)
    edge = sx >= ssize - 1
    fx[edge] = 0
    sx[edge] = ssize - 1
    w0 = np.clip(np.rint((np.float32(1) - fx) * np.float32(2048)), -32768, 32767).astype(np.int64)
    w1 = np.clip(np.rint(fx * np.float32(2048)), -32768, 32767).astype(np.int64)
    s1 = np.minimum(sx + 1, ssize - 1)
    return sx, s1, w0, w1


def _area_upscale(img: np.ndarray, dh: int, dw: int) -> np.ndarray:
    h, w = img.shape[:2]
    extra = (1,) * (img.ndim - 2)
    x0, x1, a0, a1 = _area_linear_coeffs(w, dw)
    y0, y1, b0, b1 = _area_linear_coeffs(h, dh)
    src = img.astype(np.int64)
    # Horizontal pass in integers: S[x0]*a0 + S[x1]*a1 (scale 2^11).
    rows = src[:, x0] * a0.reshape((1, -1) + extra) + src[:, x1] * a1.reshape((1, -1) + extra)
    # Vertical pass as OpenCV's SIMD kernel: mul_hi((S >> 4), b) summed, then (v + 2) >> 2.
    r0 = (rows[y0] >> 4) * b0.reshape((-1, 1) + extra) >> 16
    r1 = (rows[y1] >> 4) * b1.reshape((-1, 1) + extra) >> 16
    return np.clip((r0 + r1 + 2) >> 2, 0, 255).astype(np.uint8)


def resize_area_u8(img: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """OpenCV ``cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)`` for uint8 (H, W) or (H, W, C)."""
    if img.dtype != np.uint8:
        raise TypeError("resize_area_u8 expects uint8")
    dh, dw = int(size[0]), int(size[1])
    h, w = img.shape[:2]
    if (h, w) == (dh, dw):
        return img.copy()
    sy, sx = h / dh, w / dw
    if sx >= 1 and sy >= 1:
        ix, iy = round(sx), round(sy)
        if abs(sx - ix) < 1e-12 and abs(sy - iy) < 1e-12:
            blocks = img[: dh * iy, : dw * ix].astype(np.int64)
            blocks = blocks.reshape((dh, iy, dw, ix) + img.shape[2:]).sum(axis=(1, 3))
            if ix == 2 and iy == 2:
                return ((blocks + 2) >> 2).astype(np.uint8)
            return np.clip(np.rint(blocks.astype(np.float32) * np.float32(1.0 / (ix * iy))), 0, 255).astype(np.uint8)
        return _area_downscale(img, dh, dw)
    # Enlarging (or mixed: one axis grows, one shrinks): OpenCV uses its "area" linear weights on both axes.
    return _area_upscale(img, dh, dw)


# --------------------------------------------------------------------------------------------------------
# scikit-image resize(order=3, anti_aliasing=True, mode='reflect', preserve_range=True)
# --------------------------------------------------------------------------------------------------------
def resize_skimage_bicubic(img: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Float64 result of skimage's anti-aliased cubic ``resize`` of a 2-D array (per channel for 3-D)."""
    from scipy import ndimage as ndi

    if img.ndim == 3:
        return np.stack([resize_skimage_bicubic(img[..., c], size) for c in range(img.shape[2])], axis=-1)
    image = img.astype(np.float64)
    factors = np.divide(image.shape, size)
    sigma = np.maximum(0, (factors - 1) / 2)
    filtered = ndi.gaussian_filter(image, sigma, cval=0, mode="mirror") if np.any(sigma > 0) else image
    out = ndi.zoom(filtered, [1 / f for f in factors], order=3, mode="mirror", cval=0, grid_mode=True)
    return np.clip(out, image.min(), image.max())
