"""Reading images: a 2-D image, a 3-D volume file (NRRD, NIfTI, MHA...) or a DICOM series, checked, with its
geometry; arrays no model can use are refused; a label map on another grid than its image is refused.

Arrays are in SimpleITK order: a volume is ``(K, J, I)`` = (slice z, row y, column x); a 2-D image is
``(H, W)`` or ``(H, W, 3)`` for RGB. Voxel boxes everywhere in the backend use x = column, y = row,
z = slice, inclusive."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InputError
from ..errors import clip_text as _clip_text
from .completeness import check_complete
from .dicom import NO_SERIES_CHOICE, pick_series
from .formats import IMAGE_2D_EXTENSIONS, PICTURE_EXTENSIONS, _has_ext, _sitk
from .geometry import Geometry
from .nifti import NiftiTransforms, check_qform_sform


@dataclass
class LoadedImage:
    array: np.ndarray
    geometry: Geometry
    path: str
    is_rgb: bool

    @property
    def is_volume(self) -> bool:
        return self.array.ndim == 3 and not self.is_rgb


def read_image(path: str, *, allow_rgb_volume: bool = False, label: bool = False,
               series: Optional[str] = NO_SERIES_CHOICE) -> LoadedImage:
    """Read a 2-D image or a 3-D volume (file or DICOM folder). Raises :class:`InputError` on any problem.
    ``label=True``: a label map, which may be constant (an example without the structure is all 0).
    ``series``: in a DICOM folder holding several series, the one to read (its UID or its number as listed in
    the error that names them); a folder with several series and no ``series`` is refused (saying ``--series``
    picks one when the caller passes ``series``, even None)."""
    sitk = _sitk()
    p = Path(path)
    if not p.exists():
        raise InputError(f"Image not found: {path}: check the path (volume file, 2-D image or DICOM folder).")
    if series not in (None, NO_SERIES_CHOICE) and not p.is_dir():
        raise InputError(f"--series picks a series of a DICOM folder, but {path} is a file: drop --series or give "
                         "the folder.")
    header = None
    try:
        if p.is_dir():
            reader = sitk.ImageSeriesReader()
            found = reader.GetGDCMSeriesIDs(str(p))
            if not found:
                raise InputError(f"No DICOM series in folder {path}: point to a folder of .dcm files of one "
                                 "series, or to a volume file.")
            reader.SetFileNames(pick_series(sitk, reader, str(path), found, series))
            img = reader.Execute()
        else:
            if not os.access(str(p), os.R_OK):
                raise InputError(f"Cannot read {path}: permission denied; make the file readable (or copy it) and "
                                 "try again.")
            header = check_complete(str(p))
            img = sitk.ReadImage(str(p))
    except InputError:
        raise
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[-1] if first else "unknown reason"
        if "No such file or directory" in detail or "Could not open" in detail or "Can't open" in detail:
            detail = "the file is incomplete or damaged"
        raise InputError(f"Cannot read {path} as an image ({_clip_text(detail, 120)}): use PNG, JPEG, TIFF, NRRD, "
                         "NIfTI, MHA or a DICOM folder, and check that the file is complete.") from None
    ncomp = img.GetNumberOfComponentsPerPixel()
    dim = img.GetDimension()
    array = _array_of(sitk, img)
    geometry = Geometry.from_sitk(img)
    nifti = NiftiTransforms.parse(header) if header else None
    if nifti is not None and nifti.dims == tuple(img.GetSize()):
        check_qform_sform(str(path), nifti, img)
        geometry = Geometry(geometry.spacing, geometry.origin, geometry.direction, nifti)
    if dim == 3 and array.ndim == 3 and array.shape[0] == 1 and ncomp == 1 and _has_ext(path, IMAGE_2D_EXTENSIONS):
        array = array[0]
        geometry = geometry.slice2d(0)
        dim = 2
    is_rgb = False
    if ncomp > 1:
        if ncomp == 4 and dim == 2:  # RGBA: drop alpha
            array = array[..., :3]
            ncomp = 3
        if ncomp != 3:
            raise InputError(f"{path} has {ncomp} components per pixel: give a grey or RGB image.")
        if dim == 3:
            if not allow_rgb_volume:
                raise InputError(f"{path} is an RGB volume: convert it to a grey-level volume first "
                                 "(e.g. luminance) or give one RGB slice as a 2-D image.")
        is_rgb = True
    if dim > 3 or array.ndim > (4 if is_rgb else 3):
        raise InputError(f"{path} is a {dim}-D image: give a 2-D image or a 3-D volume "
                         "(extract one time point / channel first).")
    loaded = LoadedImage(array=array, geometry=geometry, path=str(path), is_rgb=is_rgb)
    validate_array(loaded.array, name=str(path), allow_constant=label)
    return loaded


class _ImageBuffer:
    """Lends a SimpleITK image's pixel buffer to numpy and keeps the image alive as long as an array uses it."""

    def __init__(self, image, view: np.ndarray) -> None:
        self.image = image
        self.__array_interface__ = dict(view.__array_interface__, data=(view.__array_interface__["data"][0], False))


