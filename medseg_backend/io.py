"""Reading images and writing label maps, with their geometry, through SimpleITK.

Arrays are in SimpleITK order: a volume is ``(K, J, I)`` = (slice z, row y, column x); a 2-D image is
``(H, W)`` or ``(H, W, 3)`` for RGB. Voxel boxes everywhere in the backend use x = column, y = row,
z = slice, inclusive. Geometry (spacing, origin, direction) travels in :class:`Geometry` and is written back
unchanged, so an output label map overlays its input exactly.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from .errors import InputError

IMAGE_2D_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOLUME_EXTENSIONS = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
LABEL_EXTENSIONS = (".nrrd", ".nii", ".nii.gz", ".mha", ".png", ".tif", ".tiff")


@dataclass(frozen=True)
class Geometry:
    """Physical placement of an image grid (SimpleITK / LPS conventions)."""

    spacing: Tuple[float, ...]
    origin: Tuple[float, ...]
    direction: Tuple[float, ...]  # row-major, dim x dim

    @property
    def dimension(self) -> int:
        return len(self.spacing)

    @staticmethod
    def identity(dimension: int) -> "Geometry":
        return Geometry((1.0,) * dimension, (0.0,) * dimension,
                        tuple(np.eye(dimension).ravel().tolist()))

    @staticmethod
    def from_sitk(img) -> "Geometry":
        return Geometry(tuple(img.GetSpacing()), tuple(img.GetOrigin()), tuple(img.GetDirection()))

    def apply_to(self, img) -> None:
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)

    def slice2d(self, k: int) -> "Geometry":
        """Geometry of slice ``k`` of a 3-D grid as a 2-D image (in-plane axes kept)."""
        if self.dimension != 3:
            return self
        d = np.asarray(self.direction).reshape(3, 3)
        origin = np.asarray(self.origin) + d[:, 2] * self.spacing[2] * k
        return Geometry(self.spacing[:2], tuple(origin[:2].tolist()), tuple(d[:2, :2].ravel().tolist()))


@dataclass
class LoadedImage:
    array: np.ndarray
    geometry: Geometry
    path: str
    is_rgb: bool

    @property
    def is_volume(self) -> bool:
        return self.array.ndim == 3 and not self.is_rgb


def _sitk():
    import SimpleITK as sitk  # imported lazily: keeps `import medseg_backend` light

    return sitk


def _has_ext(path: str, exts: Sequence[str]) -> bool:
    low = path.lower()
    return any(low.endswith(e) for e in exts)


def read_image(path: str, *, allow_rgb_volume: bool = False) -> LoadedImage:
    """Read a 2-D image or a 3-D volume (file or DICOM folder). Raises :class:`InputError` on any problem."""
    sitk = _sitk()
    p = Path(path)
    if not p.exists():
        raise InputError(f"Image not found: {path}: check the path (volume file, 2-D image or DICOM folder).")
    try:
        if p.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(p))
            if not series:
                raise InputError(f"No DICOM series in folder {path}: point to a folder of .dcm files of one "
                                 "series, or to a volume file.")
            files = reader.GetGDCMSeriesFileNames(str(p), series[0])
            reader.SetFileNames(files)
            img = reader.Execute()
        else:
            img = sitk.ReadImage(str(p))
    except InputError:
        raise
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[-1] if first else "unknown reason"
        raise InputError(f"Cannot read {path} as an image ({detail[:120]}): use PNG, JPEG, TIFF, NRRD, NIfTI, "
                         "MHA or a DICOM folder, and check that the file is complete.") from None
    ncomp = img.GetNumberOfComponentsPerPixel()
    dim = img.GetDimension()
    array = sitk.GetArrayFromImage(img)
    geometry = Geometry.from_sitk(img)
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
    validate_array(loaded.array, name=str(path))
    return loaded


def validate_array(array: np.ndarray, name: str = "image") -> None:
    """Reject arrays no model can use: empty, non-finite or constant."""
    if array.ndim > 4 or array.ndim < 2:
        raise InputError(f"{name} has {array.ndim} dimensions: give a 2-D image or a 3-D volume.")
    if array.size == 0 or 0 in array.shape:
        raise InputError(f"{name} is empty (shape {tuple(array.shape)}): check the file; it holds no voxels.")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(f"{name} has {bad} NaN/Inf voxels: replace them (e.g. with the background value) "
                         "before segmenting.")
    if array.dtype.kind not in "biuf":
        raise InputError(f"{name} has pixel type {array.dtype}: give integer or floating-point intensities.")
    if array.dtype.kind != "b" and np.min(array) == np.max(array):
        raise InputError(f"{name} is constant (every voxel = {np.min(array)!r}): there is nothing to segment; "
                         "check that the right image was loaded.")


def array_to_sitk(array: np.ndarray, geometry: Optional[Geometry], *, is_vector: bool = False):
    sitk = _sitk()
    img = sitk.GetImageFromArray(array, isVector=is_vector)
    if geometry is not None and geometry.dimension == img.GetDimension():
        geometry.apply_to(img)
    return img


def _suffix(path: str) -> str:
    low = path.lower()
    if low.endswith(".nii.gz"):
        return ".nii.gz"
    return os.path.splitext(low)[1]


def atomic_write_image(img, path: str) -> None:
    """Write a SimpleITK image through a temporary file in the same folder, then rename it into place."""
    sitk = _sitk()
    target = Path(path)
    if target.parent and not target.parent.exists():
        raise InputError(f"Output folder {target.parent} does not exist: create it or choose another path.")
    fd, tmp = tempfile.mkstemp(prefix=".medseg-", suffix=_suffix(path), dir=str(target.parent or "."))
    os.close(fd)
    try:
        sitk.WriteImage(img, tmp, True)
        os.replace(tmp, target)
    except RuntimeError as exc:
        raise InputError(f"Cannot write {path} ({str(exc).strip().splitlines()[-1][:100]}): choose a .nrrd, "
                         ".nii.gz, .mha, .png or .tif output path in a writable folder.") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_output_path(path: str, *, allowed: Sequence[str] = LABEL_EXTENSIONS, what: str = "output") -> None:
    if not _has_ext(path, allowed):
        raise InputError(f"Cannot tell the {what} format from '{path}': end the name with one of "
                         f"{', '.join(allowed)}.")
    parent = Path(path).parent
    if str(parent) and not parent.exists():
        raise InputError(f"Output folder {parent} does not exist: create it or choose another path.")


def write_label(path: str, labels: np.ndarray, geometry: Optional[Geometry]) -> None:
    """Write a label map (0 = background) with ``geometry``; PNG/TIFF get uint8 values as they are."""
    check_output_path(path)
    arr = np.ascontiguousarray(labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16))
    atomic_write_image(array_to_sitk(arr, geometry), path)


def write_float_image(path: str, data: np.ndarray, geometry: Optional[Geometry]) -> None:
    check_output_path(path, allowed=(".nrrd", ".nii", ".nii.gz", ".mha", ".tif", ".tiff"), what="probability")
    atomic_write_image(array_to_sitk(np.ascontiguousarray(data.astype(np.float32)), geometry), path)


def write_rgb_png(path: str, rgb: np.ndarray) -> None:
    check_output_path(path, allowed=(".png",), what="overlay")
    atomic_write_image(array_to_sitk(np.ascontiguousarray(rgb.astype(np.uint8)), None, is_vector=True), path)


def to_grey(array: np.ndarray) -> np.ndarray:
    """RGB (…, 3) -> grey with ITU-R 601 luma weights (used for UniverSeg examples)."""
    rgb = array.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
