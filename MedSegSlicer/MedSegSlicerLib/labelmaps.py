"""Segments <-> numpy arrays on a volume's voxel grid (through vtkOrientedImageData), and writing masks back.

Reading: a segment (any segmentation geometry, any linear transform) is resampled (nearest neighbour) onto the
voxel grid of a volume node, giving a ``(K, J, I)`` uint8 array (:func:`segment_to_array`).

Writing, three ways:

* :func:`write_mask` - straight into a new or existing segment (``replace`` or ``add``); used by the scripted
  Logic for batch work;
* :func:`modifier_labelmap` - a mask as the Segment Editor's modifier labelmap, for the effects' Apply
  (:func:`.editing.apply_result`: the editor's own modify-segment path, so editable area, intensity masking and
  overwrite settings apply, after an undo state is saved);
* :func:`write_masks` - several masks, all or none (the scripted Logic's batch calls).

All matrix work is delegated to :mod:`.geometry`; segment lookup and the write checks are in :mod:`.segments`.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import geometry, terminology
from .errors import InputError, MedSegWarning
from .segments import add_segment, check_segment_writable, check_segmentation, check_write_targets, get_segment


def _slicer():
    import slicer  # slicer-core (headless) or the Slicer application: both provide the classes used here

    return slicer


def check_mask(mask: np.ndarray, volume_node) -> np.ndarray:
    shape = geometry.volume_shape(volume_node)
    m = np.asarray(mask)
    if m.shape != shape:
        raise InputError(f"The mask has shape {m.shape} but volume '{volume_node.GetName()}' has {shape}: "
                         "masks must be on the volume's voxel grid (K, J, I).")
    return (m > 0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------
# Oriented images
# ----------------------------------------------------------------------------------------------------------
def image_from_block(block: np.ndarray, ijk_to_frame: np.ndarray, extent: Sequence[int]):
    """A (K, J, I) block covering ``extent`` = (i0, i1, j0, j1, k0, k1) -> vtkOrientedImageData (index -> frame
    coordinates through ``ijk_to_frame``)."""
    slicer = _slicer()
    from vtk.util import numpy_support

    i0, i1, j0, j1, k0, k1 = (int(v) for v in extent)
    block = np.ascontiguousarray(block)
    if block.shape != (k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1):
        raise ValueError(f"block shape {block.shape} does not match extent {tuple(extent)}")
    image = slicer.vtkOrientedImageData()
    image.SetExtent(i0, i1, j0, j1, k0, k1)
    image.SetImageToWorldMatrix(geometry.numpy_to_matrix(ijk_to_frame))
    vtk_array = numpy_support.numpy_to_vtk(block.ravel(), deep=True,
                                           array_type=numpy_support.get_vtk_array_type(block.dtype))
    image.GetPointData().SetScalars(vtk_array)
    return image


def oriented_image_from_array(array: np.ndarray, ijk_to_frame: np.ndarray, extent: Optional[Sequence[int]] = None):
    """numpy (K, J, I) -> vtkOrientedImageData whose index (0,0,0) maps through ``ijk_to_frame``.

    With ``extent`` = (i0, i1, j0, j1, k0, k1) only that part of the array is copied (indices stay the grid's).
    """
    K, J, I = array.shape
    if extent is None:
        extent = (0, I - 1, 0, J - 1, 0, K - 1)
    i0, i1, j0, j1, k0, k1 = (int(v) for v in extent)
    return image_from_block(array[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1], ijk_to_frame, extent)


def reference_grid_image(volume_node, frame_node):
    """A geometry-only vtkOrientedImageData: the volume's voxel grid expressed in ``frame_node``'s coordinates."""
    slicer = _slicer()
    K, J, I = geometry.volume_shape(volume_node)
    image = slicer.vtkOrientedImageData()
    image.SetExtent(0, I - 1, 0, J - 1, 0, K - 1)
    image.SetImageToWorldMatrix(geometry.numpy_to_matrix(geometry.volume_ijk_to_frame(volume_node, frame_node)))
    return image


def _array_in_extent(image, full_extent: Sequence[int]) -> np.ndarray:
    """Scalars of ``image`` placed into a zero array covering ``full_extent`` (extents on the same grid)."""
    fi0, fi1, fj0, fj1, fk0, fk1 = full_extent
    out = np.zeros((fk1 - fk0 + 1, fj1 - fj0 + 1, fi1 - fi0 + 1), dtype=np.uint8)
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        return out
    e = image.GetExtent()
    if e[0] > e[1] or e[2] > e[3] or e[4] > e[5]:
        return out
    data = geometry.image_to_array(image, copy=False)
    lo = [max(e[0], fi0), max(e[2], fj0), max(e[4], fk0)]
    hi = [min(e[1], fi1), min(e[3], fj1), min(e[5], fk1)]
    if any(l > h for l, h in zip(lo, hi)):
        return out
    src = data[lo[2] - e[4]:hi[2] - e[4] + 1, lo[1] - e[2]:hi[1] - e[2] + 1, lo[0] - e[0]:hi[0] - e[0] + 1]
    out[lo[2] - fk0:hi[2] - fk0 + 1, lo[1] - fj0:hi[1] - fj0 + 1, lo[0] - fi0:hi[0] - fi0 + 1] = (src > 0)
    return out


def resample_to_reference(image, reference):
    """Nearest-neighbour resampling of ``image`` onto ``reference``'s grid; returns uint8 (K, J, I) of the
    reference extent. Both images must be in the same coordinate frame."""
    slicer = _slicer()
    ref_extent = reference.GetExtent()
    e = image.GetExtent()
    if e[0] > e[1] or e[2] > e[3] or e[4] > e[5]:
        return _array_in_extent(None, ref_extent)
    if slicer.vtkOrientedImageDataResample.DoGeometriesMatch(image, reference):
        return _array_in_extent(image, ref_extent)
    out = slicer.vtkOrientedImageData()
    ok = slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        image, reference, out, False, False)
    if not ok:
        raise InputError("Could not resample the segmentation onto the volume grid: check that the segmentation "
                         "and the volume overlap and are not under a non-linear transform.")
    return _array_in_extent(out, ref_extent)


# ----------------------------------------------------------------------------------------------------------
# Reading segments
# ----------------------------------------------------------------------------------------------------------
def segment_to_array(segmentation_node, segment_id: str, volume_node) -> np.ndarray:
    """One segment as a uint8 0/1 array on ``volume_node``'s voxel grid (resampled and transformed as needed)."""
    slicer = _slicer()
    segment = get_segment(segmentation_node, segment_id)
    geometry.check_scalar_volume(volume_node)
    labelmap = slicer.vtkOrientedImageData()
    name = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    if not segmentation_node.GetSegmentation().ContainsRepresentation(name):
        segmentation_node.GetSegmentation().CreateRepresentation(name)
    if not segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap):
        raise InputError(f"Segment '{segment.GetName()}' has no labelmap representation: convert the segmentation "
                         "to binary labelmap (Segmentations module) and run again.")
    # both grids expressed in the segmentation node's own coordinates
    reference = reference_grid_image(volume_node, segmentation_node)
    return resample_to_reference(labelmap, reference)