def _array_of(sitk, img) -> np.ndarray:
    """The image's voxels as a writable numpy array over SimpleITK's own buffer (no copy: a volume costs its size
    once, not twice, while it is read)."""
    view = sitk.GetArrayViewFromImage(img)
    if not view.flags.c_contiguous or view.size == 0:
        return sitk.GetArrayFromImage(img)
    return np.asarray(_ImageBuffer(img, view))


def validate_array(array: np.ndarray, name: str = "image", *, allow_constant: bool = False) -> None:
    """Reject arrays no model can use: empty, non-finite or constant (unless ``allow_constant``: labels)."""
    if array.ndim > 4 or array.ndim < 2:
        raise InputError(f"{name} has {array.ndim} dimensions: give a 2-D image or a 3-D volume.")
    if array.size == 0 or 0 in array.shape:
        raise InputError(f"{name} is empty (shape {tuple(array.shape)}): check the file; it holds no voxels.")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad == array.size:
            raise InputError(f"{name} holds no numbers: every voxel is NaN/Inf ({bad}); export the image again "
                             "(the conversion that wrote it failed).")
        raise InputError(f"{name} has {bad} NaN/Inf voxels: replace them (e.g. with the background value) "
                         "before segmenting.")
    if array.dtype.kind not in "biuf":
        raise InputError(f"{name} has pixel type {array.dtype}: give integer or floating-point intensities.")
    if not allow_constant and array.dtype.kind != "b" and np.min(array) == np.max(array):
        raise InputError(f"{name} is constant (every voxel = {np.min(array).item()!r}): there is nothing to segment; "
                         "check that the right image was loaded.")


def to_grey(array: np.ndarray) -> np.ndarray:
    """RGB (…, 3) -> grey with ITU-R 601 luma weights (used for UniverSeg examples)."""
    rgb = array.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def check_same_grid(image: LoadedImage, label: LoadedImage, what: str) -> None:
    """Refuse a label map whose grid has the image's shape but another placement (spacing, origin or direction):
    its voxels would be taken for the image's voxels at other places. 2-D picture files (PNG, JPEG, BMP, TIFF)
    carry no reliable geometry and are not compared."""
    if image.array.shape[:3] != label.array.shape[:3] or \
            _has_ext(image.path, PICTURE_EXTENSIONS) or _has_ext(label.path, PICTURE_EXTENSIONS):
        return
    differ = image.geometry.mismatch(label.geometry)
    if differ:
        raise InputError(f"{what}: {label.path} has the shape of {image.path} but another {differ} (image: "
                         f"{image.geometry.describe()}; label: {label.geometry.describe()}): resample the label onto "
                         "its image's grid (or save both from one scene) and try again.")
