"""UniverSeg pipeline on real volumes with deterministic stand-in networks.

Without trained weights the network is replaced by stand-ins whose output is a known function of the query and
the support, so every transform (intensity, crop, resize, flip, ensemble, paste back, axis handling) is checked
against an expectation computed here independently (scipy resampling, the documented crop rule):

* ``MeanLabel``: logit of the mean support label -> the prediction is the average example mask, mapped back;
* ``QueryThreshold``: logit = 40 (query - 0.5) -> the mask is the bright part of the normalised query crop;
* ``Marker``: a fixed block in model space -> its exact place in the slice tells where the crop went.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg_backend.errors import CancelledError, InputError, LicenceError, MedSegWarning
from medseg_backend.progress import CancelToken
from medseg_backend.universeg import (Example, UniverSegEngine, UniverSegResult, examples_from_labelled_slices,
                                      examples_from_volume)
from medseg_backend.universeg.library import (export_library, import_library, list_libraries, load_library,
                                              resolve_library)

LIVER = 5
SPLEEN = 1


# ------------------------------------------------------------------------------------------- stand-ins --
class MeanLabel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, q, si, sl):
        self.calls.append((si.shape[1], tuple(float(v) for v in sl[0, :, 0].sum(dim=(-1, -2)))))
        p = sl.mean(1).clamp(1e-4, 1 - 1e-4)
        return torch.log(p / (1 - p))


class QueryThreshold(torch.nn.Module):
    def forward(self, q, si, sl):
        return 40.0 * (q - 0.5)


class Marker(torch.nn.Module):
    """+4 on rows 32..95, columns 0..47 of the 128 x 128 model space, -10 elsewhere."""

    def forward(self, q, si, sl):
        out = torch.full_like(q, -10.0)
        out[..., 32:96, 0:48] = 4.0
        return out


class PlainReference(torch.nn.Module):
    """The real network through its plain forward only (no prepare_support): the engine's generic path."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, q, si, sl):
        return self.net.forward_reference(q, si, sl)


# ---------------------------------------------------------------------------------------------- helpers --
def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(a, b).sum() / s


def spec_square(r0, c0, r1, c1):
    """The crop rule documented in medseg_backend/universeg/support.py (margin 0.25, at least 4 px)."""
    longest = max(r1 - r0 + 1, c1 - c0 + 1)
    side = longest + 2 * max(math.ceil(0.25 * longest), 4)
    return math.floor((r0 + r1 + 1) / 2 - side / 2), math.floor((c0 + c1 + 1) / 2 - side / 2), side


def crop(arr, top, left, side):
    out = np.zeros((side, side), np.float64)
    h, w = arr.shape
    r0, c0, r1, c1 = max(top, 0), max(left, 0), min(top + side, h), min(left + side, w)
    out[r0 - top:r1 - top, c0 - left:c1 - left] = arr[r0:r1, c0:c1]
    return out


def rescale(arr, n):
    return ndimage.zoom(arr, n / arr.shape[0], order=1, grid_mode=True, mode="nearest")


def bbox(mask):
    idx = np.nonzero(mask)
    return tuple(int(i.min()) for i in idx) + tuple(int(i.max()) for i in idx)


def quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedSegWarning)
        return fn(*a, **k)


@pytest.fixture(scope="module")
def ct(data_dir):
    import SimpleITK as sitk

    d = data_dir / "totalseg_ct_sm"
    vol = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "ct.nii.gz")))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "labels.nii.gz")))
    return vol, lab


@pytest.fixture(scope="module")
def sparse_liver(ct):
    """Few-shot completion input: the liver labelled on every 5th axial slice only."""
    vol, lab = ct
    sparse = np.zeros_like(lab)
    sparse[::5] = lab[::5]
    return vol, sparse, lab == LIVER


def gt_roi(gt):
    k0, j0, i0, k1, j1, i1 = bbox(gt)
    return (i0, j0, k0, i1, j1, k1)


