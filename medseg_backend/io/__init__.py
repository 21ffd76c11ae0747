"""Reading images and writing label maps, with their geometry, through SimpleITK; one module per job:

* :mod:`.formats` - file formats by extension, the shared SimpleITK handle;
* :mod:`.geometry` - :class:`Geometry` (spacing, origin, direction; written back unchanged, so an output label map
  overlays its input exactly);
* :mod:`.readers` - :func:`read_image` (2-D image, volume file or DICOM series), array checks, grid check;
* :mod:`.completeness` - truncated files and NaN / Inf voxels refused before SimpleITK reads them;
* :mod:`.nifti` - a NIfTI file's qform / sform, checked and kept in NIfTI outputs;
* :mod:`.dicom` - picking the series of a DICOM folder;
* :mod:`.outputs` - output paths checked before any work, file permissions;
* :mod:`.writers` - all-or-none writing of label maps, probabilities and overlays.

This package only re-exports them (``from medseg_backend import io``; ``io.read_image`` ...).
"""
from .dicom import NO_SERIES_CHOICE, SERIES_LISTED
from .formats import (IMAGE_2D_EXTENSIONS, IMAGE_2D_OUTPUTS, LABEL_EXTENSIONS, OVERLAY_EXTENSIONS, PICTURE_EXTENSIONS,
                      PROBABILITY_EXTENSIONS, VOLUME_EXTENSIONS, _has_ext, _sitk)  # noqa: F401
from .geometry import Geometry
from .nifti import NiftiTransforms
from .outputs import (check_output_path, check_outputs, check_volume_format, check_writable_folder, current_umask,
                      make_public, same_path)
from .readers import LoadedImage, check_same_grid, read_image, to_grey, validate_array
from .writers import (array_to_sitk, float_image, label_image, rgb_image, write_images, write_label,
                      write_rgb_png)

__all__ = [
    "NO_SERIES_CHOICE", "SERIES_LISTED", "IMAGE_2D_EXTENSIONS", "IMAGE_2D_OUTPUTS", "LABEL_EXTENSIONS",
    "OVERLAY_EXTENSIONS", "PICTURE_EXTENSIONS", "PROBABILITY_EXTENSIONS", "VOLUME_EXTENSIONS", "Geometry",
    "NiftiTransforms", "check_output_path", "check_outputs", "check_volume_format", "check_writable_folder",
    "current_umask", "make_public", "same_path", "LoadedImage", "check_same_grid", "read_image", "to_grey",
    "validate_array", "array_to_sitk", "float_image", "label_image", "rgb_image", "write_images", "write_label",
    "write_rgb_png",
]
# _sitk (SimpleITK with ITK's warnings off) and _has_ext are shared with the CLI and batch code, not public API.
