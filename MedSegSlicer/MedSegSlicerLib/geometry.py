"""All IJK <-> RAS math of the extension lives here, and nowhere else.

Conventions
-----------
* A volume node's voxels come out as a numpy array ``(K, J, I)`` (slice, row, column), the same order as
  SimpleITK's ``GetArrayFromImage`` and the backend.
* ``ijk_to_world`` is the 4x4 matrix that maps a voxel index ``(i, j, k, 1)`` (voxel centres at integer
  indices) to world RAS millimetres, **including** every linear parent transform of the node. Non-linear
  parent transforms are refused with an :class:`InputError` that says to harden the transform.
* Voxel boxes are ``(x0, y0, z0, x1, y1, z1)`` with x = I (column), y = J (row), z = K (slice), all inclusive,
  exactly what the backend expects.
* A voxel ``n`` covers the continuous index interval ``[n - 0.5, n + 0.5]``; a voxel belongs to an ROI when
  its centre lies inside the ROI (ties count as inside).
* Slicing axes, voxel boxes of masks, slice ranges and box prompts are the backend's
  (:mod:`medseg_backend.slicing`): this module only adds what needs MRML nodes.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from medseg_backend import slicing

from .errors import InputError, MedSegWarning

Box = Tuple[int, int, int, int, int, int]

_EPS = 1e-4  # voxel units: tolerance for "centre exactly on the ROI face"


# ----------------------------------------------------------------------------------------------------------
# vtkMatrix4x4 <-> numpy
# ----------------------------------------------------------------------------------------------------------
def matrix_to_numpy(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def numpy_to_matrix(array: np.ndarray):
    import vtk

    m = vtk.vtkMatrix4x4()
    a = np.asarray(array, dtype=float)
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r, c]))
    return m


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 homogeneous matrix to an (N, 3) array of points."""
    pts = np.atleast_2d(np.asarray(points, dtype=float))
    homo = np.c_[pts, np.ones(len(pts))]
    return (homo @ np.asarray(matrix, dtype=float).T)[:, :3]


# ----------------------------------------------------------------------------------------------------------
# Transforms
# ----------------------------------------------------------------------------------------------------------
def _node_label(node) -> str:
    try:
        return f"'{node.GetName()}'"
    except Exception:  # pragma: no cover - defensive
        return "the node"


def node_to_world(node) -> np.ndarray:
    """4x4 matrix from ``node``'s own coordinates to world, through all its parent transforms (linear only)."""
    if node is None:
        return np.eye(4)
    tnode = node.GetParentTransformNode() if hasattr(node, "GetParentTransformNode") else None
    if tnode is None:
        return np.eye(4)
    if not tnode.IsTransformToWorldLinear():
        raise InputError(
            f"{_node_label(node)} is under the non-linear transform '{tnode.GetName()}': harden the transform "
            "(Data module, right-click > Harden transform) or remove it, then run again.")
    import vtk

    m = vtk.vtkMatrix4x4()
    tnode.GetMatrixTransformToWorld(m)
    return matrix_to_numpy(m)


# ----------------------------------------------------------------------------------------------------------
# Volumes
# ----------------------------------------------------------------------------------------------------------
def check_scalar_volume(volume_node) -> None:
    """Raise :class:`InputError` unless ``volume_node`` is a scalar volume with voxels."""
    if volume_node is None:
        raise InputError("No volume selected: choose the source volume in the Segment Editor (or pass a volume "
                         "node) and run again.")
    if not volume_node.IsA("vtkMRMLScalarVolumeNode") or volume_node.IsA("vtkMRMLVectorVolumeNode") or \
            volume_node.IsA("vtkMRMLDiffusionWeightedVolumeNode"):
        raise InputError(f"{_node_label(volume_node)} is a {volume_node.GetClassName()}, not a scalar volume: "
                         "select a grey-level volume (convert vector/RGB volumes to scalar first).")
    image = volume_node.GetImageData()
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise InputError(f"Volume {_node_label(volume_node)} holds no voxels: load the image data first.")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"Volume {_node_label(volume_node)} has {image.GetNumberOfScalarComponents()} components "
                         "per voxel: convert it to a scalar volume (e.g. Vector to Scalar Volume module).")
    dims = image.GetDimensions()
    if min(dims) < 1 or dims[0] * dims[1] * dims[2] == 0:
        raise InputError(f"Volume {_node_label(volume_node)} is empty (dimensions {dims}): load a volume with voxels.")