# --------------------------------------------------------------------------------- few-shot completion --
def test_few_shot_completion_mean_label_matches_independent_expectation(sparse_liver):
    vol, sparse, gt = sparse_liver
    examples = examples_from_labelled_slices(vol, sparse, label=LIVER)
    assert [e.name for e in examples] == [f"axial slice {k}" for k in range(0, 30, 5)]
    assert all(set(np.unique(e.label)) == {0, LIVER} for e in examples)
    roi = gt_roi(gt)
    eng = UniverSegEngine(model=MeanLabel(), device="cpu")
    with pytest.warns(MedSegWarning, match="Only 6 example"):
        res = eng.segment_volume(vol, examples, roi=roi, label=LIVER)
    assert isinstance(res, UniverSegResult)
    assert res.mask.shape == vol.shape and res.mask.dtype == np.uint8
    assert res.probabilities.shape == vol.shape and res.probabilities.dtype == np.float32
    assert any("ct-abdomen" in m for m in res.messages)

    # Independent expectation: average of the examples' label crops at 128, mapped into the ROI's square.
    acc = np.zeros((128, 128))
    for k in range(0, 30, 5):
        m = (sparse[k] == LIVER).astype(float)
        r0, c0, r1, c1 = bbox(m)
        top, left, side = spec_square(r0, c0, r1, c1)
        acc += rescale(crop(m, top, left, side), 128) > 0.5
    acc /= 6
    i0, j0, k0, i1, j1, k1 = roi
    top, left, side = spec_square(j0, i0, j1, i1)
    back = rescale(acc, side)
    expected = np.zeros(vol.shape[1:], bool)
    placed = np.zeros(vol.shape[1:])
    h, w = placed.shape
    placed[max(top, 0):min(top + side, h), max(left, 0):min(left + side, w)] = \
        back[max(top, 0) - top:min(top + side, h) - top, max(left, 0) - left:min(left + side, w) - left]
    expected[j0:j1 + 1, i0:i1 + 1] = placed[j0:j1 + 1, i0:i1 + 1] > 0.5

    for k in range(vol.shape[0]):   # the stand-in ignores the query: every ROI slice gets the same mask
        assert np.array_equal(res.mask[k], res.mask[k0]), k
        assert dice(res.mask[k], expected) >= 0.97, k
    outside = np.ones(vol.shape, bool)
    outside[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1] = False
    assert not res.mask[outside].any() and not res.probabilities[outside].any()
    # Against the ground truth: the mean example shape fills the liver's box, Dice measured 0.70.
    assert dice(res.mask, gt) > 0.65


def test_no_roi_region_derived_from_examples(sparse_liver):
    vol, sparse, gt = sparse_liver
    examples = examples_from_labelled_slices(vol, sparse, label=LIVER)
    res = quiet(UniverSegEngine(model=MeanLabel(), device="cpu").segment_volume, vol, examples, label=LIVER)
    assert any("derived from the examples" in m for m in res.messages)
    # Union of the examples' boxes, made square: the mask lies inside that square on every slice.
    boxes = np.array([bbox(sparse[k] == LIVER) for k in range(0, 30, 5)])
    r0, c0 = boxes[:, 0].min(), boxes[:, 1].min()
    r1, c1 = boxes[:, 2].max(), boxes[:, 3].max()
    top, left, side = spec_square(r0, c0, r1, c1)
    _, mr0, mc0, _, mr1, mc1 = bbox(res.mask)
    assert mr0 >= top and mc0 >= left and mr1 < top + side and mc1 < left + side
    assert res.mask.any(axis=(1, 2)).all()          # every slice was processed
    assert dice(res.mask, gt) > 0.65


def test_neighbour_hint_crops_follow_the_previous_mask(sparse_liver):
    vol, sparse, gt = sparse_liver
    examples = examples_from_labelled_slices(vol, sparse, label=LIVER)
    eng = UniverSegEngine(model=QueryThreshold(), device="cpu")
    roi = gt_roi(gt)
    fixed = quiet(eng.segment_volume, vol, examples, roi=roi, label=LIVER, intensity="ct-abdomen")
    hinted = quiet(eng.segment_volume, vol, examples, roi=roi, label=LIVER, intensity="ct-abdomen",
                   neighbour_hint=True)
    assert any("neighbour hint: 29" in m for m in hinted.messages)
    # Threshold of the query is crop-independent up to resampling: the hint must not move anything.
    assert dice(hinted.mask, fixed.mask) >= 0.95


