"""Pictures of results: a grey slice with coloured label outlines/fills and the prompt box."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

PALETTE = np.array([
    [0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 190]], dtype=np.float64)


def overlay_rgb(image: np.ndarray, labels: np.ndarray, boxes: Optional[Sequence[Sequence[int]]] = None,
                alpha: float = 0.45) -> np.ndarray:
    """``image`` (H, W) uint8 or (H, W, 3); ``labels`` (H, W) ints; boxes (x0, y0, x1, y1) drawn in yellow."""
    base = image.astype(np.float64)
    if base.ndim == 2:
        base = np.repeat(base[..., None], 3, axis=2)
    out = base.copy()
    for value in np.unique(labels):
        if value == 0:
            continue
        colour = PALETTE[1 + (int(value) - 1) % (len(PALETTE) - 1)]
        m = labels == value
        out[m] = (1 - alpha) * out[m] + alpha * colour
        # outline: mask pixels with a background 4-neighbour
        pad = np.pad(m, 1)
        inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
        out[m & ~inner] = colour
    for b in boxes or []:
        x0, y0, x1, y1 = [int(v) for v in b]
        h, w = labels.shape
        x0, x1 = np.clip([x0, x1], 0, w - 1)
        y0, y1 = np.clip([y0, y1], 0, h - 1)
        yellow = np.array([255.0, 255.0, 0.0])
        out[y0, x0:x1 + 1] = yellow
        out[y1, x0:x1 + 1] = yellow
        out[y0:y1 + 1, x0] = yellow
        out[y0:y1 + 1, x1] = yellow
    return np.clip(out, 0, 255).astype(np.uint8)


def upscale_nearest(rgb: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1) if factor > 1 else rgb


def radiological_axial(rgb: np.ndarray, direction: Sequence[float]) -> np.ndarray:
    """Orient an axial slice (rows j, columns i) of a near-axis-aligned LPS volume for display: patient right
    on the left of the picture, anterior at the top."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    out = rgb
    if d[0, 0] < 0:  # i runs towards the patient's right: flip so that right is on the left
        out = out[:, ::-1]
    if d[1, 1] < 0:  # j runs anterior: flip so that anterior is up
        out = out[::-1]
    return np.ascontiguousarray(out)
