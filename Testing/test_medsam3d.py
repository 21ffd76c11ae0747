"""3-D MedSAM behaviour on real data with the official LiteMedSAM weights: axes, propagation modes, several
boxes, the embedding cache, cancellation and bad boxes. Small boxes keep this file fast."""
import warnings

import numpy as np
import pytest

from medseg_backend.metrics import dice
from medseg_backend.slicing import bbox3d
from medseg_backend.errors import CancelledError, InputError, MedSegWarning
from medseg_backend.io import read_image
from medseg_backend.medsam import MedSAMEngine
from medseg_backend.slicing import check_box
from medseg_backend.progress import CancelToken


@pytest.fixture(scope="module")
def engine():
    return MedSAMEngine("lite-medsam", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def ct(data_dir):
    img = read_image(str(data_dir / "totalseg_ct_sm" / "ct.nii.gz"))
    lab = read_image(str(data_dir / "totalseg_ct_sm" / "labels.nii.gz")).array
    return img.array, lab


def _kidney_box(lab, n=5):
    b = list(bbox3d(lab == 3))  # kidney_left
    mid = (b[2] + b[5]) // 2
    b[2], b[5] = mid - n // 2, mid - n // 2 + n - 1
    return tuple(b)


def test_box_on_real_ct_matches_label_and_cache_reuses_embeddings(engine, ct):
    vol, lab = ct
    box = _kidney_box(lab)
    res = engine.segment_volume(vol, [box], propagation="official")
    z0, z1 = box[2], box[5]
    d = dice(res.labels[z0:z1 + 1], lab[z0:z1 + 1] == 3)
    assert d > 0.85, d
    assert res.labels.shape == vol.shape and res.labels.dtype == np.uint8
    assert not res.labels[:z0].any() and not res.labels[z1 + 1:].any()
    assert "ct-abdomen" in res.messages[0]
    # a moved box on the same volume re-encodes nothing
    moved = (box[0] + 2, box[1] + 1, box[2], box[3] + 2, box[4] + 1, box[5])
    res2 = engine.segment_volume(vol, [moved], propagation="official")
    assert res2.slices_encoded == 0 and res2.slices_run == 5
    # a different intensity preset is a different encoder input: re-encoded
    res3 = engine.segment_volume(vol, [box], intensity="window:40,350", propagation="official")
    assert res3.slices_encoded == 5


def test_axes_are_voxel_space_permutations(engine, ct):
    """Segmenting along another axis equals segmenting the transposed volume axially."""
    vol, lab = ct
    b = bbox3d(lab == 3)
    # coronal: slices along J; keep 4 slices in the middle of the kidney
    jm = (b[1] + b[4]) // 2
    box = (b[0], jm - 2, b[2], b[3], jm + 1, b[5])
    cor = engine.segment_volume(vol, [box], axis="coronal")
    t = np.ascontiguousarray(np.transpose(vol, (1, 0, 2)))  # (J, K, I): axial slices are coronal planes
    ax = engine.segment_volume(t, [(box[0], box[2], box[1], box[3], box[5], box[4])], axis="axial")
    np.testing.assert_array_equal(cor.labels, np.transpose(ax.labels, (1, 0, 2)))
    assert cor.labels[:, jm - 2: jm + 2].any() and not cor.labels[:, : jm - 2].any()


def test_roi_and_stop_modes_and_several_boxes(engine, ct):
    vol, lab = ct
    kb = _kidney_box(lab, 5)
    sb = list(bbox3d(lab == 1))  # spleen on the same slices
    sb[2], sb[5] = kb[2], kb[5]
    res = engine.segment_volume(vol, [kb, tuple(sb)], propagation="roi")
    assert set(np.unique(res.labels)) == {0, 1, 2}
    sl = slice(kb[2], kb[5] + 1)
    assert dice(res.labels[sl] == 1, lab[sl] == 3) > 0.7 and dice(res.labels[sl] == 2, lab[sl] == 1) > 0.7
    assert all(p["previous"] == 0 for p in res.per_box)  # roi mode never carries a mask box
    # stop mode: a box that extends far beyond the object's end stops early
    k = list(bbox3d(lab == 3))
    z_end = k[5]
    box = (k[0], k[1], max(0, z_end - 3), k[3], k[4], vol.shape[0] - 1)
    full = engine.segment_volume(vol, [box], propagation="official")
    stop = engine.segment_volume(vol, [box], propagation="stop", stop_after=1)
    assert stop.slices_run <= full.slices_run


def test_cancel_mid_run_raises_and_returns_nothing(engine, ct):
    vol, lab = ct
    token = CancelToken()
    seen = []

    def progress(fraction, message):
        seen.append(fraction)
        if len(seen) == 3:
            token.cancel()

    box = _kidney_box(lab, 9)
    with pytest.raises(CancelledError, match="nothing was written"):
        engine.segment_volume(vol, [box], progress=progress, cancel=token)
    assert 0 < len(seen) < 10


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.float32, np.int32])
def test_integer_float_and_unsigned_volumes(engine, ct, dtype):
    vol, lab = ct
    box = _kidney_box(lab, 1)
    v = vol.astype(np.float64)
    if dtype in (np.uint16,):
        v = v + 1024  # shift to unsigned: no longer Hounsfield-like, so give the window explicitly
        res = engine.segment_volume(v.astype(dtype), [box], intensity="window:1064,400")
    else:
        res = engine.segment_volume(v.astype(dtype), [box])
    ref = engine.segment_volume(vol, [box])
    np.testing.assert_array_equal(res.labels, ref.labels)


def test_one_slice_volume(engine, ct):
    vol, lab = ct
    z = _kidney_box(lab, 1)[2]
    one = vol[z:z + 1]
    b = bbox3d(lab[z:z + 1] == 3)
    res = engine.segment_volume(one, [b])
    assert res.labels.shape == one.shape and dice(res.labels[0], lab[z] == 3) > 0.8


def test_bad_boxes(engine, ct):
    vol, _ = ct
    shape = vol.shape  # (30, 101, 122)
    with pytest.raises(InputError, match="inverted along z"):
        engine.segment_volume(vol, [(10, 10, 20, 50, 50, 5)])
    with pytest.raises(InputError, match="outside the image along z"):
        engine.segment_volume(vol, [(10, 10, 40, 50, 50, 45)])
    with pytest.raises(InputError, match="No box"):
        engine.segment_volume(vol, [])
    with pytest.raises(InputError, match="3-D volume"):
        engine.segment_volume(vol[0], [(1, 1, 0, 5, 5, 0)])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        clipped = check_box((-5, 10, 0, 500, 50, 99), shape)
    assert clipped == (0, 10, 0, 121, 50, 29)
    assert any(issubclass(w.category, MedSegWarning) and "clipped" in str(w.message) for w in rec)
    with pytest.raises(InputError, match="Unknown propagation"):
        engine.segment_volume(vol, [(1, 1, 1, 5, 5, 5)], propagation="fast")
    with pytest.raises(InputError, match="Unknown axis"):
        engine.segment_volume(vol, [(1, 1, 1, 5, 5, 5)], axis="oblique")


def test_cache_is_bounded():
    from medseg_backend.medsam import EmbeddingCache
    import torch

    cache = EmbeddingCache(max_bytes=3 * 256 * 64 * 64 * 4)
    for i in range(10):
        cache.put(("k", i), torch.zeros(1, 256, 64, 64))
    assert len(cache) == 3 and cache.bytes <= cache.max_bytes
    assert cache.get(("k", 9)) is not None and cache.get(("k", 0)) is None