def volume_ijk_to_node(volume_node) -> np.ndarray:
    """IJK-to-RAS of the volume in its own node coordinates (no parent transforms)."""
    import vtk

    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return matrix_to_numpy(m)


def volume_ijk_to_world(volume_node) -> np.ndarray:
    """IJK -> world RAS of the volume, including its linear parent transforms."""
    return node_to_world(volume_node) @ volume_ijk_to_node(volume_node)


def volume_shape(volume_node) -> Tuple[int, int, int]:
    """Array shape ``(K, J, I)`` of a volume node."""
    dims = volume_node.GetImageData().GetDimensions()
    return int(dims[2]), int(dims[1]), int(dims[0])


def image_to_array(image, copy: bool = True) -> np.ndarray:
    """vtkImageData scalars -> numpy ``(K, J, I)`` (a copy unless ``copy=False``)."""
    from vtk.util import numpy_support

    dims = image.GetDimensions()
    arr = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    arr = arr.reshape(dims[2], dims[1], dims[0])
    return arr.copy() if copy else arr


@dataclass
class VolumeData:
    """What the backend needs from a volume node: voxels + where they are."""

    array: np.ndarray            # (K, J, I), a copy: safe to hand to a worker thread
    ijk_to_world: np.ndarray     # 4x4, includes parent transforms
    node_id: str
    name: str

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)


def volume_to_array(volume_node) -> VolumeData:
    """Volume node -> :class:`VolumeData` (array copy + IJK-to-world including parent transforms)."""
    check_scalar_volume(volume_node)
    return VolumeData(array=image_to_array(volume_node.GetImageData(), copy=True),
                      ijk_to_world=volume_ijk_to_world(volume_node),
                      node_id=volume_node.GetID() or "", name=volume_node.GetName() or "")


# ----------------------------------------------------------------------------------------------------------
# Boxes
# ----------------------------------------------------------------------------------------------------------
def box_shape_xyz(shape_kji: Sequence[int]) -> Tuple[int, int, int]:
    return int(shape_kji[2]), int(shape_kji[1]), int(shape_kji[0])


def clip_box(box: Sequence[int], shape_kji: Sequence[int], *, what: str = "box") -> Box:
    """Clip an inclusive voxel box to a volume's grid; warn when clipped, :class:`InputError` when fully outside.

    Unlike :func:`medseg_backend.slicing.check_box` it accepts boxes flat in the slice plane (a UniverSeg ROI, a
    slab to write) and says that an ROI outside the volume may be in another coordinate frame (parent transform);
    box prompts are checked afterwards with ``slicing.check_box(..., each_side=True)``."""
    lo = np.asarray(box[:3], dtype=int)
    hi = np.asarray(box[3:], dtype=int)
    size = np.asarray(box_shape_xyz(shape_kji))
    slicing.check_box_order(box, f"The {what}")
    if np.any(hi < 0) or np.any(lo > size - 1):
        raise InputError(f"The {what} {tuple(int(v) for v in box)} lies outside the volume (voxels 0..{size[0] - 1}, "
                         f"0..{size[1] - 1}, 0..{size[2] - 1}): move it onto the volume, and check that it is "
                         "not in another coordinate frame (parent transform).")
    clo = np.maximum(lo, 0)
    chi = np.minimum(hi, size - 1)
    if np.any(clo != lo) or np.any(chi != hi):
        warnings.warn(f"The {what} extends beyond the volume: clipped to voxels "
                      f"{tuple(int(v) for v in clo)}-{tuple(int(v) for v in chi)}.", MedSegWarning, stacklevel=2)
    return tuple(int(v) for v in (*clo, *chi))


# ----------------------------------------------------------------------------------------------------------
# ROI markups
# ----------------------------------------------------------------------------------------------------------
def roi_object_to_world(roi_node) -> np.ndarray:
    """ROI box frame (centre at origin, axes along the box edges) -> world, including parent transforms."""
    object_to_node = matrix_to_numpy(roi_node.GetObjectToNodeMatrix())
    return node_to_world(roi_node) @ object_to_node


