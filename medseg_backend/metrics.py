"""Small measures shared by the CLI, the demo, the benchmarks and the Slicer scenarios."""
from __future__ import annotations

import numpy as np


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of the non-zero voxels of ``a`` and ``b`` (1.0 when both are empty)."""
    a = np.asarray(a) > 0
    b = np.asarray(b) > 0
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(a, b).sum() / denom)