# ----------------------------------------------------------------------------------------------------------
# Writing segments
# ----------------------------------------------------------------------------------------------------------
def ensure_reference_geometry(segmentation_node, volume_node) -> None:
    """Give an empty segmentation the volume's grid (in the segmentation's frame), so writes are voxel-exact."""
    slicer = _slicer()
    seg = segmentation_node.GetSegmentation()
    param = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    current = seg.GetConversionParameter(param)
    if seg.GetNumberOfSegments() == 0 or not current:
        if geometry.grids_match(geometry.node_to_world(segmentation_node), geometry.node_to_world(volume_node)):
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        else:
            ref = reference_grid_image(volume_node, segmentation_node)
            seg.SetConversionParameter(param, slicer.vtkSegmentationConverter.SerializeImageGeometry(ref))
    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()


def onto_segmentation_grid(segmentation_node, image, volume_node):
    """``image`` (a mask on ``volume_node``'s grid, in the segmentation's frame) resampled (nearest neighbour, the
    extent grown to hold all of it) onto the segmentation's own geometry when that differs from the volume's grid,
    as the Segment Editor does: written as it is, it would make Slicer resample the segmentation's shared labelmap,
    changing the other segments. Warns when the segmentation's grid is coarser (the result loses detail)."""
    slicer = _slicer()
    text = segmentation_node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    reference = slicer.vtkOrientedImageData()
    if not text or not slicer.vtkSegmentationConverter.DeserializeImageGeometry(text, reference, False):
        return image
    if slicer.vtkOrientedImageDataResample.DoGeometriesMatch(image, reference):
        return image
    out = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            image, reference, out, False, True):
        raise InputError(f"Could not resample the result onto the grid of segmentation "
                         f"'{segmentation_node.GetName()}': check that it and the volume overlap.")
    ours, theirs = np.asarray(image.GetSpacing(), float), np.asarray(reference.GetSpacing(), float)
    if np.prod(theirs) > 1.01 * np.prod(ours):
        def mm(values) -> str:
            return " x ".join(f"{v:.3g}" for v in values)
        warnings.warn(f"Segmentation '{segmentation_node.GetName()}' has its own grid ({mm(theirs)} mm voxels), "
                      f"coarser than volume '{volume_node.GetName()}' ({mm(ours)} mm): the result was resampled onto "
                      "it, as the Segment Editor does, and lost detail; to keep the volume's detail, set the "
                      "segmentation's geometry from the volume first (Segment Editor: Specify geometry).",
                      MedSegWarning, stacklevel=3)
    return out


