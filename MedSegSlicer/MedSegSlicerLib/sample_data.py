"""The bundled sample CT the module offers in Slicer's Sample Data module (product behaviour, not a test).

The abdominal CT (TotalSegmentator test case, Apache-2.0, ``ct.nii.gz`` + ``labels.nii.gz``) is copied by the
module's CMakeLists next to the installed module (``MedSegSlicerSample/Testing/Data/totalseg_ct_sm``); in a source
checkout it is ``Testing/Data/totalseg_ct_sm``. :func:`find_sample_dir` finds it in either place.
"""
from __future__ import annotations

import os
from typing import Optional

#: node name of the sample volume in Sample Data (and of the loaded node)
SAMPLE_NAME = "MedSegAbdomenCT"
#: the image file of the sample folder
SAMPLE_IMAGE = "ct.nii.gz"
#: the label map of the sample folder (1 spleen, 2 kidney_right, 3 kidney_left, 5 liver)
SAMPLE_LABELS_FILE = "labels.nii.gz"


def find_sample_dir(start: Optional[str] = None) -> Optional[str]:
    """The bundled sample folder: next to the installed module (``MedSegSlicerSample/...``) or in the source tree,
    searched from the folder of ``start`` (a file) up to four folders above; ``None`` when it is not there."""
    here = os.path.dirname(os.path.abspath(start or __file__))
    candidates = []
    d = here
    for _ in range(5):
        candidates.append(os.path.join(d, "MedSegSlicerSample", "Testing", "Data", "totalseg_ct_sm"))
        candidates.append(os.path.join(d, "Testing", "Data", "totalseg_ct_sm"))
        d = os.path.dirname(d)
    for c in candidates:
        if os.path.isfile(os.path.join(c, SAMPLE_IMAGE)) and os.path.isfile(os.path.join(c, SAMPLE_LABELS_FILE)):
            return c
    return None
