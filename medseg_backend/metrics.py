"""Small measures shared by the CLI, the demo, the benchmarks and the Slicer scenarios."""
from __future__ import annotations

import numpy as np


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of the non-zero voxels of ``a`` and ``b`` (1.0 when both are empty)."""
    a = np.asarray(a) > 0
    b = np.asarray(b) > 0
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(a, b).sum() / denom)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing=None):
    """(mean symmetric surface distance, 95th-percentile Hausdorff distance) between the non-zero voxels of ``a``
    and ``b``, in the units of ``spacing`` (per array axis, e.g. mm in (K, J, I) order; default 1). Surfaces are
    the mask voxels with a background neighbour (6-connected). (0.0, 0.0) when both are empty, (nan, nan) when
    only one is."""
    from scipy import ndimage

    a = np.asarray(a) > 0
    b = np.asarray(b) > 0
    if not a.any() and not b.any():
        return 0.0, 0.0
    if not a.any() or not b.any():
        return float("nan"), float("nan")
    sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * a.ndim

    def surface(m):
        return m & ~ndimage.binary_erosion(m, border_value=0)

    sa, sb = surface(a), surface(b)
    d_ab = ndimage.distance_transform_edt(~sb, sampling=sp)[sa]
    d_ba = ndimage.distance_transform_edt(~sa, sampling=sp)[sb]
    both = np.concatenate([d_ab, d_ba])
    return float(both.mean()), float(np.percentile(both, 95))
