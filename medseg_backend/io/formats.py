"""File formats by extension (what can be read, written, overlaid) and the SimpleITK handle the readers and writers
share (imported lazily, ITK's raw warnings off)."""
from __future__ import annotations

import os
from typing import Sequence


IMAGE_2D_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOLUME_EXTENSIONS = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
LABEL_EXTENSIONS = (".nrrd", ".nii", ".nii.gz", ".mha", ".png", ".tif", ".tiff")
#: 2-D picture formats: no spacing, origin or direction in the file (TIFF: at most a print resolution).
PICTURE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
IMAGE_2D_OUTPUTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
PROBABILITY_EXTENSIONS = (".nrrd", ".nii", ".nii.gz", ".mha", ".tif", ".tiff")
OVERLAY_EXTENSIONS = (".png",)

_SITK_QUIET = False


def _sitk():
    """SimpleITK, imported lazily (keeps `import medseg_backend` light), with ITK's global warning display off:
    raw ITK warnings on stderr mean nothing to a user; the checks here turn the relevant cases into messages."""
    global _SITK_QUIET
    import SimpleITK as sitk

    if not _SITK_QUIET:
        try:
            sitk.ProcessObject.SetGlobalWarningDisplay(False)
        except AttributeError:  # pragma: no cover - very old SimpleITK
            sitk.ProcessObject_SetGlobalWarningDisplay(False)
        _SITK_QUIET = True
    return sitk


def _has_ext(path: str, exts: Sequence[str]) -> bool:
    low = path.lower()
    return any(low.endswith(e) for e in exts)


def suffix_of(path: str) -> str:
    low = path.lower()
    if low.endswith(".nii.gz"):
        return ".nii.gz"
    return os.path.splitext(low)[1]
