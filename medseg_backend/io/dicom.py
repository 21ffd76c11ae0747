"""DICOM folders: picking the one series to read (by UID or number) or naming the series a folder holds."""
from __future__ import annotations

from typing import List, Optional, Sequence

from ..errors import InputError
from ..errors import clip_text as _clip_text


#: At most this many series are listed when a DICOM folder holds several.
SERIES_LISTED = 20


def _series_description(sitk, first_file: str) -> str:
    """The Series Description (0008,103E) of a DICOM file, '' when absent or unreadable."""
    try:
        r = sitk.ImageFileReader()
        r.SetFileName(first_file)
        r.ReadImageInformation()
        return r.GetMetaData("0008|103e").strip() if r.HasMetaDataKey("0008|103e") else ""
    except RuntimeError:
        return ""


#: ``read_image(series=NO_SERIES_CHOICE)``: the caller offers no way to pick a series (the error says so).
NO_SERIES_CHOICE = "\0no-choice"


def pick_series(sitk, reader, folder: str, series: Sequence[str], choice: Optional[str]) -> List[str]:
    """The files of the one series to read from a DICOM folder: the only one, or ``choice`` (a UID, or its
    number 1..N in the listed order). Several series and no choice: :class:`InputError` listing them."""
    series = sorted(series)
    can_pick = choice != NO_SERIES_CHOICE
    choice = choice if can_pick else None
    if choice is not None:
        text = str(choice).strip()
        uid = text if text in series else None
        if uid is None and text.isdigit() and 1 <= int(text) <= len(series):
            uid = series[int(text) - 1]
        if uid is None:
            raise InputError(f"Series '{_clip_text(text, 80)}' is not in DICOM folder {folder} (it holds "
                             f"{len(series)} series: {_clip_text(', '.join(series), 300)}): give one of those "
                             f"UIDs or a number 1..{len(series)}.")
        return list(reader.GetGDCMSeriesFileNames(folder, uid))
    if len(series) == 1:
        return list(reader.GetGDCMSeriesFileNames(folder, series[0]))
    listed = []
    for n, uid in enumerate(series[:SERIES_LISTED], start=1):
        files = reader.GetGDCMSeriesFileNames(folder, uid)
        desc = _series_description(sitk, files[0]) if files else ""
        listed.append(f"{n}) {uid}" + (f" '{_clip_text(desc, 60)}'" if desc else "") + f", {len(files)} slice(s)")
    more = f"; and {len(series) - SERIES_LISTED} more" if len(series) > SERIES_LISTED else ""
    pick = "pick one with --series N or --series UID (or give a folder that holds one series)" if can_pick else \
        "give a folder that holds one series (copy that series' files into a folder of their own)"
    raise InputError(f"DICOM folder {folder} holds {len(series)} series: {'; '.join(listed)}{more}; {pick}.")
