"""GPU correctness and timing check (run on a CUDA machine): LiteMedSAM parity with the official reference
outputs in fp32 / fp16 / bf16, and per-slice times for LiteMedSAM and ViT-B (random weights in the official
layout) per precision. Prints a JSON summary (and writes it to $OUT/gpu_check.json when OUT is set).

Usage: python benchmarks/gpu_check.py [--reference DIR] [--lite-weights FILE]

The reference cases are the bundled fixtures (``Testing/Data/litemedsam_reference``); ``--reference DIR`` reads a
folder of reference files in the original layout (``DIR/2d/*.npz``, ``DIR/3d/*.npz``) instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "Testing"))

from medseg_backend.medsam import MedSAMEngine  # noqa: E402
from medseg_backend.metrics import dice  # noqa: E402


def reference_cases(reference=None):
    """(2-D cases as a list of dicts, 3-D cases as {name: dict}): the fixtures, or the files under ``reference``."""
    if reference is None:
        import fixture_data

        return fixture_data.litemedsam_2d_cases(), fixture_data.litemedsam_3d_cases()
    ref = Path(reference)
    cases2d = [dict(np.load(f)) for f in sorted((ref / "2d").glob("*.npz"))]
    return cases2d, {f.stem: np.load(f) for f in sorted((ref / "3d").glob("*.npz"))}


def timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", help="folder with 2d/ and 3d/ reference files (default: the bundled fixtures)")
    ap.add_argument("--lite-weights")
    args = ap.parse_args()
    cases2d, cases3d = reference_cases(args.reference)
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "lite": {}, "vit_b": {}}
    masks32 = {}
    for prec in ("fp32", "fp16", "bf16"):
        eng = MedSAMEngine("lite-medsam", weights=args.lite_weights, device="cuda", precision=prec)
        d2 = []
        for d in cases2d:
            r = eng.segment_image(d["image"], tuple(int(v) for v in d["box"]), intensity="raw")
            d2.append(dice(r.mask, d["ref_mask"]))
        d3, n_slices, t_total = {}, 0, 0.0
        for name, d in cases3d.items():
            eng.predictor.cache.clear()
            r, dt = timed(lambda: eng.segment_volume(d["volume_u8"], [tuple(int(v) for v in d["box3d"])],
                                                     intensity="raw", propagation="official"))
            d3[name] = {"dice_ref": dice(r.labels, d["ref_mask"]), "dice_gt": dice(r.labels, d["gt"])}
            if prec == "fp32":
                masks32[name] = r.labels
            else:
                d3[name]["dice_fp32"] = dice(r.labels, masks32[name])
            n_slices += r.slices_run
            t_total += dt
        # steady-state timing on the largest case (warm), and re-prompt from the cache
        d = cases3d["sct_t1w_cord"]
        box = tuple(int(v) for v in d["box3d"])
        eng.predictor.cache.clear()
        r, dt = timed(lambda: eng.segment_volume(d["volume_u8"], [box], intensity="raw", propagation="official"))
        r2, dt2 = timed(lambda: eng.segment_volume(d["volume_u8"], [box], intensity="raw", propagation="official"))
        out["lite"][prec] = {"min_dice_2d": min(d2), "min_dice_3d_ref": min(v["dice_ref"] for v in d3.values()),
                             "cases_3d": d3, "s_per_slice_all_3d_cases": t_total / n_slices,
                             "s_per_slice_warm": dt / r.slices_run, "reprompt_ms_per_slice": 1000 * dt2 / r2.slices_run,
                             "reencoded_on_reprompt": r2.slices_encoded}
        print(prec, json.dumps(out["lite"][prec])[:400], flush=True)
    # ViT-B with random weights: speed per precision, agreement with fp32 masks
    from medseg_backend.models.sam import build_sam
    from sam_reference import randomize_

    net = build_sam("vit_b").eval()
    randomize_(net)
    d = cases3d["totalseg_ct_sm_liver"]
    box = tuple(int(v) for v in d["box3d"])
    m32 = None
    for prec in ("fp32", "fp16", "bf16"):
        eng = MedSAMEngine("medsam-vit-b", module=net, device="cuda", precision=prec)
        eng.segment_volume(d["volume_u8"][:4], [(box[0], box[1], 0, box[3], box[4], 3)], intensity="raw")  # warm-up
        eng.predictor.cache.clear()
        r, dt = timed(lambda: eng.segment_volume(d["volume_u8"], [box], intensity="raw"))
        r2, dt2 = timed(lambda: eng.segment_volume(d["volume_u8"], [box], intensity="raw"))
        if m32 is None:
            m32 = r.labels
        x = torch.rand(4, 3, 1024, 1024, device="cuda")
        emb32 = net.encode(x).float()
        with torch.autocast("cuda", dtype={"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[prec],
                            enabled=prec != "fp32"):
            embp = net.encode(x).float()
        out["vit_b"][prec] = {"s_per_slice": dt / r.slices_run, "reprompt_ms_per_slice": 1000 * dt2 / r2.slices_run,
                              "dice_vs_fp32_random_weights": dice(r.labels, m32),
                              "embedding_rel_err": float((embp - emb32).norm() / emb32.norm()),
                              "peak_mem_gb": torch.cuda.max_memory_allocated() / 2 ** 30}
        print("vit_b", prec, out["vit_b"][prec], flush=True)
        del eng
    text = json.dumps(out, indent=1)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(text)
    print("DONE")


if __name__ == "__main__":
    with torch.inference_mode():
        main()