def write_mask(segmentation_node, mask: np.ndarray, volume_node, *, segment_id: Optional[str] = None,
               name: Optional[str] = None, color: Optional[Sequence[float]] = None, mode: str = "replace",
               allow_hidden: bool = True) -> str:
    """Write a (K, J, I) mask on ``volume_node``'s grid into a segment; returns the segment ID.

    ``segment_id=None`` adds a new segment (``name``, ``color``; ``name`` may be a :class:`.terminology.Structure`:
    its standard name, colour and terminology tag). ``mode``: ``replace`` (the segment becomes the
    mask) or ``add`` (union with what is there). Other segments are not modified. Nothing is written when a
    check fails.
    """
    slicer = _slicer()
    check_segmentation(segmentation_node)
    geometry.check_scalar_volume(volume_node)
    if mode not in ("replace", "add"):
        raise InputError(f"Unknown write mode '{mode}': use replace or add.")
    binary = check_mask(mask, volume_node)
    ijk_to_frame = geometry.volume_ijk_to_frame(volume_node, segmentation_node)  # may raise: before any change
    if segment_id is not None:
        check_segment_writable(segmentation_node, segment_id, allow_hidden=allow_hidden)
    ensure_reference_geometry(segmentation_node, volume_node)
    structure = name if isinstance(name, terminology.Structure) else None
    if structure is not None:
        name = structure.name
    if segment_id is None:
        segment_id = add_segment(segmentation_node, name or "Segment", color)
        if structure is not None:
            terminology.apply_to_segment(get_segment(segmentation_node, segment_id), structure)
    else:
        segment = get_segment(segmentation_node, segment_id)
        if name:
            segment.SetName(name)
        if color is not None:
            segment.SetColor(*[float(c) for c in color[:3]])
    K, J, I = binary.shape
    image = oriented_image_from_array(binary, ijk_to_frame, (0, I - 1, 0, J - 1, 0, K - 1))
    image = onto_segmentation_grid(segmentation_node, image, volume_node)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    merge = logic.MODE_REPLACE if mode == "replace" else logic.MODE_MERGE_MAX
    if not logic.SetBinaryLabelmapToSegment(image, segmentation_node, segment_id, merge, None):
        raise InputError(f"Could not write the mask into segment '{segment_id}': check that the segmentation uses "
                         "binary labelmap as source representation.")
    return segment_id