def roi_corners_world(roi_node) -> np.ndarray:
    """The 8 corners of an ROI markup in world RAS, (8, 3)."""
    half = np.asarray(roi_node.GetSize(), dtype=float) / 2.0
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    return apply(roi_object_to_world(roi_node), signs * half)


def _axis_misalignment_degrees(a: np.ndarray, b: np.ndarray) -> float:
    """Largest angle between the box axes of two frames (direction matrices, columns = axes), in degrees."""
    an = a / np.linalg.norm(a, axis=0)
    bn = b / np.linalg.norm(b, axis=0)
    cos = np.abs(an.T @ bn)  # 3x3; aligned frames have one 1 per row (any axis permutation)
    return float(np.degrees(np.arccos(np.clip(cos.max(axis=1).min(), -1.0, 1.0))))


def continuous_bounds_to_box(lo: np.ndarray, hi: np.ndarray) -> Box:
    """Continuous index bounds -> inclusive voxel box of the voxels whose centres are inside.

    When the region is thinner than a voxel between two centres, the nearest voxel is used (a flat ROI placed on a
    slice selects that slice).
    """
    ilo = np.ceil(lo - _EPS).astype(int)
    ihi = np.floor(hi + _EPS).astype(int)
    thin = ilo > ihi
    mid = np.floor((lo + hi) / 2.0 + 0.5).astype(int)
    ilo[thin] = mid[thin]
    ihi[thin] = mid[thin]
    return tuple(int(v) for v in (*ilo, *ihi))


def roi_to_voxel_box(roi_node, volume_node) -> Box:
    """ROI markup node -> inclusive voxel box on ``volume_node``'s grid.

    Both nodes may sit under (different) linear transforms; a rotated ROI gives the voxel-axis-aligned box around
    its corners (with a :class:`MedSegWarning`). Partly outside -> clipped with a warning; fully outside ->
    :class:`InputError`.
    """
    if roi_node is None:
        raise InputError("No ROI selected: create or pick an ROI (box) around the structure and run again.")
    check_scalar_volume(volume_node)
    if not roi_node.IsA("vtkMRMLMarkupsROINode"):
        raise InputError(f"{_node_label(roi_node)} is a {roi_node.GetClassName()}, not an ROI: pick an ROI markup.")
    size = np.asarray(roi_node.GetSize(), dtype=float)
    if np.any(size < 0) or not np.all(np.isfinite(size)):
        raise InputError(f"ROI {_node_label(roi_node)} has an invalid size {tuple(size)}: reset the ROI and place it again.")
    ijk_to_world = volume_ijk_to_world(volume_node)
    world_to_ijk = np.linalg.inv(ijk_to_world)
    corners = apply(world_to_ijk, roi_corners_world(roi_node))
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    angle = _axis_misalignment_degrees(roi_object_to_world(roi_node)[:3, :3], ijk_to_world[:3, :3])
    if angle > 1.0:
        warnings.warn(f"ROI {_node_label(roi_node)} is rotated {angle:.0f} degrees relative to the voxel grid of "
                      f"{_node_label(volume_node)}: using the voxel-aligned box that encloses it.",
                      MedSegWarning, stacklevel=2)
    box = continuous_bounds_to_box(lo, hi)
    return clip_box(box, volume_shape(volume_node), what=f"ROI {_node_label(roi_node)}")


