"""A brush stroke dragged in a slice view, as the voxels of one slice of a volume (issue 26: paint and erase in the
view while a MedSegSlicer effect is active).

The stroke is the pointer's path in the view's XY (pixels); each point goes through the slice node's own XY -> RAS
transform and the volume's RAS -> IJK (as :func:`.session_views.drawn_box` does for a box), and every voxel of the
slice whose centre lies within half the brush diameter (millimetres, in the slice plane) of the path is in the
stroke. The work is bounded by the stroke, not by the volume: at most :data:`MAX_STROKE_POINTS` points are kept and
at most :data:`MAX_SAMPLES` brush positions are stamped, each on a window the size of the brush.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from medseg_backend import slicing

from . import geometry
from .errors import InputError

#: Brush diameter (mm) of a stroke, as Slicer's Paint effect starts with a few millimetres.
DEFAULT_DIAMETER_MM = 5.0
#: Points of one stroke that are kept (a longer drag keeps its first points and its last one).
MAX_STROKE_POINTS = 2000
#: Brush positions stamped along one stroke (the spacing between them grows for a longer stroke).
MAX_SAMPLES = 20000


def stroke_plane(volume, slice_node, xys: Sequence[Tuple[float, float]],
                 diameter_mm: float = DEFAULT_DIAMETER_MM) -> Tuple[str, int, np.ndarray]:
    """The stroke ``xys`` (view XY points, pixels) dragged in the view of ``slice_node`` as ``(axis, k, plane)``:
    the voxel axis the view slices along, the slice under the stroke's first point, and a boolean mask of that
    slice (rows and columns as :func:`medseg_backend.slicing.take_slice` gives them)."""
    if not xys:
        raise InputError("The stroke has no points: drag in a slice view.")
    if not diameter_mm > 0:
        raise InputError(f"Brush diameter {diameter_mm} mm: use a positive size.")
    xys = list(xys)
    if len(xys) > MAX_STROKE_POINTS:
        xys = xys[:MAX_STROKE_POINTS - 1] + [xys[-1]]
    axis, k, ijk = geometry.view_points_to_ijk(volume, slice_node, xys, "The stroke is")
    ax = slicing.axis_index(axis)
    size = geometry.box_shape_xyz(geometry.volume_shape(volume))
    cols, rows = slicing.PLANE_COORDS[ax]
    spacing = geometry.voxel_spacing(volume)
    scale = np.array([spacing[cols], spacing[rows]], dtype=float)      # mm per voxel, in-plane
    path = ijk[:, [cols, rows]] * scale                                  # mm, in-plane
    radius = diameter_mm / 2.0
    centres = _resample(path, step=max(radius / 2.0, 1e-3))
    plane = np.zeros((size[rows], size[cols]), dtype=bool)
    reach = np.ceil(radius / scale).astype(int)
    for cx, cy in centres:
        i, j = int(round(cx / scale[0])), int(round(cy / scale[1]))
        c0, c1 = max(i - reach[0], 0), min(i + reach[0], size[cols] - 1)
        r0, r1 = max(j - reach[1], 0), min(j + reach[1], size[rows] - 1)
        if c0 > c1 or r0 > r1:
            continue                                    # this part of the stroke is outside the volume
        xs = np.arange(c0, c1 + 1) * scale[0] - cx
        ys = np.arange(r0, r1 + 1) * scale[1] - cy
        plane[r0:r1 + 1, c0:c1 + 1] |= (ys[:, None] ** 2 + xs[None, :] ** 2) <= radius ** 2
    if not plane.any():
        raise InputError("The stroke is outside the volume: paint over the image.")
    return axis, k, plane


def _resample(path: np.ndarray, step: float) -> np.ndarray:
    """Brush positions along the polyline ``path`` (N x 2, mm) at most ``step`` apart (at most MAX_SAMPLES)."""
    if len(path) == 1:
        return path
    lengths = np.linalg.norm(np.diff(path, axis=0), axis=1)
    total = float(lengths.sum())
    n = int(min(max(np.ceil(total / step), 1), MAX_SAMPLES - 1)) + 1
    along = np.concatenate([[0.0], np.cumsum(lengths)])
    at = np.linspace(0.0, total, n)
    return np.stack([np.interp(at, along, path[:, 0]), np.interp(at, along, path[:, 1])], axis=1)