# ----------------------------------------------------------------------------------------- axes, geometry --
@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_query_threshold_each_axis(ct, axis):
    """The mask must be the bright part (HU > ~40 after the abdomen window) of each slice *along that axis*,
    inside the ROI: a transposed, flipped or shifted paste-back fails."""
    vol, lab = ct
    gt = lab == LIVER
    roi = gt_roi(gt)
    examples = examples_from_volume(vol, lab, label=LIVER, axis=axis, max_slices=10)
    assert len(examples) == 10 and axis in examples[0].name
    res = quiet(UniverSegEngine(model=QueryThreshold(), device="cpu").segment_volume, vol, examples, roi=roi,
                axis=axis, label=LIVER, intensity="ct-abdomen")
    ax = {"axial": 0, "coronal": 1, "sagittal": 2}[axis]
    i0, j0, k0, i1, j1, k1 = roi
    inside = np.zeros(vol.shape, bool)
    inside[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1] = True
    expected = np.zeros(vol.shape, bool)
    win = np.clip(vol.astype(np.float64), -160, 240)
    for n in range(vol.shape[ax]):
        sl = np.take(win, n, axis=ax)
        norm = (sl - sl.min()) / max(sl.max() - sl.min(), 1e-9)
        idx = [slice(None)] * 3
        idx[ax] = n
        expected[tuple(idx)] = norm > 0.5
    assert not res.mask[~inside].any()
    score = dice(res.mask, expected & inside)
    # Resampling blurs a noisy image around the threshold (liver ~60 HU sits near it): measured 0.87 on each axis.
    # A one-voxel shift either way (measured 0.75-0.76) or a flip (0.39-0.45) must score clearly lower.
    assert score >= 0.84, score
    rows_ax, cols_ax = [a for a in range(3) if a != ax]
    wrong = [np.roll(expected, s, axis=a) for a in (rows_ax, cols_ax) for s in (-1, 1)]
    wrong += [np.flip(expected, rows_ax), np.flip(expected, cols_ax)]
    assert max(dice(res.mask, w & inside) for w in wrong) < score - 0.05


def test_marker_lands_at_the_documented_place_2d(ct):
    vol, lab = ct
    img, m = vol[15], lab[15] == LIVER
    r0, c0, r1, c1 = bbox(m)
    eng = UniverSegEngine(model=Marker(), device="cpu")
    ex = [Example(vol[k], lab[k], f"s{k}") for k in (10, 12, 14, 16, 18, 20, 22, 24)]
    res = eng.segment_volume(img, ex, roi=(c0, r0, c1, r1), label=LIVER)
    assert res.mask.shape == img.shape
    top, left, side = spec_square(r0, c0, r1, c1)
    # Model rows 32..95 / columns 0..47 = the middle half of the square's rows, its left 3/8; clipped to the ROI.
    exp = (max(top + round(side / 4), r0), max(left, c0), min(top + round(3 * side / 4) - 1, r1),
           min(left + round(3 * side / 8) - 1, c1))
    got = bbox(res.mask)
    assert all(abs(g - e) <= 1 for g, e in zip(got, exp)), (got, exp)
    # Flip TTA: the flipped pass puts the block on the right once flipped back -> both blocks at
    # (sigmoid(4) + sigmoid(-10)) / 2 = 0.491 < 0.5; without the flip back the left block would stay at 0.98.
    tta = eng.segment_volume(img, ex, roi=(c0, r0, c1, r1), label=LIVER, tta=True)
    assert not tta.mask.any()
    mid_row = (exp[0] + exp[2]) // 2
    assert abs(tta.probabilities[mid_row, exp[1] + 1] - 0.491) < 0.002
    assert abs(tta.probabilities[mid_row, min(left + side - 3, c1)] - 0.491) < 0.002


