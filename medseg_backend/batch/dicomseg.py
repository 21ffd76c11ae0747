"""DICOM SEG output of a batch case (``--format dicom-seg``), written with highdicom (an optional extra).

The segmentation references the source series (every frame points to its source image), one segment per object
with its SNOMED CT category and type, so Slicer's DICOM module, highdicom and pydicom read it back on the source
geometry. Written through a temporary file in the target folder and renamed into place (never a partial file).
"""
from __future__ import annotations

import os
import tempfile
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .. import terminology
from ..errors import InputError

Code = Tuple[str, str, str]  # (scheme designator, value, meaning)

_TISSUE = ("SCT", "85756007", "Tissue")
#: an object the manifest does not name: generic tissue
GENERIC = (_TISSUE, _TISSUE, None)


def structure_code(name: str) -> Tuple[Code, Code, Optional[Code]]:
    """(category, type, laterality modifier or None) of a structure name, from the product's one terminology
    table (:mod:`medseg_backend.terminology`, the same codes the Slicer layer puts on segments); InputError for a
    name that is not in it."""
    got = terminology.lookup(name)
    if got is None:
        raise InputError(f"structure '{name}' has no SNOMED CT code here: use one of "
                         f"{', '.join(sorted(terminology.names()))} (or leave structures empty for generic tissue)")
    return got.category, got.type, got.modifier


def source_files(folder: str) -> List[str]:
    """The files of the folder's first series in the order SimpleITK stacks them (the label map's K order)."""
    from ..io import _sitk

    sitk = _sitk()
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(folder)
    if not series:
        raise InputError(f"No DICOM series in folder {folder}: give the folder of the source series.")
    return list(reader.GetGDCMSeriesFileNames(folder, series[0]))


def write_dicom_seg(path: str, labels: np.ndarray, folder: str, names: Sequence[str], *,
                    algorithm: str, version: str) -> None:
    """Write ``labels`` ((K, J, I), values 1..N on the grid of the DICOM series in ``folder``) as a binary DICOM SEG
    with one segment per value 1..N, named ``names[i]`` (SNOMED codes from :func:`structure_code`) or
    ``object i``."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    files = source_files(folder)
    sources = [pydicom.dcmread(f) for f in files]
    if labels.shape != (len(sources), int(sources[0].Rows), int(sources[0].Columns)):
        raise InputError(f"Label map {labels.shape} does not match the DICOM series in {folder} ({len(sources)} x "
                         f"{sources[0].Rows} x {sources[0].Columns}).")
    n = int(labels.max(initial=0))
    algo = hd.AlgorithmIdentificationSequence(name=algorithm, version=version,
                                              family=codes.cid7162.ArtificialIntelligence)
    descriptions, masks = [], []
    for i in range(1, max(n, 1) + 1):
        name = names[i - 1] if i - 1 < len(names) and names[i - 1] else f"object {i}"
        category, kind, modifier = structure_code(name) if i - 1 < len(names) and names[i - 1] else GENERIC
        desc = hd.seg.SegmentDescription(
            segment_number=i, segment_label=name,
            segmented_property_category=hd.sr.CodedConcept(category[1], category[0], category[2]),
            segmented_property_type=hd.sr.CodedConcept(kind[1], kind[0], kind[2]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algo)
        if modifier is not None:  # laterality, as Slicer writes it
            desc.SegmentedPropertyTypeModifierCodeSequence = [hd.sr.CodedConcept(modifier[1], modifier[0],
                                                                                 modifier[2])]
        descriptions.append(desc)
        masks.append(labels == i)
    pixels = np.stack(masks, axis=-1).astype(np.uint8)  # (frames, rows, columns, segments)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=300,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="MedSegSlicer",
        manufacturer_model_name=algorithm, software_versions=version, device_serial_number="0",
        omit_empty_frames=False)
    folder_out = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".medseg-", suffix=".dcm", dir=folder_out)
    os.close(fd)
    try:
        seg.save_as(tmp)
        from ..io import make_public

        make_public(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
