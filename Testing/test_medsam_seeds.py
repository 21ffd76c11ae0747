"""Correct and re-propagate (issue 16): a corrected slice seeds MedSAM's propagation, on the bundled CT with the
official LiteMedSAM weights. The seed is kept exactly, the walk follows the official carried-box rule from it,
and nothing outside the walk is produced."""
import numpy as np
import pytest

from medseg_backend.errors import InputError
from medseg_backend.io import read_image
from medseg_backend.medsam import MedSAMEngine
from medseg_backend.metrics import dice
from medseg_backend.slicing import bbox3d, take_slice


@pytest.fixture(scope="module")
def engine():
    return MedSAMEngine("lite-medsam", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def kidney(data_dir):
    vol = read_image(str(data_dir / "totalseg_ct_sm" / "ct.nii.gz")).array
    gt = read_image(str(data_dir / "totalseg_ct_sm" / "labels.nii.gz")).array == 3   # left kidney
    b = list(bbox3d(gt))
    mid = (b[2] + b[5]) // 2
    b[2], b[5] = mid - 3, mid + 3                                                  # 7 slices
    return vol, gt, tuple(b)


def test_seeding_with_the_runs_own_middle_slice_reproduces_the_official_run(engine, kidney):
    """The seeded walk is the official walk: seeded with the plain run's middle-slice mask, every other slice
    comes out identical (up and down)."""
    vol, gt, box = kidney
    plain = engine.segment_volume(vol, [box], propagation="official").labels
    mid = (box[2] + box[5]) // 2
    seeded = engine.segment_volume(vol, [box], propagation="official", seeds=[(mid, plain[mid])]).labels
    np.testing.assert_array_equal(seeded, plain)


def test_a_corrected_slice_is_kept_and_only_its_side_is_propagated(engine, kidney):
    vol, gt, box = kidney
    k = box[2] + 2
    corrected = gt[k].copy()
    res = engine.segment_volume(vol, [box], propagation="official", seeds=[(k, corrected)], direction="up")
    np.testing.assert_array_equal(res.labels[k] > 0, corrected)             # the user's slice, as drawn
    assert not res.labels[:k].any() and not res.labels[box[5] + 1:].any()   # nothing below the seed, nor past the box
    assert all(res.labels[j].any() for j in range(k + 1, box[5] + 1))
    assert dice(res.labels[k + 1:box[5] + 1], gt[k + 1:box[5] + 1]) > 0.85
    rec = {r.slice: r for r in res.slices}
    assert rec[k].source == "user" and rec[k].confidence == 1.0 and not rec[k].flagged
    assert sorted(rec) == list(range(k, box[5] + 1)) and res.slices_run == box[5] - k
    down = engine.segment_volume(vol, [box], propagation="official", seeds=[(k, corrected)], direction="down")
    assert not down.labels[k + 1:].any() and all(down.labels[j].any() for j in range(box[2], k + 1))


def test_seed_along_another_axis_uses_that_axis_slices(engine, kidney):
    vol, gt, box = kidney
    b = list(bbox3d(gt))
    jm = (b[1] + b[4]) // 2
    b[1], b[4] = jm - 2, jm + 2
    seed = take_slice(gt, "coronal", jm)                                     # (K, I)
    res = engine.segment_volume(vol, [tuple(b)], axis="coronal", seeds=[(jm, seed)], direction="both")
    np.testing.assert_array_equal(res.labels[:, jm, :] > 0, seed)
    assert dice(res.labels[:, b[1]:b[4] + 1], gt[:, b[1]:b[4] + 1]) > 0.8


@pytest.mark.parametrize("seeds, direction, message", [
    ([(0, None)], "up", "outside the box's slices"),
    ([(None, None)], "up", None),
    ([], "up", "0 seed(s) for 1 box"),
    ([("mid", np.zeros((3, 3)))], "up", "has shape (3, 3)"),
    (None, "sideways", "Unknown direction 'sideways'"),
])
def test_bad_seeds_are_refused_before_any_work(engine, kidney, seeds, direction, message):
    vol, gt, box = kidney
    mid = (box[2] + box[5]) // 2
    if seeds and seeds[0][0] == "mid":
        seeds = [(mid, seeds[0][1])]
    if seeds and seeds[0][0] is None:
        seeds = [None]   # None = no seed for that box: a plain run
        res = engine.segment_volume(vol, [box], seeds=seeds, direction=direction)
        assert res.labels[mid].any()
        return
    misses = engine.predictor.cache.misses
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        engine.segment_volume(vol, [box], seeds=seeds, direction=direction)
    assert engine.predictor.cache.misses == misses                             # nothing was encoded