def test_tta_is_neutral_for_flip_equivariant_networks(ct):
    vol, lab = ct
    examples = examples_from_volume(vol, lab, label=SPLEEN, max_slices=12)
    roi = gt_roi(lab == SPLEEN)
    eng = UniverSegEngine(model=QueryThreshold(), device="cpu")
    a = eng.segment_volume(vol, examples, roi=roi, label=SPLEEN)
    b = eng.segment_volume(vol, examples, roi=roi, label=SPLEEN, tta=True)
    assert a.mask.sum() > 100
    assert dice(a.mask, b.mask) >= 0.99
    mean_eng = UniverSegEngine(model=MeanLabel(), device="cpu")
    c = mean_eng.segment_volume(vol, examples, roi=roi, label=SPLEEN)
    d = mean_eng.segment_volume(vol, examples, roi=roi, label=SPLEEN, tta=True)
    # Flipped support labels averaged and flipped back = the unflipped average (up to bilinear symmetry).
    assert np.abs(c.probabilities - d.probabilities).max() < 1e-5


def test_2d_rgb_pngs(data_dir):
    from medseg_backend.io import read_image, to_grey

    d = data_dir / "sam_med2d_demo"
    target = read_image(str(d / "images" / "amos_0006_90.png"))
    gt = read_image(str(d / "masks" / "amos_0006_90_liver_000.png")).array > 0
    ex_img = read_image(str(d / "images" / "amos_0004_75.png"))
    ex_lab = read_image(str(d / "masks" / "amos_0004_75_liver_000.png"))
    with pytest.warns(MedSegWarning, match="RGB"):
        ex = Example(ex_img.array, ex_lab.array, "amos_0004_75")
    assert ex.image.shape == (512, 512) and ex.image.dtype == np.uint8
    assert np.array_equal(ex.image, np.rint(to_grey(ex_img.array)).astype(np.uint8))
    grey = np.rint(to_grey(target.array)).astype(np.uint8)
    r0, c0, r1, c1 = bbox(gt)
    eng = UniverSegEngine(model=MeanLabel(), device="cpu")
    with pytest.raises(InputError, match=r"255"):       # masks are 0/255: label 1 is absent, 255 is listed
        quiet(eng.segment_volume, grey, [ex], roi=(c0, r0, c1, r1))
    res = quiet(eng.segment_volume, grey, [ex], roi=(c0, r0, c1, r1), label=255)
    assert res.mask.shape == grey.shape
    assert any("raw" in m for m in res.messages)        # 8-bit target: raw intensities
    assert dice(res.mask, gt) > 0.7


def test_real_network_fast_path_equals_plain_path_in_the_pipeline(universeg_state, ct):
    from medseg_backend.models.universeg_fast import build_universeg_v1

    net = build_universeg_v1()
    net.load_state_dict(torch.load(universeg_state, weights_only=True), strict=True)
    vol, lab = ct
    examples = examples_from_volume(vol, lab, label=SPLEEN, max_slices=5)
    roi = gt_roi(lab == SPLEEN)
    roi = (roi[0], roi[1], 14, roi[3], roi[4], 14)                          # one query slice, two passes
    fast = UniverSegEngine(model=net, device="cpu", chunk_size=3)
    assert fast.fast and fast.precision == "fp32"
    plain = UniverSegEngine(model=PlainReference(net), device="cpu")
    assert not plain.fast
    a = quiet(fast.segment_volume, vol, examples, roi=roi, label=SPLEEN, tta=True)
    b = quiet(plain.segment_volume, vol, examples, roi=roi, label=SPLEEN, tta=True)
    assert np.abs(a.probabilities - b.probabilities).max() < 1e-4
    assert np.array_equal(a.mask, b.mask)


