"""Doubtful slices in the Slicer layer (issue 14): the worker's per-slice rows reach the effect, the flagged ones
are listed least confident first, a view jumps to each, and a review mask keeps only them."""
from __future__ import annotations

import numpy as np
import pytest

from medseg_backend.progress import CancelToken
from medseg_backend.worker.handlers import Handlers
from medseg_backend import slicing
from MedSegSlicerLib import geometry, review


@pytest.fixture
def ct(ct_sample):
    return ct_sample


def test_flagged_rows_from_a_real_run_and_the_review_mask(ct):
    ctx, volume, labels = ct
    kidney = labels == 3
    z = np.nonzero(kidney.any(axis=(1, 2)))[0]
    box = list(slicing.bbox3d(kidney))
    box[5] = min(labels.shape[0] - 1, int(z[-1]) + 3)          # 3 slices past the kidney's end: doubtful there
    box[2] = int(z[-1]) - 3
    data = geometry.volume_to_array(volume).array
    fields, arrays = Handlers().run("segment_box", dict(boxes=[box], model="lite-medsam", device="cpu",
                                                        intensity="window:40,400", propagation="official"),
                                    {"volume": data}, lambda f, m: None, CancelToken())
    rows = fields["slices"]
    assert [r["slice"] for r in rows] == list(range(box[2], box[5] + 1))
    result = type("R", (), {"slices": rows})()
    flagged = review.flagged_slices(result)
    assert flagged, "no slice flagged although the box runs past the kidney"
    assert all(r["flagged"] for r in flagged)
    assert [r["confidence"] for r in flagged] == sorted(r["confidence"] for r in flagged)
    assert all(review.reasons(r) for r in flagged)          # every flagged slice says why
    past = {r["slice"] for r in flagged if r["slice"] > z[-1]}
    assert past, "the slices past the kidney's end are not among the flagged ones"
    mask = arrays["labels"] == 1
    rm = review.review_mask(mask, flagged, "axial")
    on = sorted({int(k) for k in np.nonzero(rm.any(axis=(1, 2)))[0]})
    assert set(on) <= {r["slice"] for r in flagged}
    assert not (rm & ~mask).any()


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_jumping_a_view_to_a_flagged_slice_shows_that_slice(ct, axis):
    import slicer

    ctx, volume, labels = ct
    k = 7
    point = review.slice_centre_world(volume, axis, k)
    normal = {"axial": [0, 0, 1], "coronal": [0, 1, 0], "sagittal": [1, 0, 0]}[axis]
    node = slicer.vtkMRMLSliceNode()
    m = np.eye(4)
    m[:3, 2] = normal
    m[:3, 0] = [0, 0, 1] if axis == "sagittal" else [1, 0, 0]
    m[:3, 1] = np.cross(m[:3, 2], m[:3, 0])
    m[:3, 3] = point
    node.GetSliceToRAS().DeepCopy(geometry.numpy_to_matrix(m))
    assert geometry.slice_index_for_view(volume, node, axis) == k


def test_reasons_name_why_a_slice_is_flagged():
    row = dict(slice=3, area_voxels=120, confidence=0.91, profile=0.95, flagged=0)
    assert review.reasons(row) == []
    assert review.reasons(dict(row, confidence=0.5)) == ["confidence"]
    assert review.reasons(dict(row, profile=0.3)) == ["profile"]
    assert review.reasons(dict(row, confidence=0.5, profile=0.3)) == ["confidence", "profile"]
    assert review.reasons(dict(row, area_voxels=0, confidence=0.0)) == ["empty"]
    assert review.reasons({"slice": 1, "area_voxels": 5, "confidence": 0.95}) == []   # a report without profile
