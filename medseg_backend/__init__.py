"""medseg_backend: embedded MedSAM / LiteMedSAM / UniverSeg inference for medical images.

Pure Python + torch (no Qt, no Slicer, no VTK). Main entry points:

* :func:`load_model` - build a model and load official-layout weights strictly;
* :mod:`medseg_backend.medsam` - 2-D and slice-wise 3-D box-prompted segmentation;
* :mod:`medseg_backend.weights` - the weights registry and store (``medseg models ...``);
* :mod:`medseg_backend.universeg` - in-context segmentation from example segmentations.
"""
from .errors import (CancelledError, DownloadError, InputError, LicenceError, MedSegError, MedSegWarning,
                     OfflineError, WeightsError)
from .progress import CancelToken

__version__ = "0.1.0"

__all__ = [
    "load_model", "CancelToken", "MedSegError", "InputError", "WeightsError", "DownloadError", "OfflineError",
    "LicenceError", "CancelledError", "MedSegWarning", "__version__",
]


def load_model(name_or_path, weights=None, device="auto", **kwargs):
    """Build ``name_or_path`` (``lite-medsam``, ``medsam-vit-b``, ``universeg-v1`` or a checkpoint path) in eval
    mode on ``device``: installed weights found and checked by the weights store (:func:`.weights.open_model`),
    loaded strictly by :func:`medseg_backend.models.loader.load_model`."""
    from .weights import open_model

    return open_model(name_or_path, weights=weights, device=device, **kwargs)