def voxel_box_to_roi(roi_node, volume_node, box: Sequence[int]) -> None:
    """Place ``roi_node`` so that it encloses exactly the voxels of ``box`` (faces on voxel boundaries).

    The ROI is aligned with the volume's voxel axes and expressed in the ROI's own (possibly transformed) frame, so
    :func:`roi_to_voxel_box` returns ``box`` again.
    """
    check_scalar_volume(volume_node)
    b = np.asarray(box, dtype=float)
    centre_ijk = (b[:3] + b[3:]) / 2.0
    extent_vox = b[3:] - b[:3] + 1.0
    ijk_to_world = volume_ijk_to_world(volume_node)
    lin = ijk_to_world[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    axes_world = lin / spacing
    world_to_roi_node = np.linalg.inv(node_to_world(roi_node))
    axes_node = world_to_roi_node[:3, :3] @ axes_world
    scale = np.linalg.norm(axes_node, axis=0)
    axes_node = axes_node / scale
    if abs(abs(np.linalg.det(axes_node)) - 1.0) > 1e-3 or not np.allclose(axes_node.T @ axes_node, np.eye(3), atol=1e-3):
        raise InputError("The volume and ROI transforms include shear: harden the transforms, then fit the ROI again.")
    if np.linalg.det(axes_node) < 0:  # ROI frames must be right-handed: flip one axis (the box is symmetric)
        axes_node[:, 2] = -axes_node[:, 2]
    centre_node = apply(world_to_roi_node, apply(ijk_to_world, centre_ijk[None, :]))[0]
    object_to_node = np.eye(4)
    object_to_node[:3, :3] = axes_node
    object_to_node[:3, 3] = centre_node
    roi_node.SetAndObserveObjectToNodeMatrix(numpy_to_matrix(object_to_node))
    roi_node.SetSize(*(extent_vox * spacing * scale).tolist())


def default_box(shape_kji: Sequence[int], fraction: float = 0.33) -> Box:
    """A centred box covering ``fraction`` of each axis (starting point for a new ROI)."""
    size = np.asarray(box_shape_xyz(shape_kji))
    half = np.maximum((size * fraction / 2.0).astype(int), 0)
    centre = (size - 1) // 2
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half, size - 1)
    return tuple(int(v) for v in (*lo, *hi))


def voxel_spacing(volume_node) -> Tuple[float, float, float]:
    """Voxel size (x, y, z) in mm, from the volume's IJK-to-RAS matrix (parent transforms excluded)."""
    return tuple(float(v) for v in np.linalg.norm(volume_ijk_to_node(volume_node)[:3, :3], axis=0))


#: Depth of a box drawn on one slice, as a multiple of its longer in-plane side (see :func:`full_depth_box`).
DRAWN_DEPTH_FACTOR = 1.2


def full_depth_box(box: Sequence[int], axis: str, volume_node, *, factor: float = DRAWN_DEPTH_FACTOR) -> Box:
    """A box drawn on one slice (its extent along ``axis`` is the slice, or a thin slab) made deep enough for
    the structure: as deep, in millimetres, as ``factor`` x its longer in-plane side, centred on the drawn
    slice(s), clipped to the volume. Organs and lesions are roughly as tall as they are wide, so this covers
    most structures without a second view; a structure longer than that along ``axis`` (a kidney on axial slices)
    is covered by dragging the box's faces in another view."""
    a = slicing.BOX_INDEX[slicing.axis_index(axis)]
    shape = volume_shape(volume_node)
    b = list(clip_box(box, shape, what="ROI"))
    spacing = voxel_spacing(volume_node)
    in_plane = [(b[d + 3] - b[d] + 1) * spacing[d] for d in range(3) if d != a]
    depth_mm = factor * max(in_plane)
    slices = max(int(math.ceil(depth_mm / spacing[a])), b[a + 3] - b[a] + 1)
    centre = (b[a] + b[a + 3]) / 2.0
    lo = int(math.floor(centre - (slices - 1) / 2.0))
    hi = lo + slices - 1
    size = box_shape_xyz(shape)[a]
    b[a], b[a + 3] = max(lo, 0), min(hi, size - 1)
    return tuple(b)


