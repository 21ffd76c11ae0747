"""Mixed precision, per layer group (issue 15, item 2): which parts of the LiteMedSAM image encoder can run in
bf16 (autocast) or int8 (dynamic quantisation of their linear layers) and keep the masks, and at what speed.

For each candidate - one group of the TinyViT encoder (patch embedding, stage 0-3, neck) in reduced precision, the
rest fp32 - the 30 official 2-D reference cases (``Testing/Data/litemedsam_reference``, tight boxes) are segmented
and compared with the fp32 masks of the same run (Dice per case: median and min), and the encoder is timed on a
batch of 2 prepared slices (median of 2, after a warm-up). The bar for a default (BENCHMARKS.md "Precision"): median Dice
>= 0.99 and min >= 0.97 to fp32 on every reference case, on this CPU and on CUDA, and faster.

Run: ``python benchmarks/precision_search.py [--cases 30]``
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "Testing"))

from fixture_data import litemedsam_2d_cases  # noqa: E402
from medseg_backend.medsam import MedSAMEngine  # noqa: E402
from medseg_backend.metrics import dice  # noqa: E402


def groups(encoder):
    out = {"patch_embed": encoder.patch_embed, "neck": encoder.neck}
    for i, layer in enumerate(encoder.layers):
        out[f"stage{i}"] = layer
    return out


def in_bf16(module):
    """Run ``module`` under bf16 autocast, returning fp32 (the next group stays fp32)."""
    forward = module.forward

    def run(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        return out.float()
    module.forward = run
    return lambda: setattr(module, "forward", forward)


def in_int8(parent, name):
    """Replace the child ``name`` of ``parent`` by its dynamically quantised copy (int8 linear layers)."""
    original = getattr(parent, name) if not name.isdigit() else parent[int(name)]
    quantised = torch.ao.quantization.quantize_dynamic(original, {torch.nn.Linear}, dtype=torch.qint8)

    def put(module):
        if name.isdigit():
            parent[int(name)] = module
        else:
            setattr(parent, name, module)
    put(quantised)
    return lambda: put(original)


def masks(engine, cases):
    engine.predictor.cache.clear()
    return [engine.segment_image(c["image"], c["box"], intensity="raw").mask for c in cases]


def encode_seconds(engine, batch):
    p = engine.predictor
    p._encode_batch(batch)                                   # warm-up
    times = []
    for _ in range(2):
        t = time.perf_counter()
        p._encode_batch(batch)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) / len(batch)


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=30, help="how many of the 30 reference cases (every n-th)")
    ap.add_argument("--kinds", default="bf16,int8", help="which reduced precisions to try (bf16 is emulated, and "
                    "very slow, on CPUs without AMX / AVX512-BF16)")
    args = ap.parse_args()
    torch.manual_seed(0)
    cases = litemedsam_2d_cases()
    cases = cases[::max(1, len(cases) // args.cases)][:args.cases]
    # The product's fused conv/linear+GELU oneDNN kernels take fp32 only: the search runs the plain (unfused)
    # encoder, fp32 baseline included, so each candidate changes one thing.
    import medseg_backend.models.optimize as optimize

    optimize.optimize_for_inference_ = lambda net, device: net
    engine = MedSAMEngine("lite-medsam", device="cpu", precision="fp32", runtime="torch")
    encoder = engine.predictor.net.image_encoder
    batch = [engine.predictor.transform.apply_image(c["image"]).tensor for c in cases[:2]]
    reference = masks(engine, cases)
    base = encode_seconds(engine, batch)
    print(f"LiteMedSAM encoder, {len(cases)} 2-D reference cases, CPU ({torch.get_num_threads()} threads), "
          f"fp32 {base:.3f} s/slice (unfused encoder)")
    print("| candidate | median Dice to fp32 | min Dice | encoder s/slice | speed vs fp32 | meets the bar |")
    print("|---|---|---|---|---|---|")
    kinds = args.kinds.split(",")
    candidates = [(f"{g} bf16", "bf16", g) for g in groups(encoder)] + [("all bf16", "bf16", None)] \
        if "bf16" in kinds else []
    if "int8" in kinds:
        candidates += [(f"{g} int8 (linear)", "int8", g) for g in ("stage1", "stage2", "stage3")]
    from medseg_backend.devices import cpu_has_native_bf16

    print(f"native bf16 on this CPU: {cpu_has_native_bf16()}")
    for label, kind, group in candidates:
        if kind == "bf16":
            targets = list(groups(encoder).values()) if group is None else [groups(encoder)[group]]
            undo = [in_bf16(m) for m in targets]
        else:
            undo = [in_int8(encoder.layers, group[-1])]
        try:
            d = [dice(a, b) for a, b in zip(masks(engine, cases), reference)]
            sec = encode_seconds(engine, batch)
        finally:
            for u in undo:
                u()
        ok = np.median(d) >= 0.99 and min(d) >= 0.97 and sec < base
        print(f"| {label} | {np.median(d):.4f} | {min(d):.4f} | {sec:.3f} | {base / sec:.2f}x | {'yes' if ok else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
