"""Standard structures on Slicer segments: the table (names, SNOMED CT codes, colours) lives in
:mod:`medseg_backend.terminology`; this module puts an entry on a ``vtkSegment`` (Qt-free).

A segment made by MedSegSlicer for a structure the user picked from the list carries Slicer's terminology tag
(the serialised entry of the "3D Slicer General Anatomy list" context: SNOMED CT category, type and laterality
modifier), the list's display name and its recommended colour, so it reads the same as a segment made with
Slicer's own terminology selector and survives a DICOM SEG export with proper codes. In the app the colour
recommended by Slicer's Terminologies module is used when that module can answer; the table's colour is the
fallback (and what headless tests see).
"""
from __future__ import annotations

from medseg_backend.terminology import (ABNORMAL_STRUCTURE, ANATOMICAL_STRUCTURE, ANATOMY_CONTEXT, BY_NAME,  # noqa: F401
                                        CONTEXT, LEFT, RIGHT, STRUCTURES, Code, Structure, lookup, names)


def apply_to_segment(segment, structure: Structure) -> None:
    """Name, colour and terminology tag of ``structure`` on a ``vtkSegment``."""
    segment.SetName(structure.name)
    segment.SetColor(*structure.color01)
    segment.SetTag(segment.GetTerminologyEntryTagName(), structure.tag())