# -------------------------------------------------------------------------------------- support / ensemble --
def test_ensemble_subsets_are_seeded_and_sized(ct):
    vol, lab = ct
    examples = examples_from_volume(vol, lab, label=LIVER, axis="coronal")     # 62 coronal slices
    assert len(examples) == 62
    roi = gt_roi(lab == LIVER)
    roi = (roi[0], 50, roi[2], roi[3], 52, roi[5])                            # 3 coronal query slices

    def run(seed, ensemble=3):
        net = MeanLabel()
        res = UniverSegEngine(model=net, device="cpu").segment_volume(
            vol, examples, roi=roi, axis="coronal", label=LIVER, support_size=16, ensemble=ensemble, seed=seed)
        return res, net.calls

    a, calls_a = run(0)
    b, calls_b = run(0)
    c, calls_c = run(1)
    assert len(calls_a) == 9 and all(s == 16 for s, _ in calls_a)             # 3 subsets x 3 slices
    subsets = {sig for _, sig in calls_a}
    assert len(subsets) == 3                                                 # three different subsets
    assert calls_a == calls_b and np.array_equal(a.probabilities, b.probabilities)
    assert calls_a != calls_c and not np.array_equal(a.probabilities, c.probabilities)
    assert any("3 random subset(s) of 16 (seed 0)" in m for m in a.messages)
    one, calls = run(0, ensemble=1)
    assert any("46 example slices unused" in m for m in one.messages)
    assert len({sig for _, sig in calls}) == 1


def test_three_d_examples_expand_to_their_labelled_slices(ct):
    vol, lab = ct
    net = MeanLabel()
    ex = Example(vol, lab, "whole volume")
    roi = gt_roi(lab == SPLEEN)
    roi = roi[:2] + (10,) + roi[3:5] + (10,)
    UniverSegEngine(model=net, device="cpu").segment_volume(vol, [ex], roi=roi, label=SPLEEN)
    n_spleen = int((lab == SPLEEN).any(axis=(1, 2)).sum())
    assert net.calls[0][0] == n_spleen


def test_examples_from_volume_policies(ct):
    vol, lab = ct
    gappy = lab.copy()
    gappy[12][gappy[12] == SPLEEN] = 0                    # an annotation gap inside the spleen's range
    assert len(examples_from_volume(vol, gappy, label=SPLEEN)) == 29
    with pytest.warns(MedSegWarning, match="1 slice"):
        examples_from_volume(vol, gappy, label=SPLEEN, empty_policy="warn")
    with pytest.raises(InputError, match="have no label 1"):
        examples_from_volume(vol, gappy, label=SPLEEN, empty_policy="error")
    sub = examples_from_volume(vol, lab, label=SPLEEN, max_slices=4)
    assert [e.name for e in sub] == ["axial slice 0", "axial slice 10", "axial slice 19", "axial slice 29"]
    with pytest.raises(InputError, match="policy"):
        examples_from_volume(vol, lab, label=SPLEEN, empty_policy="maybe")


def test_progress_and_cancel(sparse_liver):
    vol, sparse, gt = sparse_liver
    examples = examples_from_labelled_slices(vol, sparse, label=LIVER)
    eng = UniverSegEngine(model=MeanLabel(), device="cpu")
    seen = []
    quiet(eng.segment_volume, vol, examples, roi=gt_roi(gt), label=LIVER, progress=lambda f, m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen) and len(seen) >= 30
    token = CancelToken()

    def progress(f, m):
        if f > 0.2:
            token.cancel()
    with pytest.raises(CancelledError):
        quiet(eng.segment_volume, vol, examples, roi=gt_roi(gt), label=LIVER, progress=progress, cancel=token)


# ------------------------------------------------------------------------------------------------ bad input --
def test_empty_label_example_skipped_with_warning_and_error_when_none_left(ct):
    vol, lab = ct
    eng = UniverSegEngine(model=MeanLabel(), device="cpu")
    good = [Example(vol[k], lab[k], f"s{k}") for k in range(8, 16)]
    empty = Example(vol[3], np.zeros_like(lab[3]), "blank")
    with pytest.warns(MedSegWarning, match="empty label.*blank"):
        res = eng.segment_volume(vol[20], good + [empty], label=LIVER)
    assert any("1 example(s) skipped" in m for m in res.messages)
    assert eng_calls_support(eng) == 8
    with pytest.raises(InputError, match="example.*label"):
        quiet(eng.segment_volume, vol[20], [empty, Example(vol[4], lab[4] * 0, "blank2")], label=1)


def eng_calls_support(eng):
    return eng.net.calls[-1][0]


def test_no_examples(ct):
    vol, _ = ct
    with pytest.raises(InputError, match="No examples"):
        UniverSegEngine(model=MeanLabel(), device="cpu").segment_volume(vol, [], label=1)