# ----------------------------------------------------------------------------------------------------------
# A box drawn with the markups widget (Draw ROI): what the user drew, not Slicer's padding
# ----------------------------------------------------------------------------------------------------------
class RoiPlacement:
    """Watches a box ROI while the markups widget places it, and keeps its first corner.

    In place mode the widget defines two control points (two clicks). As soon as the second one is defined,
    ``vtkMRMLMarkupsROINode::UpdateBoxROIFromControlPoints`` (same code in Slicer 5.6 - 5.12, SLICER_API.md row
    R1) makes the box the two corners' bounding box, pads a zero side to the **shortest non-zero side**, and
    replaces both corners by one centre point: nothing in the finished node says whether its depth was drawn or
    padded. The first corner, recorded here when it is defined (the ROI still has no size then), tells:
    :func:`drawn_plane_normal`. ``stop()`` removes the observer.

    ``on_complete()`` is called once, when the second corner is defined and the box has its size: the end of the
    placement whatever the interaction mode does next (with *place persistence* on, the Markups toolbar keeps the
    interaction node in Place mode, so "the mode left Place" never comes)."""

    def __init__(self, roi_node, on_complete=None) -> None:
        import slicer

        self.roi = roi_node
        self.first: "np.ndarray | None" = None
        self.complete = False
        self._on_complete = on_complete
        self._tag = roi_node.AddObserver(slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self._defined)

    def _defined(self, caller, _event) -> None:
        sized = bool(np.any(np.asarray(caller.GetSize(), dtype=float)))
        if self.first is None and caller.GetNumberOfDefinedControlPoints() == 1 and not sized:
            for i in range(caller.GetNumberOfControlPoints()):
                if caller.GetNthControlPointPositionStatus(i) == caller.PositionDefined:
                    self.first = np.asarray(caller.GetNthControlPointPositionWorld(i), dtype=float)
                    return
        elif self.first is not None and sized and not self.complete:
            self.complete = True
            if self._on_complete is not None:
                self._on_complete()

    def stop(self) -> None:
        if self._tag is not None:
            self.roi.RemoveObserver(self._tag)
            self._tag = None


def drawn_plane_normal(roi_node, first_corner_world) -> "np.ndarray | None":
    """The world direction of the axis a box ROI was *not* drawn along (the normal of the slice it was drawn on),
    or None when it was not drawn on one plane (e.g. two clicks on surfaces of a 3-D view, or no corner recorded).

    A corner of a box drawn on one slice lies on a face of the finished box along both drawn axes and at its centre
    along the padded one (see :class:`RoiPlacement`)."""
    if first_corner_world is None or roi_node is None:
        return None
    size = np.asarray(roi_node.GetSize(), dtype=float)
    if not np.all(np.isfinite(size)) or np.count_nonzero(size) < 3:
        return None
    to_world = roi_object_to_world(roi_node)
    p = apply(np.linalg.inv(to_world), np.asarray(first_corner_world, dtype=float)[None, :])[0]
    tol = 1e-4 * float(size.max()) + 1e-6
    at_face = np.abs(np.abs(p) - size / 2.0) <= tol
    at_centre = (np.abs(p) <= tol) & ~at_face
    if int(at_face.sum()) != 2 or int(at_centre.sum()) != 1:
        return None
    normal = to_world[:3, int(np.argmax(at_centre))]
    return normal / np.linalg.norm(normal)


def placed_box(roi_node, volume_node, first_corner_world, *,
               factor: float = DRAWN_DEPTH_FACTOR) -> "Tuple[str, Box] | None":
    """The product's box for an ROI just placed with the markups widget: ``(axis, box)`` when it was drawn on one
    slice - the drawn rectangle, on the drawn slice, given the depth of :func:`full_depth_box` along the voxel axis
    closest to the drawing plane's normal (whatever size Slicer padded it to) - else None (keep the ROI as
    placed)."""
    normal = drawn_plane_normal(roi_node, first_corner_world)
    if normal is None:
        return None
    axis = axis_for_view_normal(volume_node, normal)
    a = slicing.BOX_INDEX[slicing.axis_index(axis)]
    with warnings.catch_warnings():          # Slicer's padded depth may leave the volume: it is replaced here
        warnings.simplefilter("ignore", MedSegWarning)
        box = list(roi_to_voxel_box(roi_node, volume_node))
    corner_ijk = apply(np.linalg.inv(volume_ijk_to_world(volume_node)), np.asarray(first_corner_world)[None, :])[0]
    k = int(np.floor(corner_ijk[a] + 0.5))
    box[a] = box[a + 3] = min(max(k, 0), box_shape_xyz(volume_shape(volume_node))[a] - 1)
    return axis, full_depth_box(box, axis, volume_node, factor=factor)


