"""MedSAM 3-D benchmark: the plain official-style loop against the product path, same volume and box.

Run: ``.venv-test/bin/python benchmarks/bench_medsam3d.py [--models lite,vit_b] [--slices N] [--runtimes
torch,openvino] [--repeats R] [--encoder-repeats R] [--threads 1,2 [--threads-only]]``.

Each measurement runs in its own subprocess (so peak RSS is its own) with the same thread count:

* **plain**: a per-slice fp32 loop written here after the official scripts: ``np.repeat`` to 3 channels,
  OpenCV INTER_AREA (LiteMedSAM) / skimage anti-aliased bicubic (ViT-B) resizing, min-max, one encoder call per
  slice, batch 1, no cache, attention computed explicitly as the official model code does (Meta's
  ``segment_anything`` ViT-B; LiteMedSAM's TinyViT attention as matmul + bias + softmax);
* **product**: :class:`medseg_backend.medsam.MedSAMEngine` (own resamplers, batched encoding ahead of the
  propagation front, fused attention, default precision) on each encoder runtime (``torch``, ``openvino``; see
  :mod:`medseg_backend.runtime`), then a second box on the same volume ("re-prompt", embeddings from the cache).
  The product runs of the runtimes alternate ``--repeats`` times (medians reported), so a loaded machine slows
  them alike.
* **encoder** (``--encoder-repeats``): in one process, the torch and the OpenVINO encoder (fp32, and OpenVINO's
  bf16 hint where the CPU has bf16) called in turn on the same slice, at each ``--threads`` count: medians and
  the ratio to torch, and the largest embedding difference to torch.
* **threads** (``--threads`` without ``--encoder-repeats``; ``--threads-only`` skips the table above): the product
  path at each thread count (``MEDSEG_NUM_THREADS``, which sets torch's threads and OpenVINO's
  ``INFERENCE_NUM_THREADS``) on each runtime, every run in its own process, the runs alternating over
  ``--repeats`` rounds: medians, the speed-up over the first thread count and over torch at the same count.

ViT-B uses random weights in the official layout (the real checkpoint is not available offline): timings
do not depend on the values; the parity column compares the product masks with the plain loop's.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "Testing"))
DATA = REPO / "Testing" / "Data" / "totalseg_ct_sm"


def _volume_and_box(n_slices: int):
    import SimpleITK as sitk

    from medseg_backend.slicing import bbox3d
    from medseg_backend.intensity import apply_intensity, parse_preset

    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "ct.nii.gz")))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "labels.nii.gz")))
    vol = apply_intensity(ct, parse_preset("ct-abdomen"))
    box = list(bbox3d(lab == 5))  # liver
    mid = (box[2] + box[5]) // 2
    box[2] = max(box[2], mid - n_slices // 2)
    box[5] = min(box[5], box[2] + n_slices - 1)
    box2 = list(bbox3d(lab == 1))  # spleen, re-prompt on the same slices
    box2[2], box2[5] = box[2], box[5]
    return vol, tuple(box), tuple(box2)


# ---------------------------------------------------------------------------------------------------------
def _plain_lite_attention(model):
    """Replace fused attention by the official explicit formula (matmul, + bias, softmax, matmul)."""
    from medseg_backend.models.tiny_vit import WindowAttention

    def forward(self, x):
        b, n, _ = x.shape
        x = self.norm(x)
        q, k, v = self.qkv(x).view(b, n, self.num_heads, 3 * self.key_dim).split(self.key_dim, dim=3)
        q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
        attn = (q @ k.transpose(-2, -1)) * self.scale + self.attention_biases[:, self.bias_index]
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, self.num_heads * self.key_dim))

    for m in model.modules():
        if isinstance(m, WindowAttention):
            m.forward = forward.__get__(m)
    return model


def plain_loop(kind: str, vol: np.ndarray, box, timer):
    """Official-style per-slice loop (LiteMedSAM 3-D procedure), fp32, batch 1, no cache."""
    import cv2
    import torch
    import torch.nn.functional as F
    from skimage import transform

    torch.set_grad_enabled(False)
    if kind == "lite":
        from medseg_backend import load_model

        model = _plain_lite_attention(load_model("lite-medsam", device="cpu"))
        size = 256
    else:
        from medseg_backend.models.sam import CONFIGS
        from sam_reference import build_meta_sam, randomize_

        model = build_meta_sam(CONFIGS["vit_b"])
        randomize_(model)
        size = 1024
    x0, y0, z0, x1, y1, z1 = box
    depth, h, w = vol.shape
    seg = np.zeros_like(vol, dtype=np.uint8)
    mid = int((z1 - z0) / 2 + z0)

    def encode_decode(img2d, box2d):
        img3 = np.repeat(img2d[:, :, None], 3, axis=-1)
        if kind == "lite":
            s = size / max(h, w)
            nh, nw = int(h * s + 0.5), int(w * s + 0.5)
            r = cv2.resize(img3, (nw, nh), interpolation=cv2.INTER_AREA)
            r = (r - r.min()) / np.clip(r.max() - r.min(), 1e-8, None)
            r = np.pad(r, ((0, size - nh), (0, size - nw), (0, 0)))
            t = torch.tensor(r).float().permute(2, 0, 1)[None]
            emb = model.image_encoder(t)
            b = torch.tensor([box2d], dtype=torch.float32)[:, None, :]
            sp, de = model.prompt_encoder(points=None, boxes=b, masks=None)
            low, _ = model.mask_decoder(emb, model.prompt_encoder.get_dense_pe(), sp, de, multimask_output=False)
            up = F.interpolate(low[..., :nh, :nw], size=(h, w), mode="bilinear", align_corners=False)
            return (torch.sigmoid(up)[0, 0] > 0.5).numpy().astype(np.uint8)
        r = transform.resize(img3, (size, size), order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)
        r = (r - r.min()) / np.clip(r.max() - r.min(), 1e-8, None)
        t = torch.tensor(r).float().permute(2, 0, 1)[None]
        emb = model.image_encoder(t)
        b = torch.tensor([box2d], dtype=torch.float32)[:, None, :]
        sp, de = model.prompt_encoder(points=None, boxes=b, masks=None)
        low, _ = model.mask_decoder(emb, model.prompt_encoder.get_dense_pe(), sp, de, multimask_output=False)
        up = F.interpolate(torch.sigmoid(low), size=(h, w), mode="bilinear", align_corners=False)
        return (up[0, 0] > 0.5).numpy().astype(np.uint8)

    def to_model(b):
        if kind == "lite":
            ratio = size / max(h, w)
            return [int(v * ratio) for v in b]
        return list(np.asarray(b, dtype=float) / np.array([w, h, w, h]) * size)

    mid_box = to_model([x0, y0, x1, y1])
    encode_decode(vol[mid], mid_box)  # warm-up (first-call allocations), not timed
    timer[0] = time.perf_counter()
    n = 0
    for order, step in ((range(mid, min(z1 + 1, depth)), -1), (range(mid - 1, max(-1, z0 - 1), -1), 1)):
        for z in order:
            b = mid_box
            if z != mid and seg[z + step].any():
                prev = seg[z + step]
                if kind == "lite":
                    s = size / max(h, w)
                    pm = cv2.resize(prev, (int(w * s + 0.5), int(h * s + 0.5)), interpolation=cv2.INTER_AREA)
                    ys, xs = np.nonzero(pm)
                    if ys.size:
                        b = [max(0, xs.min() - 3), max(0, ys.min() - 3), min(size, xs.max() + 3),
                             min(size, ys.max() + 3)]
                else:
                    ys, xs = np.nonzero(prev)
                    m = 3.0 * max(h, w) / 256
                    bb = np.clip([xs.min() - m, ys.min() - m, xs.max() + m, ys.max() + m], 0,
                                 [w - 1, h - 1, w - 1, h - 1])
                    b = to_model(bb)
            seg[z] = encode_decode(vol[z], b)
            n += 1
    return seg, n


def _vit_b_random():
    """ViT-B with the plain loop's random weights (Meta's model, same seed), in our module."""
    from medseg_backend.models.sam import CONFIGS, build_sam
    from sam_reference import build_meta_sam, randomize_

    ref = build_meta_sam(CONFIGS["vit_b"])
    randomize_(ref)
    net = build_sam("vit_b").eval()
    net.load_state_dict(ref.state_dict(), strict=True)
    return net


def product(kind: str, vol: np.ndarray, box, box2, precision: str, runtime: str = "auto"):
    from medseg_backend.medsam import MedSAMEngine

    if kind == "lite":
        engine = MedSAMEngine("lite-medsam", device="cpu", precision=precision, runtime=runtime)
    else:
        engine = MedSAMEngine("medsam-vit-b", module=_vit_b_random(), device="cpu", precision=precision,
                              runtime=runtime)
    engine.segment_volume(vol, [(box[0], box[1], 0, box[3], box[4], engine.predictor.batch_size - 1)], intensity="raw",
                          propagation="official")
    engine.predictor.cache.clear()  # warm-up (first-call allocations) done, not timed; the timed run starts cold
    t = time.perf_counter()
    res = engine.segment_volume(vol, [box], intensity="raw", propagation="official")
    first = time.perf_counter() - t
    t = time.perf_counter()
    res2 = engine.segment_volume(vol, [box2], intensity="raw", propagation="official")
    second = time.perf_counter() - t
    return (res.labels, res.slices_run, first, second, res2.slices_run, res2.slices_encoded, engine.precision,
            engine.runtime)


def encoder_timing(kind: str, threads, repeats: int) -> list:
    """Torch and OpenVINO encoders in one process, called in turn on the same slice (see the module docstring)."""
    import torch

    from medseg_backend.devices import cpu_has_native_bf16
    from medseg_backend.medsam import MedSAMPredictor

    size = 256 if kind == "lite" else 1024
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    rows = []
    for n in threads:
        os.environ["MEDSEG_NUM_THREADS"] = str(n)
        make = (lambda r, p="fp32": MedSAMPredictor("lite-medsam", device="cpu", precision=p, runtime=r)) \
            if kind == "lite" else \
            (lambda r, p="fp32": MedSAMPredictor("medsam-vit-b", device="cpu", precision=p, runtime=r,
                                                 module=_vit_b_random()))
        runners = {"torch": make("torch"), "openvino": make("openvino")}
        if cpu_has_native_bf16():
            runners["openvino bf16 hint"] = make("openvino", "bf16")
        runners = {k: p for k, p in runners.items() if k == "torch" or p.runtime == "openvino"}
        inp = [x[0].numpy()]
        ref = runners["torch"]._encode_batch(inp)
        times = {k: [] for k in runners}
        diff = {k: float((p._encode_batch(inp) - ref).abs().max() / ref.abs().max()) for k, p in runners.items()}
        for _ in range(repeats):
            for k, p in runners.items():
                t = time.perf_counter()
                p._encode_batch(inp)
                times[k].append(time.perf_counter() - t)
        base = float(np.median(times["torch"]))
        for k in runners:
            med = float(np.median(times[k]))
            rows.append(dict(kind=kind, threads=torch.get_num_threads(), runtime=k, median=med, best=min(times[k]),
                             ratio=base / med, rel_diff=diff[k], repeats=repeats))
        del runners
    return rows


def worker(args) -> None:
    import torch

    from medseg_backend.devices import configure_cpu_threads

    if args.worker == "encoder":
        print(json.dumps(encoder_timing(args.kind, [int(t) for t in args.threads.split(",")],
                                        args.encoder_repeats)))
        return
    configure_cpu_threads()
    vol, box, box2 = _volume_and_box(args.slices)
    out = {"threads": torch.get_num_threads()}
    if args.worker == "plain":
        timer = [time.perf_counter()]
        seg, n = plain_loop(args.kind, vol, box, timer)
        out.update(seconds=time.perf_counter() - timer[0], slices=n)
    else:
        seg, n, first, second, n2, enc2, prec, rt_used = product(args.kind, vol, box, box2, args.precision,
                                                                 args.runtime)
        out.update(seconds=first, slices=n, reprompt_seconds=second, reprompt_slices=n2, reprompt_encoded=enc2,
                   precision=prec, runtime=rt_used)
    np.save(args.mask_out, seg)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps(out))


def _run(kind, mode, args, runtime="auto", env=None):
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".npy", delete=False) as fh:
        mask_path = fh.name
    cmd = [sys.executable, __file__, "--worker", mode, "--kind", kind, "--slices", str(args.slices),
           "--precision", args.precision, "--runtime", runtime, "--mask-out", mask_path]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["mask"] = np.load(mask_path)
    os.unlink(mask_path)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="lite,vit_b")
    ap.add_argument("--slices", type=int, default=8, help="slices in the box's z-range (liver, middle of the volume)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--runtimes", default="torch,openvino", help="product runs on these encoder runtimes")
    ap.add_argument("--repeats", type=int, default=1, help="product runs per runtime, alternating (median shown)")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain official-style loop")
    ap.add_argument("--encoder-repeats", type=int, default=0, help="also time the encoders in one process")
    ap.add_argument("--worker", choices=["plain", "product", "encoder"])
    ap.add_argument("--kind")
    ap.add_argument("--runtime", default="auto")
    ap.add_argument("--mask-out")
    ap.add_argument("--threads", default="", help="also time the product path at these thread counts, e.g. 1,2 "
                    "(--repeats rounds)")
    ap.add_argument("--threads-only", action="store_true", help="with --threads: only the thread table")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    from medseg_backend.metrics import dice

    runtimes = args.runtimes.split(",")
    if not args.threads_only:
        print("| model | path | threads | slices | s/slice (median) | runs | speed-up over plain | over product torch | "
              "re-prompt ms/slice | re-encoded | peak RSS MB | Dice vs plain | Dice vs product torch | precision |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in ([] if args.threads_only else args.models.split(",")):
        plain = None if args.no_plain else _run(kind, "plain", args)
        runs = {r: [] for r in runtimes}
        for _ in range(args.repeats):
            for r in runtimes:
                runs[r].append(_run(kind, "product", args, r))
        sp = plain["seconds"] / plain["slices"] if plain else None
        if plain:
            print("| %s | plain fp32 loop | %d | %d | %.3f | 1 | 1.00x | - | - | - | %.0f | - | - | fp32 |"
                  % (kind, plain["threads"], plain["slices"], sp, plain["peak_rss_mb"]))
        per = {r: float(np.median([q["seconds"] / q["slices"] for q in runs[r]])) for r in runtimes}
        base = per.get("torch")
        for r in runtimes:
            q = runs[r][-1]
            print("| %s | product %s | %d | %d | %.3f | %d | %s | %s | %.1f | %d | %.0f | %s | %s | %s |" % (
                kind, q["runtime"], q["threads"], q["slices"], per[r], len(runs[r]),
                "%.2fx" % (sp / per[r]) if sp else "-", "%.2fx" % (base / per[r]) if base else "-",
                float(np.median([x["reprompt_seconds"] / x["reprompt_slices"] for x in runs[r]])) * 1000,
                q["reprompt_encoded"], q["peak_rss_mb"], "%.4f" % dice(plain["mask"], q["mask"]) if plain else "-",
                "%.4f" % dice(runs["torch"][-1]["mask"], q["mask"]) if "torch" in runs else "-", q["precision"]))
    if args.encoder_repeats:
        from medseg_backend.devices import available_cores

        cores = str(available_cores())
        print("\n| encoder | threads | runtime | median s | best s | speed-up over torch | max rel. diff to torch | "
              "calls |")
        print("|---|---|---|---|---|---|---|---|")
        for kind in args.models.split(","):
            cmd = [sys.executable, __file__, "--worker", "encoder", "--kind", kind, "--threads", args.threads or cores,
                   "--encoder-repeats", str(args.encoder_repeats)]
            rows = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                              .strip().splitlines()[-1])
            for r in rows:
                print("| %s | %d | %s | %.3f | %.3f | %.2fx | %.1e | %d |" % (
                    r["kind"], r["threads"], r["runtime"], r["median"], r["best"], r["ratio"], r["rel_diff"],
                    r["repeats"]))
    elif args.threads:
        # Scaling with cores: the product path at each thread count and runtime, each run in its own process; the
        # runs alternate (thread counts inside runtimes inside --repeats rounds), medians.
        counts = [int(t) for t in args.threads.split(",")]
        print("\n| model | runtime | threads | product s/slice (median) | runs | speed-up over %d thread(s) | "
              "speed-up over torch | Dice vs torch |" % counts[0])
        print("|---|---|---|---|---|---|---|---|")
        for kind in args.models.split(","):
            got = {(r, n): [] for r in runtimes for n in counts}
            for _ in range(args.repeats):
                for r in runtimes:
                    for n in counts:
                        got[r, n].append(_run(kind, "product", args, r,
                                              env=dict(os.environ, MEDSEG_NUM_THREADS=str(n))))
            med = {k: float(np.median([q["seconds"] / q["slices"] for q in v])) for k, v in got.items()}
            for r in runtimes:
                for n in counts:
                    q = got[r, n][-1]
                    ref = got.get(("torch", n))
                    print("| %s | %s | %d | %.3f | %d | %.2fx | %s | %s |" % (
                        kind, q["runtime"], q["threads"], med[r, n], len(got[r, n]), med[r, counts[0]] / med[r, n],
                        "%.2fx" % (med["torch", n] / med[r, n]) if ref else "-",
                        "%.4f" % dice(ref[-1]["mask"], q["mask"]) if ref else "-"))


if __name__ == "__main__":
    main()
