"""LiteMedSAM with the official weights reproduces the official pipeline's reference outputs (bundled in
Testing/Data/litemedsam_reference): 2-D per case Dice >= 0.99, 3-D per case Dice >= 0.98, multi-object."""
import numpy as np
import pytest

from medseg_backend.metrics import dice
from medseg_backend.medsam import MedSAMEngine


@pytest.fixture(scope="module")
def engine():
    return MedSAMEngine("lite-medsam", device="cpu", precision="fp32")


def test_2d_reference_parity(engine, litemedsam_2d_cases):
    dices, mean_abs = [], []
    for d in litemedsam_2d_cases:
        res = engine.segment_image(d["image"], d["box"], intensity="raw")
        dices.append(dice(res.mask, d["ref_mask"]))
        # the reference logits are kept in a window around the box (32 px margin): where the boundary is decided
        y0, x0, y1, x1 = d["logits_window"]
        mean_abs.append(float(np.mean(np.abs(res.logits[y0:y1, x0:x1] - d["ref_logits_window"]))))
        assert dices[-1] >= 0.99, f"{d['name']}: Dice {dices[-1]:.4f} to the reference mask"
    print(f"2-D parity: {len(dices)} cases, min Dice {min(dices):.4f}, mean |logit diff| {np.mean(mean_abs):.2e}, "
          f"max per-case mean {max(mean_abs):.2e}")
    assert len(dices) == 30
    assert np.mean(mean_abs) < 1e-3


def test_3d_reference_parity(engine, litemedsam_3d_cases):
    rows = []
    for name, d in litemedsam_3d_cases.items():
        box = tuple(int(v) for v in d["box3d"])
        res = engine.segment_volume(d["volume_u8"], [box], intensity="raw", propagation="official")
        dr, dg = dice(res.labels, d["ref_mask"]), dice(res.labels, d["gt"])
        rows.append((name, dr, dg, float(d["dice_vs_gt"])))
        assert dr >= 0.98, f"{name}: Dice {dr:.4f} to the reference mask"
        # slices outside the box's z-range stay empty
        z0, z1 = box[2], box[5]
        assert not res.labels[:z0].any() and not res.labels[z1 + 1:].any()
    for r in rows:
        print("3-D parity %-28s Dice to ref %.4f, to GT %.4f (reference to GT %.4f)" % r)
    assert len(rows) == 8


def test_3d_multiobject_parity(engine, litemedsam_3d_multiobject):
    d = litemedsam_3d_multiobject
    boxes = [tuple(int(v) for v in b) for b in d["boxes3d"]]
    res = engine.segment_volume(d["volume_u8"], boxes, intensity="raw", propagation="official")
    for i in range(1, len(boxes) + 1):
        di = dice(res.labels == i, d["ref_mask"] == i)
        assert di >= 0.98, f"object {i}: Dice {di:.4f}"
    assert set(np.unique(res.labels)) == set(np.unique(d["ref_mask"]))