def axis_for_view_normal(volume_node, normal_ras: Sequence[float]) -> str:
    """The voxel axis name (``axial`` = k, ``coronal`` = j, ``sagittal`` = i, the backend's slicing axes) whose
    direction is closest to a view's normal: slicing "as the Red / Yellow / Green view shows it" becomes the
    right voxel axis also for a volume acquired sagittally or obliquely."""
    n = np.asarray(normal_ras, dtype=float)[:3]
    if not np.all(np.isfinite(n)) or np.linalg.norm(n) == 0:
        raise InputError("The slice view has no valid orientation: reset the view (Red, Yellow or Green).")
    directions = volume_ijk_to_world(volume_node)[:3, :3]
    directions = directions / np.linalg.norm(directions, axis=0, keepdims=True)
    cosines = np.abs(directions.T @ (n / np.linalg.norm(n)))        # per voxel axis i, j, k
    return ("sagittal", "coronal", "axial")[int(np.argmax(cosines))]


def axis_for_slice_node(volume_node, slice_node) -> str:
    """:func:`axis_for_view_normal` for a slice view (``vtkMRMLSliceNode``: its SliceToRAS third column)."""
    m = matrix_to_numpy(slice_node.GetSliceToRAS())
    return axis_for_view_normal(volume_node, m[:3, 2])


def slice_index_for_view(volume_node, slice_node, axis: str) -> int:
    """The voxel slice index along ``axis`` at the view's current position (its SliceToRAS origin)."""
    m = matrix_to_numpy(slice_node.GetSliceToRAS())
    ijk = apply(np.linalg.inv(volume_ijk_to_world(volume_node)), m[:3, 3][None, :])[0]
    a = slicing.BOX_INDEX[slicing.axis_index(axis)]
    size = box_shape_xyz(volume_shape(volume_node))[a]
    return int(min(max(int(round(ijk[a])), 0), size - 1))


def view_points_to_ijk(volume_node, slice_node, xys, what: str = "The box was drawn"):
    """Points of a slice view (its XY, pixels) in the volume's voxel coordinates, through the slice node's own
    XYToRAS and the volume's RAS -> IJK: ``(axis, k, ijk)`` with the voxel axis the view slices along and the slice
    ``k`` under the first point; :class:`InputError` (``what`` ...) when that slice is outside the volume."""
    xy_to_ras = matrix_to_numpy(slice_node.GetXYToRAS())
    points = np.array([[float(x), float(y), 0.0] for x, y in xys], dtype=float)
    ijk = apply(np.linalg.inv(volume_ijk_to_world(volume_node)), apply(xy_to_ras, points))
    axis = axis_for_slice_node(volume_node, slice_node)
    a = slicing.BOX_INDEX[slicing.axis_index(axis)]
    size = box_shape_xyz(volume_shape(volume_node))[a]
    k = int(np.floor(ijk[0][a] + 0.5))
    if not 0 <= k < size:
        raise InputError(f"{what} outside the volume (slice {k} of 0-{size - 1} along {axis}): use a slice that "
                         "shows the volume.")
    return axis, k, ijk


def voxel_volume_ml(volume_node) -> float:
    """Volume of one voxel of ``volume_node`` in millilitres."""
    return abs(float(np.linalg.det(volume_ijk_to_node(volume_node)[:3, :3]))) / 1000.0


def mask_volume_ml(mask: np.ndarray, volume_node) -> float:
    """Volume of a (K, J, I) mask on ``volume_node``'s grid in millilitres."""
    return float(np.count_nonzero(mask)) * voxel_volume_ml(volume_node)


# ----------------------------------------------------------------------------------------------------------
# Grids of images (segmentation labelmaps)
# ----------------------------------------------------------------------------------------------------------
def volume_ijk_to_frame(volume_node, frame_node) -> np.ndarray:
    """Volume IJK -> coordinates of ``frame_node`` (e.g. a segmentation node under another transform)."""
    return np.linalg.inv(node_to_world(frame_node)) @ volume_ijk_to_world(volume_node)


def grids_match(a: np.ndarray, b: np.ndarray, tol: float = 1e-4) -> bool:
    return bool(np.allclose(np.asarray(a), np.asarray(b), atol=tol, rtol=0))
