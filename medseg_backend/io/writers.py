"""Writing label maps, probabilities and overlays with their geometry, all or none (:func:`write_images`), so an
output label map overlays its input exactly."""
from __future__ import annotations

import os
import tempfile
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..errors import clip_text as _clip_text
from .formats import OVERLAY_EXTENSIONS, _sitk, suffix_of
from .geometry import Geometry
from .nifti import write_nifti_transforms
from .outputs import check_output_path, check_volume_format, make_public


def array_to_sitk(array: np.ndarray, geometry: Optional[Geometry], *, is_vector: bool = False):
    sitk = _sitk()
    img = sitk.GetImageFromArray(array, isVector=is_vector)
    if geometry is not None and geometry.dimension == img.GetDimension():
        geometry.apply_to(img)
    return img


def write_images(items: Sequence[Tuple]) -> None:
    """Write SimpleITK images (or text, for a ``str``) ``[(path, image), ...]`` all or nothing: each into a
    temporary file in its target folder; only when every one was written are they moved into place
    (:func:`os.replace`). On any failure (or an interrupt) no new output and no temporary file remains.

    An item ``(path, image, geometry)`` whose geometry came from a NIfTI file (``geometry.nifti``) and goes to a
    NIfTI file on the same grid gets that file's qform, sform and codes exactly (SimpleITK would write one
    transform, as both, from the image's direction)."""
    sitk = _sitk()
    temps: List[Tuple[str, str]] = []
    placed: List[str] = []
    current = ""
    try:
        for item in items:
            path, img = item[0], item[1]
            xf = item[2].nifti if len(item) > 2 and item[2] is not None else None
            current = path
            folder = os.path.dirname(os.path.abspath(path))
            fd, tmp = tempfile.mkstemp(prefix=".medseg-", suffix=suffix_of(path), dir=folder)
            os.close(fd)
            temps.append((tmp, path))
            if isinstance(img, str):
                with open(tmp, "w", encoding="utf-8") as fh:
                    fh.write(img)
            else:
                sitk.WriteImage(img, tmp, True)
                if xf is not None and suffix_of(path) in (".nii", ".nii.gz"):
                    write_nifti_transforms(tmp, xf)
            make_public(tmp)
        for tmp, path in temps:
            current = path
            os.replace(tmp, path)
            placed.append(path)
        temps = []
    except RuntimeError as exc:
        raise InputError(f"Cannot write {current} ({_clip_text(str(exc).strip().splitlines()[-1], 100)}): choose a "
                         ".nrrd, .nii.gz, .mha, .png or .tif output path in a writable folder; nothing was "
                         "written.") from None
    except OSError as exc:
        raise InputError(f"Cannot write {current} ({exc.strerror or type(exc).__name__}): choose a writable folder "
                         "with free space; nothing was written.") from None
    finally:
        if temps:  # failed or interrupted: remove what this call created
            for tmp, _ in temps:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            for path in placed:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def label_image(labels: np.ndarray, geometry: Optional[Geometry]):
    """A label map (0 = background) as a SimpleITK image with ``geometry`` (uint8, or uint16 above 255)."""
    arr = np.ascontiguousarray(labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16, copy=False))
    return array_to_sitk(arr, geometry)


def float_image(data: np.ndarray, geometry: Optional[Geometry]):
    return array_to_sitk(np.ascontiguousarray(data.astype(np.float32, copy=False)), geometry)


def rgb_image(rgb: np.ndarray):
    return array_to_sitk(np.ascontiguousarray(rgb.astype(np.uint8)), None, is_vector=True)


def write_label(path: str, labels: np.ndarray, geometry: Optional[Geometry]) -> None:
    """Write a label map (0 = background) with ``geometry``; PNG/TIFF get uint8 values as they are."""
    check_output_path(path)
    check_volume_format(path, labels.shape, is_volume=labels.ndim == 3)
    write_images([(path, label_image(labels, geometry), geometry)])


def write_rgb_png(path: str, rgb: np.ndarray) -> None:
    check_output_path(path, allowed=OVERLAY_EXTENSIONS, what="overlay")
    write_images([(path, rgb_image(rgb))])