def test_label_value_absent_lists_values_present(ct):
    vol, lab = ct
    ex = [Example(vol[k], np.where(lab[k] == LIVER, 7, 0), f"s{k}") for k in (5, 6)]
    with pytest.raises(InputError, match=r"Label 3 .*values present: 7"):
        UniverSegEngine(model=MeanLabel(), device="cpu").segment_volume(vol, ex, label=3)
    with pytest.raises(InputError, match="not in the label map.*5"):
        examples_from_labelled_slices(vol, np.where(lab == LIVER, 5, 0), label=2)


def test_mismatched_dimensionality(ct):
    vol, lab = ct
    eng = UniverSegEngine(model=MeanLabel(), device="cpu")
    with pytest.raises(InputError, match="3-D volume.*2-D image"):
        eng.segment_volume(vol[10], [Example(vol, lab)], label=LIVER)
    with pytest.raises(InputError, match="differ in shape"):
        Example(vol[10], lab[10][:, :50], "cut")
    with pytest.raises(InputError, match="4-D|dimensions"):
        eng.segment_volume(vol[None], [Example(vol, lab)], label=LIVER)
    with pytest.raises(InputError, match="differ in shape"):
        examples_from_labelled_slices(vol, lab[:, :, :60], label=LIVER)


def test_roi_outside_or_malformed(ct):
    vol, lab = ct
    eng = UniverSegEngine(model=MeanLabel(), device="cpu")
    ex = examples_from_volume(vol, lab, label=LIVER, max_slices=8)
    with pytest.raises(InputError, match="outside"):
        eng.segment_volume(vol, ex, roi=(200, 10, 0, 250, 50, 5), label=LIVER)
    with pytest.raises(InputError, match="outside"):
        eng.segment_volume(vol, ex, roi=(10, 10, 40, 50, 50, 45), label=LIVER)
    with pytest.raises(InputError, match="inverted"):
        eng.segment_volume(vol, ex, roi=(50, 10, 0, 10, 50, 5), label=LIVER)
    with pytest.raises(InputError, match="has 4 numbers"):
        eng.segment_volume(vol, ex, roi=(1, 2, 3, 4), label=LIVER)
    with pytest.warns(MedSegWarning, match="clipped"):
        res = eng.segment_volume(vol, ex, roi=(40, 20, 25, 200, 90, 60), label=LIVER)
    assert not res.mask[:25].any() and res.mask[25:].any()


def test_bad_options(ct):
    vol, lab = ct
    eng = UniverSegEngine(model=MeanLabel(), device="cpu")
    ex = examples_from_volume(vol, lab, label=LIVER, max_slices=8)
    with pytest.raises(InputError, match="axis"):
        eng.segment_volume(vol, ex, axis="oblique", label=LIVER)
    with pytest.raises(InputError, match="Support size"):
        eng.segment_volume(vol, ex, support_size=0, label=LIVER)
    with pytest.raises(InputError, match="background"):
        eng.segment_volume(vol, ex, label=0)
    with pytest.raises(InputError, match="precision"):
        UniverSegEngine(model=MeanLabel(), device="cpu", precision="int8")
    with pytest.raises(InputError, match="fp16"):
        UniverSegEngine(model=MeanLabel(), device="cpu", precision="fp16")
    with pytest.raises(InputError, match="constant"):
        eng.segment_volume(np.zeros((4, 32, 32), np.int16), ex, label=LIVER)


def test_licence_not_accepted(universeg_state):
    """Weights under OpenRAIL++-M: refused until accepted (conftest gives every test an empty MEDSEG_HOME)."""
    from medseg_backend.weights import store

    state = universeg_state
    with pytest.raises(LicenceError, match="accept"):
        UniverSegEngine(device="cpu")
    with pytest.raises(LicenceError, match="accept"):
        UniverSegEngine(weights=str(state), device="cpu")
    store.accept_licence("universeg-v1")
    eng = UniverSegEngine(weights=str(state), device="cpu")
    assert eng.fast and sum(p.numel() for p in eng.net.parameters()) == 1182785


