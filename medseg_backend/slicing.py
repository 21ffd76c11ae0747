"""The one slicing model: volume axes, voxel boxes, and how a 3-D box becomes a box on each slice.

Everything that cuts a volume into slices or handles a box calls this module (the MedSAM engine, the
UniverSeg pipeline and its support sets, the CLI, the worker, and the Slicer layer, which imports it because it
needs neither torch nor Slicer). Conventions, used everywhere:

* Volumes are numpy arrays in SimpleITK order ``(K, J, I)``: slice, row, column of the axial view.
* A 3-D box is ``(x0, y0, z0, x1, y1, z1)``: voxel indices, inclusive, with ``x`` along ``I`` (the last array
  axis), ``y`` along ``J`` and ``z`` along ``K``. A 2-D box is ``(x0, y0, x1, y1)``: ``x`` is the column, ``y``
  the row.
* The slicing axis is named ``axial`` (slices along ``K``), ``coronal`` (along ``J``) or ``sagittal`` (along
  ``I``). :func:`to_slices` gives a view whose first axis is the slicing axis; in it a slice's columns and rows
  are the box coordinates that :func:`project_box` returns.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .choices import AXES, DEFAULT_AXIS
from .errors import InputError, MedSegWarning

Box2D = Tuple[int, int, int, int]
Box3D = Tuple[int, int, int, int, int, int]

# Volume axis order (in the slice view) per slicing axis: slice axis first, then rows, then columns.
PERMUTATIONS = {0: (0, 1, 2), 1: (1, 0, 2), 2: (2, 0, 1)}
# Position of the slicing axis in a 3-D box's lower corner (x0, y0, z0): axial slices run along z.
BOX_INDEX = {0: 2, 1: 1, 2: 0}
# The two box coordinates (columns, rows) of the slice plane, per slicing axis.
PLANE_COORDS = {0: (0, 1), 1: (0, 2), 2: (1, 2)}
_COORD_NAMES = ("x (columns)", "y (rows)", "z (slices)")


def axis_index(axis: Union[str, int, None]) -> int:
    """Array axis (0 = K, 1 = J, 2 = I) of a slicing axis given by name (``axial``, ``coronal``, ``sagittal``)
    or by index; :class:`InputError` names the choices otherwise."""
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
        if int(axis) in (0, 1, 2):
            return int(axis)
    else:
        key = str(axis or DEFAULT_AXIS).strip().lower()
        if key in AXES:
            return AXES[key]
    raise InputError(f"Unknown axis '{axis}': use axial (along K), coronal (along J) or sagittal (along I).")


def axis_name(axis: Union[str, int]) -> str:
    ax = axis_index(axis)
    return next(name for name, i in AXES.items() if i == ax)


def to_slices(volume: np.ndarray, axis: Union[str, int]) -> np.ndarray:
    """A view of ``volume`` (K, J, I) whose first axis is the slicing axis (no copy)."""
    return np.transpose(volume, PERMUTATIONS[axis_index(axis)])


def from_slices(work: np.ndarray, axis: Union[str, int]) -> np.ndarray:
    """Inverse of :func:`to_slices`: a contiguous array back in (K, J, I) order."""
    return np.ascontiguousarray(np.transpose(work, np.argsort(PERMUTATIONS[axis_index(axis)])))


def take_slice(volume: np.ndarray, axis: Union[str, int], k: int) -> np.ndarray:
    """Slice ``k`` of ``volume`` along the slicing axis, rows and columns as in :func:`to_slices`."""
    return to_slices(volume, axis)[int(k)]


# ----------------------------------------------------------------------------------------------------------
# Boxes
# ----------------------------------------------------------------------------------------------------------
def check_box(box: Sequence[int], shape: Sequence[int], *, what: str = "Box", axis: Union[str, int] = 0,
              each_side: bool = False) -> Tuple[int, ...]:
    """Validate an inclusive voxel box against an array shape and clip it; return the clipped box.

    ``shape`` is (H, W) for 2-D boxes (x0, y0, x1, y1) or (K, J, I) for 3-D boxes (x0, y0, z0, x1, y1, z1);
    ``axis`` (3-D) is the slicing axis. Inverted boxes, boxes wholly outside and empty boxes (a single pixel in
    every slice they cut, also after clipping) are :class:`InputError`; a box partly outside is clipped with a
    :class:`MedSegWarning`. ``each_side=True`` is the rule for a drawn ROI: it must be at least 2 voxels across
    in both directions of the slice plane (a one-voxel-wide ROI is a mis-drawn box, and written back it would
    replace the segment with nothing).
    """
    box = tuple(int(v) for v in box)  # plain ints in messages (no numpy reprs)
    nd = len(box) // 2
    if nd not in (2, 3) or len(box) != 2 * nd or len(shape) < nd:
        form = "x0,y0,x1,y1" if len(shape) == 2 else "x0,y0,z0,x1,y1,z1"
        raise InputError(f"{what} {box} has {len(box)} numbers for a {len(shape)}-D image: give {form} "
                         "(voxel indices, inclusive).")
    check_box_order(box, what)
    lo, hi = list(box[:nd]), list(box[nd:])
    sizes = [int(n) for n in reversed(tuple(shape)[-nd:] if nd == 2 else tuple(shape))][:nd]
    names = "xyz"[:nd]
    for a in range(nd):
        if hi[a] < 0 or lo[a] > sizes[a] - 1:
            raise InputError(f"{what} {box} lies outside the image along {names[a]} (valid 0..{sizes[a] - 1}): "
                             "draw the box over the structure.")
    clipped = [max(0, v) for v in lo] + [min(sizes[a] - 1, hi[a]) for a in range(nd)]
    was_clipped = clipped != list(box)
    plane = (0, 1) if nd == 2 else PLANE_COORDS[axis_index(axis)]
    after = f" after clipping to the image ({tuple(clipped)})" if was_clipped else ""
    if each_side:
        for a in plane:
            width = clipped[nd + a] - clipped[a] + 1
            if width < 2:
                raise InputError(f"{what} {box} is {width} voxel wide along {_COORD_NAMES[a]} (voxels "
                                 f"{clipped[a]}-{clipped[nd + a]}){after}: a box prompt must enclose the structure "
                                 "in the slice view - drag the ROI's handles to make it larger, or draw it again.")
    elif all(clipped[a] == clipped[nd + a] for a in plane):
        kind = "a single voxel" if nd == 3 and all(clipped[a] == clipped[nd + a] for a in range(3)) else \
            ("a single pixel" if nd == 2 else "a single pixel in each slice")
        raise InputError(f"{what} {box} is empty: it covers {kind}{after}, so there is nothing to segment; "
                         f"draw a box around the structure (at least 2 pixels wide or high"
                         f"{' in the slice plane' if nd == 3 else ''}).")
    if was_clipped:
        warnings.warn(f"{what} {box} extends beyond the image {tuple(sizes)}: clipped to {tuple(clipped)}.",
                      MedSegWarning, stacklevel=2)
    return tuple(clipped)


def check_box_order(box: Sequence[int], what: str = "Box") -> None:
    """An inclusive box (x0, y0[, z0], x1, y1[, z1]) must start where it ends or before, along every axis: an
    inverted box is :class:`InputError` (the one message, for the run spec and :func:`check_box`)."""
    box = tuple(int(v) for v in box)
    nd = len(box) // 2
    for a in range(nd):
        if box[nd + a] < box[a]:
            raise InputError(f"{what} {box} is inverted along {'xyz'[a]} ({box[a]} > {box[nd + a]}): give the "
                             f"smaller index first (x0,y0{',z0' if nd == 3 else ''} then "
                             f"x1,y1{',z1' if nd == 3 else ''}).")


def project_box(box: Sequence[int], axis: Union[str, int]) -> Tuple[int, int, Box2D]:
    """A 3-D box -> (first slice, last slice, 2-D box (x0, y0, x1, y1) in the slice view of :func:`to_slices`)."""
    ax = axis_index(axis)
    b = [int(v) for v in box]
    s = BOX_INDEX[ax]
    c, r = PLANE_COORDS[ax]
    return b[s], b[s + 3], (b[c], b[r], b[c + 3], b[r + 3])


def with_slices(box: Sequence[int], axis: Union[str, int], first: int, last: int) -> Box3D:
    """A 3-D box whose slices along the slicing ``axis`` are ``first..last`` (inclusive), the rest as in ``box``."""
    b = [int(v) for v in box]
    a = BOX_INDEX[axis_index(axis)]
    b[a], b[a + 3] = int(first), int(last)
    return tuple(b)


def restrict_box(box: Sequence[int], axis: Union[str, int], first: Optional[int], last: Optional[int]) -> Box3D:
    """Limit a 3-D box along the slicing ``axis`` to slices ``first..last`` (inclusive; ``None`` = no limit)."""
    b = [int(v) for v in box]
    a = BOX_INDEX[axis_index(axis)]
    if first is not None:
        b[a] = max(b[a], int(first))
    if last is not None:
        b[a + 3] = min(b[a + 3], int(last))
    if b[a] > b[a + 3]:
        raise InputError(f"The slice range {first}-{last} does not overlap the box ({int(box[a])}-{int(box[a + 3])} "
                         f"along the {axis_name(axis)} axis): widen the slice range or move the ROI.")
    return tuple(b)


def bbox2d(mask: np.ndarray) -> Optional[Box2D]:
    """Tight inclusive box (x0, y0, x1, y1) of the non-zero pixels of a 2-D mask, or None when it is empty."""
    m = np.asarray(mask) != 0
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def bbox3d(mask: np.ndarray, margin: int = 0) -> Optional[Box3D]:
    """Inclusive box (x0, y0, z0, x1, y1, z1) of the non-zero voxels of a (K, J, I) mask, widened by ``margin``
    voxels on every side and clipped to the grid; None when the mask is empty."""
    m = np.asarray(mask) != 0
    nz = [np.flatnonzero(m.any(axis=tuple(o for o in range(3) if o != a))) for a in range(3)]
    if nz[0].size == 0:
        return None
    K, J, I = m.shape
    (k0, k1), (j0, j1), (i0, i1) = ((int(n[0]) - margin, int(n[-1]) + margin) for n in nz)
    return (max(i0, 0), max(j0, 0), max(k0, 0), min(i1, I - 1), min(j1, J - 1), min(k1, K - 1))


def labelled_slices(label: np.ndarray, axis: Union[str, int], value: Optional[int] = None) -> np.ndarray:
    """Indices of the slices along ``axis`` that hold ``value`` (any non-zero label when ``value`` is None)."""
    lab = np.asarray(label)
    m = lab != 0 if value is None else lab == value
    ax = axis_index(axis)
    return np.flatnonzero(m.any(axis=tuple(a for a in range(m.ndim) if a != ax)))


def keep_slices(prediction: np.ndarray, label: np.ndarray, axis: Union[str, int], slices=None) -> np.ndarray:
    """A binary (uint8) prediction in which the given slices of ``label`` (default: every labelled slice) are
    copied exactly: the user's own drawing stays as drawn, the rest is predicted."""
    out = (np.asarray(prediction) > 0).astype(np.uint8)
    work, lab = to_slices(out, axis), to_slices(np.asarray(label), axis)
    for k in (labelled_slices(label, axis) if slices is None else slices):
        work[int(k)] = lab[int(k)] > 0
    return out


#: ``adaptive`` propagation may start within the middle slice +- a box's depth // START_DIVISOR (its middle third).
START_DIVISOR = 6


def middle_slice(first: int, last: int) -> int:
    """Where a propagation over slices first..last starts (the official LiteMedSAM rule
    ``int((last - first) / 2 + first)``; ``adaptive`` may move off it within :func:`start_window`)."""
    return int((last - first) / 2 + first)


def start_window(first: int, last: int) -> List[int]:
    """The slices ``adaptive`` propagation may start from: the middle third of first..last (the middle slice +- the
    depth // :data:`START_DIVISOR`; only the middle slice for boxes under 6 slices)."""
    mid, half = middle_slice(first, last), (last - first + 1) // START_DIVISOR
    return [k for k in range(mid - half, mid + half + 1) if first <= k <= last]
