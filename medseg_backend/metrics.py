"""Small measures shared by the CLI, the demo, the benchmarks and the Slicer scenarios."""
from __future__ import annotations

from typing import Tuple

import numpy as np


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of the non-zero voxels of ``a`` and ``b`` (1.0 when both are empty)."""
    a = np.asarray(a) > 0
    b = np.asarray(b) > 0
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(a, b).sum() / denom)


def bbox3d(mask: np.ndarray) -> Tuple[int, int, int, int, int, int]:
    """Tight inclusive voxel box (x0, y0, z0, x1, y1, z1) of the non-zero voxels of a (K, J, I) mask."""
    ks, js, is_ = np.nonzero(mask)
    if ks.size == 0:
        raise ValueError("empty mask has no bounding box")
    return (int(is_.min()), int(js.min()), int(ks.min()), int(is_.max()), int(js.max()), int(ks.max()))