# --------------------------------------------------------------------------------------------------- library --
def test_library_round_trip_and_import(tmp_path, sparse_liver):
    vol, sparse, _ = sparse_liver
    examples = examples_from_labelled_slices(vol, sparse, label=LIVER)
    out = export_library(tmp_path / "liver", examples, structure="liver", modality="CT",
                         intensity="ct-abdomen", label=LIVER)
    assert (out / "manifest.json").is_file()
    back, manifest = load_library(out)
    assert manifest["structure"] == "liver" and manifest["label"] == LIVER and manifest["intensity"] == "ct-abdomen"
    assert len(back) == len(examples)
    for a, b in zip(examples, back):
        assert a.name == b.name
        assert np.array_equal(a.image, b.image) and a.image.dtype == b.image.dtype
        assert np.array_equal(a.label, b.label)
    with pytest.raises(InputError, match="already exists"):
        export_library(out, examples, structure="liver", modality="CT", label=LIVER)
    export_library(out, examples[:2], structure="liver", modality="CT", label=LIVER, overwrite=True)
    assert len(load_library(out)[0]) == 2
    dest = import_library(out, name="liver-ct")
    assert resolve_library("liver-ct") == dest
    assert [d["name"] for d in list_libraries()] == ["liver-ct"] and list_libraries()[0]["items"] == 2
    with pytest.raises(InputError, match="already exists"):
        import_library(out, name="liver-ct")


def test_library_missing_or_broken_manifest(tmp_path, sparse_liver):
    vol, sparse, _ = sparse_liver
    with pytest.raises(InputError, match="not found"):
        load_library(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No manifest.json"):
        load_library(tmp_path / "empty")
    out = export_library(tmp_path / "lib", examples_from_labelled_slices(vol, sparse, label=LIVER)[:2],
                         structure="liver", modality="CT", label=LIVER)
    mpath = out / "manifest.json"
    good = mpath.read_text(encoding="utf-8")
    mpath.write_text(good[:-20])
    with pytest.raises(InputError, match="not valid JSON"):
        load_library(out)
    mpath.write_text(good.replace('"structure"', '"organ"'))
    with pytest.raises(InputError, match="lacks structure"):
        load_library(out)
    mpath.write_text(good.replace('"images/001.nrrd"', '"../../etc/passwd"'))
    with pytest.raises(InputError, match="inside the library"):
        load_library(out)
    mpath.write_text(good)
    (out / "labels" / "001.seg.nrrd").unlink()
    with pytest.raises(InputError, match="labels/001.seg.nrrd.*missing"):
        load_library(out)
    (out / "labels" / "001.seg.nrrd").write_bytes(b"not an image")
    with pytest.raises(InputError, match="item 1: Cannot read .* as NRRD"):
        load_library(out)


def test_export_refuses_and_leaves_nothing(tmp_path, ct):
    vol, lab = ct
    other = tmp_path / "stuff"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    ex = [Example(vol[5], lab[5], "s5")]
    with pytest.raises(InputError, match="not an example library"):
        export_library(other, ex, structure="liver", modality="CT", label=LIVER)
    with pytest.raises(InputError, match="none of|None of"):
        export_library(tmp_path / "lib", ex, structure="liver", modality="CT", label=99)
    with pytest.raises(InputError, match="Unknown intensity"):
        export_library(tmp_path / "lib", ex, structure="liver", modality="CT", intensity="bone", label=LIVER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stuff"]


def test_intensity_rule_mismatch_names_the_example(ct):
    """An 8-bit target resolves `auto` to `raw`; a Hounsfield example cannot follow that rule."""
    vol, lab = ct
    target = np.clip((vol[15].astype(np.float64) + 160) / 400 * 255, 0, 255).astype(np.uint8)
    ex = [Example(vol[k], lab[k], f"hu slice {k}") for k in (14, 16)]
    eng = UniverSegEngine(model=MeanLabel(), device="cpu")
    with pytest.raises(InputError, match=r"Example 'hu slice 14'.*raw"):
        quiet(eng.segment_volume, target, ex, label=LIVER)
    res = quiet(eng.segment_volume, target, ex, label=LIVER, intensity="window:40,400")
    assert res.mask.any()
