"""MedSAM (ViT-B) and LiteMedSAM from box prompts, shaped like Meta's ``segment_anything``:

* :mod:`.resize` - the official pipelines' resamplers (OpenCV ``INTER_AREA``, scikit-image bicubic), re-implemented;
* :mod:`.transforms` - one transform per model: image in, boxes in, low-res logits out;
* :mod:`.predictor` - :class:`MedSAMPredictor`: model, device, precision, the embedding cache, encode and decode;
* :mod:`.walk` - the walk of one box over its slices, a generator (slice results, previews, why each side stopped);
* :mod:`.propagation` - the modes of that walk, one strategy object each (official / roi / stop / adaptive /
  guarded), and :func:`.propagation.propagate`;
* :mod:`.engine` - :class:`MedSAMEngine`: checked 2-D and 3-D runs, what the CLI, worker and API call.
"""
from .engine import MedSAMEngine, MedSAMResult, Result2D, intensity_rule
from .predictor import DEFAULT_HALF, EmbeddingCache, MedSAMPredictor
from .propagation import END_PROFILE_BELOW, ROI_BELOW, centre_first

__all__ = ["MedSAMEngine", "MedSAMResult", "Result2D", "intensity_rule", "DEFAULT_HALF", "EmbeddingCache",
           "MedSAMPredictor", "END_PROFILE_BELOW", "ROI_BELOW", "centre_first"]