def write_masks(segmentation_node, volume_node, items: Sequence[Tuple[np.ndarray, Optional[str], Optional[str]]], *,
                mode: str = "replace", allow_hidden: bool = True, slab=None) -> List[str]:
    """Write several masks - ``items`` = (mask, segment ID or None for a new segment, name) - all or none.

    Everything is checked first (targets exist and are writable, masks on the volume grid, no empty mask in
    replace mode, transforms usable); if a write still fails, segments added by this call are removed and
    replaced segments are restored, so the segmentation is as before. ``slab`` (an inclusive voxel box, the
    slices a run covered; or one such box per item): an existing segment is replaced inside it only and kept as
    it was outside it (a re-run on a sub-range never erases the rest). Returns the segment IDs."""
    slicer = _slicer()
    check_segmentation(segmentation_node)
    geometry.check_scalar_volume(volume_node)
    if mode not in ("replace", "add"):
        raise InputError(f"Unknown write mode '{mode}': use replace or add.")
    check_write_targets(segmentation_node, [sid for _, sid, _ in items], allow_hidden=allow_hidden)
    geometry.volume_ijk_to_frame(volume_node, segmentation_node)
    binaries = []
    slabs = [slab] * len(items) if slab is None or np.ndim(slab[0]) == 0 else list(slab)
    for n, ((mask, sid, name), item_slab) in enumerate(zip(items, slabs), start=1):
        binary = check_mask(mask, volume_node)
        if mode == "replace" and sid is not None and item_slab is not None:
            x0, y0, z0, x1, y1, z1 = (int(v) for v in item_slab)
            inside = np.zeros(binary.shape, bool)
            inside[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1] = True
            binary = np.where(inside, binary, segment_to_array(segmentation_node, sid, volume_node)).astype(np.uint8)
        if mode == "replace" and sid is not None and not binary.any():
            label = getattr(name, "name", name) or get_segment(segmentation_node, sid).GetName()
            raise InputError(f"The result for '{label}' is empty: nothing was written (replacing the segment with "
                             "it would only erase it). Check the box and run again.")
        binaries.append(binary)
    seg = segmentation_node.GetSegmentation()
    saved = {}
    for _, sid, _ in items:
        if sid is not None and sid not in saved:
            copy = slicer.vtkSegment()
            copy.DeepCopy(seg.GetSegment(sid))
            saved[sid] = copy
    added: List[str] = []
    written: List[str] = []
    try:
        for binary, (_, sid, name) in zip(binaries, items):
            new_id = write_mask(segmentation_node, binary, volume_node, segment_id=sid, name=name, mode=mode,
                                allow_hidden=allow_hidden)
            if sid is None:
                added.append(new_id)
            written.append(new_id)
    except Exception:
        for sid in added:
            seg.RemoveSegment(sid)
        for sid, copy in saved.items():
            segment = seg.GetSegment(sid)
            if segment is not None:
                segment.DeepCopy(copy)
        segmentation_node.Modified()
        raise
    return written


# ----------------------------------------------------------------------------------------------------------
# Segment Editor path
# ----------------------------------------------------------------------------------------------------------
def modifier_labelmap(mask: np.ndarray, volume_node, segmentation_node, reference=None):
    """The mask as a modifier labelmap for ``modifySelectedSegmentByLabelmap`` / ``ModifySegmentByLabelmap``.

    It is expressed in the segmentation's coordinates; with ``reference`` (the editor's default modifier labelmap)
    it is resampled onto that grid, which intensity masking requires.
    """
    check_segmentation(segmentation_node)
    binary = check_mask(mask, volume_node)
    image = oriented_image_from_array(binary, geometry.volume_ijk_to_frame(volume_node, segmentation_node))
    if reference is None:
        return image
    slicer = _slicer()
    if slicer.vtkOrientedImageDataResample.DoGeometriesMatch(image, reference) and \
            tuple(image.GetExtent()) == tuple(reference.GetExtent()):
        return image
    resampled = resample_to_reference(image, reference)
    m = geometry.numpy_to_matrix(np.eye(4))
    reference.GetImageToWorldMatrix(m)
    return image_from_block(resampled, geometry.matrix_to_numpy(m), reference.GetExtent())
