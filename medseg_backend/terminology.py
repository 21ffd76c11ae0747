"""Standard names, codes and colours for the structures users segment most often (no Qt, no torch): the one
home of the table, used by the Slicer layer (segment tags, ``MedSegSlicerLib.terminology``) and by DICOM SEG
output (``medseg_backend.batch.dicomseg``).

A segment made by MedSegSlicer for a structure the user picked from this list carries Slicer's terminology tag
(the serialised entry of the "3D Slicer General Anatomy list" context: SNOMED CT category, type and laterality
modifier), the list's display name and its recommended colour, so it reads the same as a segment made with
Slicer's own terminology selector and survives a DICOM SEG export with proper codes. In the app the colour
recommended by Slicer's Terminologies module is used when that module can answer; this table's colour is the
fallback (and what headless tests see).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

__all__ = ["CONTEXT", "ANATOMY_CONTEXT", "ANATOMICAL_STRUCTURE", "ABNORMAL_STRUCTURE", "RIGHT", "LEFT", "Code",
           "Structure", "STRUCTURES", "BY_NAME", "names", "lookup"]

CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMY_CONTEXT = "Anatomic codes - DICOM master list"
ANATOMICAL_STRUCTURE = ("SCT", "123037004", "Anatomical Structure")
ABNORMAL_STRUCTURE = ("SCT", "49755003", "Morphologically Altered Structure")
RIGHT = ("SCT", "24028007", "Right")
LEFT = ("SCT", "7771000", "Left")

Code = Tuple[str, str, str]


@dataclass(frozen=True)
class Structure:
    name: str                       # display name (segment name)
    category: Code
    type: Code
    colour: Tuple[int, int, int]    # 0..255
    modifier: Optional[Code] = None

    @property
    def color01(self) -> Tuple[float, float, float]:
        return tuple(c / 255.0 for c in self.colour)

    def tag(self) -> str:
        """The segment tag value Slicer stores under ``vtkSegment.GetTerminologyEntryTagName()``:
        context~category~type~type modifier~anatomic context~region~region modifier, codes as
        designator^value^meaning."""
        def code(c: Optional[Code]) -> str:
            return "^".join(c) if c else "^^"
        return "~".join([CONTEXT, code(self.category), code(self.type), code(self.modifier), ANATOMY_CONTEXT,
                         "^^", "^^"])


def _organ(name: str, value: str, meaning: str, colour, modifier: Optional[Code] = None) -> Structure:
    return Structure(name, ANATOMICAL_STRUCTURE, ("SCT", value, meaning), colour, modifier)


# Codes: SNOMED CT concept IDs as in Slicer's General Anatomy list; colours: its recommended display colours.
STRUCTURES: List[Structure] = [
    _organ("liver", "10200004", "Liver", (221, 130, 101)),
    _organ("spleen", "78961009", "Spleen", (157, 108, 162)),
    _organ("right kidney", "64033007", "Kidney", (185, 102, 83), RIGHT),
    _organ("left kidney", "64033007", "Kidney", (185, 102, 83), LEFT),
    _organ("pancreas", "15776009", "Pancreas", (249, 180, 111)),
    _organ("gallbladder", "28231008", "Gallbladder", (139, 150, 98)),
    _organ("stomach", "69695003", "Stomach", (216, 132, 105)),
    _organ("urinary bladder", "89837001", "Urinary bladder", (222, 154, 132)),
    _organ("right lung", "39607008", "Lung", (197, 165, 145), RIGHT),
    _organ("left lung", "39607008", "Lung", (197, 165, 145), LEFT),
    _organ("heart", "80891009", "Heart", (206, 110, 84)),
    _organ("aorta", "15825003", "Aorta", (224, 97, 76)),
    _organ("brain", "12738006", "Brain", (250, 250, 225)),
    _organ("spinal cord", "2748008", "Spinal cord", (244, 214, 49)),
    Structure("lesion", ABNORMAL_STRUCTURE, ("SCT", "52988006", "Lesion"), (216, 101, 79)),
    Structure("tumor", ABNORMAL_STRUCTURE, ("SCT", "108369006", "Neoplasm"), (230, 220, 70)),
]
BY_NAME: Dict[str, Structure] = {s.name: s for s in STRUCTURES}


def names() -> List[str]:
    return [s.name for s in STRUCTURES]


def lookup(name: str) -> Optional[Structure]:
    """The standard structure for a display name (case and surrounding spaces ignored; ``kidney_left`` and
    ``left_kidney`` style names are understood), or None for a name that is not in the list."""
    key = " ".join(str(name or "").replace("_", " ").lower().split())
    if key in BY_NAME:
        return BY_NAME[key]
    words = key.split()
    if len(words) == 2 and words[1] in ("left", "right"):   # "kidney left" -> "left kidney"
        return BY_NAME.get(f"{words[1]} {words[0]}")
    return None
