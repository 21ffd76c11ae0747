"""The review rule of a slice of a MedSAM run, without torch: Slicer's own process reads it (the doubtful-slices
list of the MedSAM box effect) and must never import torch. The confidence and profile signals themselves are
computed in :mod:`medseg_backend.confidence` (the model worker)."""
from __future__ import annotations

from typing import List

#: Slices whose confidence is below this are flagged for review.
FLAG_BELOW = 0.8
#: Slices whose mask has fewer than this share of pixels within the object's intensity range are flagged too.
PROFILE_FLAG_BELOW = 0.6


def flag_reasons(area: int, confidence: float, profile: float = 1.0) -> List[str]:
    """Why a slice is doubtful: ``empty`` (no voxel), else ``confidence`` (below :data:`FLAG_BELOW`) and / or
    ``profile`` (below :data:`PROFILE_FLAG_BELOW`: it may have slid onto another tissue); [] when it is not."""
    if not int(area):
        return ["empty"]
    out = []
    if float(confidence) < FLAG_BELOW:
        out.append("confidence")
    if float(profile) < PROFILE_FLAG_BELOW:
        out.append("profile")
    return out


def is_flagged(area: int, confidence: float, profile: float = 1.0) -> bool:
    """The review rule: an empty mask, a confidence below :data:`FLAG_BELOW` or a profile below
    :data:`PROFILE_FLAG_BELOW`."""
    return bool(flag_reasons(area, confidence, profile))
