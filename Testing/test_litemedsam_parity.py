"""LiteMedSAM with the official weights reproduces the official pipeline's reference outputs (bundled in
Testing/Data/litemedsam_reference): 2-D per case Dice >= 0.99, 3-D per case Dice >= 0.98, multi-object - through
both encoder runtimes. The OpenVINO runtime is gated on torch (issue 27): embeddings within 1e-4, the very same
2-D masks as torch, and 3-D masks at Dice >= 0.9999 to torch's and to the reference (a 3-D walk carries each
slice's mask into the next box, so one pixel flipped by float rounding can move a few more). Measured 2026-12-07:
every case identical but the 77-slice spinal cord case (sct_t1w_cord), where exactly one voxel differs (slice 16, 22
slices into the downward walk from slice 38; OpenVINO 80 voxels there, torch and the official 79), Dice 0.99991;
the embeddings of that slice and its neighbours differ by 2.9e-6 - 4.5e-6 (max abs) and the voxel's probability is
0.4999954 through torch, 0.5000016 through OpenVINO (on the threshold); the same voxel with an export of
the plain (unfolded) module, with the fp32 precision hint set explicitly: an fp32 rounding difference on a
boundary pixel, not a defect of the export, so the gate is the honest 0.9999, not 1.0000."""
import numpy as np
import pytest

from medseg_backend.metrics import dice
from medseg_backend.medsam import MedSAMEngine
from medseg_backend.runtime import openvino_version

RUNTIMES = ["torch", pytest.param("openvino", marks=pytest.mark.skipif(openvino_version() is None,
                                                                        reason="openvino is not installed"))]
#: masks of the torch runs, the baseline of the OpenVINO runs (filled by the torch tests, or on demand)
_TORCH = {}


@pytest.fixture(scope="module")
def engines():
    made = {}

    def get(runtime):
        if runtime not in made:
            made[runtime] = MedSAMEngine("lite-medsam", device="cpu", precision="fp32", runtime=runtime)
            assert made[runtime].runtime == runtime
        return made[runtime]
    return get


def _torch_masks(engines, what, run):
    if what not in _TORCH:
        _TORCH[what] = run(engines("torch"))
    return _TORCH[what]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_2d_reference_parity(engines, litemedsam_2d_cases, runtime):
    engine = engines(runtime)
    dices, mean_abs, masks = [], [], []
    for d in litemedsam_2d_cases:
        res = engine.segment_image(d["image"], d["box"], intensity="raw")
        masks.append(res.mask)
        dices.append(dice(res.mask, d["ref_mask"]))
        # the reference logits are kept in a window around the box (32 px margin): where the boundary is decided
        y0, x0, y1, x1 = d["logits_window"]
        mean_abs.append(float(np.mean(np.abs(res.logits[y0:y1, x0:x1] - d["ref_logits_window"]))))
        assert dices[-1] >= 0.99, f"{d['name']}: Dice {dices[-1]:.4f} to the reference mask"
    print(f"2-D parity ({runtime}): {len(dices)} cases, min Dice {min(dices):.4f}, mean |logit diff| "
          f"{np.mean(mean_abs):.2e}, max per-case mean {max(mean_abs):.2e}")
    assert len(dices) == 30
    assert np.mean(mean_abs) < 1e-3
    if runtime == "torch":
        _TORCH["2d"] = masks
        return
    base = _torch_masks(engines, "2d", lambda e: [e.segment_image(d["image"], d["box"], intensity="raw").mask
                                                  for d in litemedsam_2d_cases])
    for d, m, b in zip(litemedsam_2d_cases, masks, base):
        assert np.array_equal(m, b), f"{d['name']}: OpenVINO mask differs from torch's (Dice {dice(m, b):.6f})"
    # the embeddings themselves (both engines hold them in their caches)
    tp, op = engines("torch").predictor, engine.predictor
    worst = max(float((a - b).abs().max()) for d in litemedsam_2d_cases
                for a, b in zip(tp.embeddings([d["image"]]), op.embeddings([d["image"]])))
    print(f"2-D embeddings, OpenVINO vs torch: max |diff| {worst:.2e}")
    assert worst < 1e-4


def _run_3d(engine, cases):
    out = {}
    for name, d in cases.items():
        box = tuple(int(v) for v in d["box3d"])
        out[name] = engine.segment_volume(d["volume_u8"], [box], intensity="raw", propagation="official").labels
    return out


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_3d_reference_parity(engines, litemedsam_3d_cases, runtime):
    labels = _run_3d(engines(runtime), litemedsam_3d_cases)
    rows = []
    for name, d in litemedsam_3d_cases.items():
        box = tuple(int(v) for v in d["box3d"])
        dr, dg = dice(labels[name], d["ref_mask"]), dice(labels[name], d["gt"])
        rows.append((runtime, name, dr, dg, float(d["dice_vs_gt"])))
        assert dr >= 0.98, f"{name}: Dice {dr:.4f} to the reference mask"
        # slices outside the box's z-range stay empty
        z0, z1 = box[2], box[5]
        assert not labels[name][:z0].any() and not labels[name][z1 + 1:].any()
    for r in rows:
        print("3-D parity (%s) %-28s Dice to ref %.4f, to GT %.4f (reference to GT %.4f)" % r)
    assert len(rows) == 8
    if runtime == "torch":
        _TORCH["3d"] = labels
        return
    base = _torch_masks(engines, "3d", lambda e: _run_3d(e, litemedsam_3d_cases))
    for name, d in litemedsam_3d_cases.items():
        to_torch, to_ref = dice(labels[name], base[name]), dice(labels[name], d["ref_mask"])
        print(f"3-D OpenVINO {name:28s} Dice to torch {to_torch:.6f}, to the reference {to_ref:.6f}")
        assert to_torch >= 0.9999 and to_ref >= 0.9999, f"{name}: Dice {to_torch:.6f} to torch, {to_ref:.6f} to ref"
    # the embeddings where the one voxel flips (see the module docstring) are within 1e-4 of torch's
    vol = litemedsam_3d_cases["sct_t1w_cord"]["volume_u8"]
    tp, op = engines("torch").predictor, engines(runtime).predictor
    worst = max(float((a - b).abs().max()) for z in (15, 16, 17)
                for a, b in zip(tp.embeddings([vol[z]]), op.embeddings([vol[z]])))
    print(f"3-D embeddings (sct_t1w_cord slices 15-17), OpenVINO vs torch: max |diff| {worst:.2e}")
    assert worst < 1e-4


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_3d_multiobject_parity(engines, litemedsam_3d_multiobject, runtime):
    d = litemedsam_3d_multiobject
    boxes = [tuple(int(v) for v in b) for b in d["boxes3d"]]
    res = engines(runtime).segment_volume(d["volume_u8"], boxes, intensity="raw", propagation="official")
    for i in range(1, len(boxes) + 1):
        di = dice(res.labels == i, d["ref_mask"] == i)
        assert di >= 0.98, f"object {i}: Dice {di:.4f}"
    assert set(np.unique(res.labels)) == set(np.unique(d["ref_mask"]))
    if runtime == "torch":
        _TORCH["multi"] = res.labels
        return
    base = _torch_masks(engines, "multi", lambda e: e.segment_volume(d["volume_u8"], boxes, intensity="raw",
                                                                     propagation="official").labels)
    for i in range(1, len(boxes) + 1):
        assert dice(res.labels == i, base == i) >= 0.9999, f"object {i}: Dice {dice(res.labels == i, base == i):.6f}"
