"""UniverSeg speed / memory / agreement: the plain fp32 implementation against the product path, in one run.

    python benchmarks/bench_universeg.py [--queries 3] [--support-size 64] [--device cpu|cuda] [--skip-plain]
                                         [--runtimes-only] [--repeats 3] [--threads 1,2]

Inputs come from a real volume (the bundled TotalSegmentator ``ct_sm`` CT): the support set is 64 liver slices
(sagittal, cropped / resized to 128 x 128 by the pipeline's own support code), the queries are sagittal slices of
the same CT cropped around the liver. Weights: ``Testing/Data/universeg_reference/random_v1_state.pt`` (random values
in the official layout; speed does not depend on the values) or a random init when it is missing.

Each variant runs in its own worker process so that its peak memory is its own: **peak RSS** of the worker
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``; Python + torch + data + model included; the baseline RSS after
loading is printed too). Variants:

* ``plain``      - :meth:`UniverSeg.forward_reference` (``models/universeg.py``), fp32, every (query, support item) pair materialised
                   (the released implementation's formulation; the baseline);
* ``fast-fp32``  - the product network path (split CrossConv, shared support, ...), fp32 (the default);
* ``fast-bf16``  - the same in bf16 (CPU with AMX/AVX512-BF16, or CUDA);
* ``engine``     - the whole product pipeline (:class:`UniverSegEngine.segment_volume`: intensity, crops,
                   resize, network, paste back) per query slice, default precision.

Then the agreement: max |probability difference| and differing mask pixels of each fast variant against the
plain path on the benchmark queries, and against the released implementation's outputs on the three reference
cases (``reference_io.npz``).

**Runtime** (CPU, when OpenVINO is installed; issue 27): in one worker process per thread count (``--threads``,
default: the product's), the product's per-query network in torch (:meth:`UniverSegFast.predict_with_support`) and
the same work exported to OpenVINO (:class:`~medseg_backend.models.universeg_fast.QueryGraph` through
:func:`medseg_backend.runtime.openvino_model`: one export, the number of support items a dynamic dimension; fp32,
and OpenVINO's bf16 hint where the CPU has bf16), called in turn on each query ``--repeats`` times: medians, the
ratio to torch, the export (or cache load) time, and the outputs compared with torch's: max |probability
difference| and the Dice of the masks (p > 0.5). The reference cases get an OpenVINO fp32 column too.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REF = REPO / "Testing" / "Data" / "universeg_reference"      # bundled fixtures (random weights, reference I/O)
CT = REPO / "Testing" / "Data" / "totalseg_ct_sm"
LIVER = 5


def openvino_version():
    from medseg_backend.runtime import openvino_version as version

    return version()


def rss_mb() -> float:
    """Peak RSS of this process in MB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2 ** 20 if sys.platform == "darwin" else r / 1024


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        return float("nan")


def load_net(device):
    from medseg_backend.models.universeg_fast import build_universeg_v1

    net = build_universeg_v1()
    state = REF / "random_v1_state.pt"
    if state.is_file():
        net.load_state_dict(torch.load(state, map_location="cpu", weights_only=True), strict=True)
    return net.to(device).eval()


def read_ct():
    npz = os.environ.get("MEDSEG_BENCH_CT_NPZ")   # machines without SimpleITK: arrays saved beforehand
    if npz:
        d = np.load(npz)
        return d["vol"], d["lab"]
    import SimpleITK as sitk

    vol = sitk.GetArrayFromImage(sitk.ReadImage(str(CT / "ct.nii.gz")))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(CT / "labels.nii.gz")))
    return vol, lab


def query_plan(lab, n_queries):
    """Sagittal query slices in the middle of the liver and the liver's ROI (x0, y0, z0, x1, y1, z1)."""
    k, j, i = np.nonzero(lab == LIVER)
    mid = int((i.min() + i.max()) // 2)
    first = mid - n_queries // 2
    roi = (first, int(j.min()), int(k.min()), first + n_queries - 1, int(j.max()), int(k.max()))
    return roi


def prepare_inputs(tmp: Path, n_queries: int, support_size: int) -> dict:
    """Support (S,1,128,128) and queries (Q,1,128,128) from the real CT through the pipeline's own code."""
    from medseg_backend.intensity import resolve_preset
    from medseg_backend.universeg import examples_from_volume
    from medseg_backend.universeg import support as sp

    vol, lab = read_ct()
    rule, _ = resolve_preset("auto", vol)
    examples = examples_from_volume(vol, lab, label=LIVER, axis="sagittal")
    items = sp.build_support(examples, rule, label=LIVER, axis="sagittal")
    idx = sp.choose_subsets(len(items), support_size, 1, 0)[0]
    roi = query_plan(lab, n_queries)
    x0, y0, z0, x1, y1, z1 = roi
    sq = sp.square_around((z0, y0, z1, y1))
    queries = np.stack([sp.to_model_image(sp.normalise_slice(vol[:, :, x], rule), sq) for x in range(x0, x1 + 1)])
    torch.save({"images": items.images[idx], "labels": items.labels[idx],
                "queries": torch.from_numpy(queries[:, None])}, tmp / "inputs.pt")
    return {"support": int(len(idx)), "available": len(items), "queries": int(len(queries)), "roi": roi}


# ------------------------------------------------------------------------------------------------ workers --
def worker(kind: str, tmp: Path, device: str) -> None:
    from medseg_backend.devices import configure_cpu_threads

    dev = torch.device(device)
    if dev.type == "cpu":
        configure_cpu_threads()
    result = {"kind": kind, "threads": torch.get_num_threads()}
    if kind == "engine":
        run_engine(tmp, dev, result)
    elif kind.startswith("runtimes"):
        run_runtimes(tmp, result, int(os.environ.get("MEDSEG_BENCH_REPEATS", "3")))
    else:
        data = torch.load(tmp / "inputs.pt", weights_only=True)
        net = load_net(dev)
        si, sl, qs = data["images"].to(dev), data["labels"].to(dev), data["queries"].to(dev)
        result["rss_loaded_mb"] = current_rss_mb()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        probs, times = [], []
        with torch.inference_mode():
            if kind == "plain":
                for q in qs:
                    t = time.perf_counter()
                    logit = net.forward_reference(q[None], si[None], sl[None])
                    _sync(dev)
                    times.append(time.perf_counter() - t)
                    probs.append(torch.sigmoid(logit.float())[0, 0].cpu().numpy())
            else:
                net.compute_dtype = {"fast-fp32": None, "fast-bf16": torch.bfloat16,
                                     "fast-fp16": torch.float16}[kind]
                t = time.perf_counter()
                cache = net.prepare_support(si, sl)
                _sync(dev)
                result["prepare_s"] = time.perf_counter() - t
                net.predict_with_support(qs[:1], cache)            # warm-up (allocator, oneDNN primitives)
                _sync(dev)
                for q in qs:
                    t = time.perf_counter()
                    logit = net.predict_with_support(q[None], cache)
                    _sync(dev)
                    times.append(time.perf_counter() - t)
                    probs.append(torch.sigmoid(logit.float())[0, 0].cpu().numpy())
        np.save(tmp / f"{kind}.npy", np.stack(probs))
        result["per_query_s"] = times
    result["peak_rss_mb"] = rss_mb()
    if dev.type == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    (tmp / f"{kind}.json").write_text(json.dumps(result))


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def openvino_query_network(net, cache, query, threads: int, precision: str = "fp32"):
    """The product's per-query network exported to OpenVINO (S dynamic), from the export cache when kept."""
    from medseg_backend import runtime as rt
    from medseg_backend.models.universeg_fast import QueryGraph

    h, w = query.shape[-2:]
    c = cache.level0.shape[1]
    return rt.openvino_model(QueryGraph(net).eval(), (query, cache.level0, cache.cross0_mean),
                             shapes=[[1, 1, h, w], [-1, c, h, w], [1, c, h, w]], name="universeg-v1",
                             what="query network", threads=threads, precision=precision)


def run_runtimes(tmp: Path, result: dict, repeats: int) -> None:
    """torch and OpenVINO on the same queries, called in turn (see the module docstring)."""
    from medseg_backend.devices import cpu_has_native_bf16

    data = torch.load(tmp / "inputs.pt", weights_only=True)
    net = load_net(torch.device("cpu"))
    si, sl, qs = data["images"], data["labels"], data["queries"]
    with torch.inference_mode():
        cache = net.prepare_support(si, sl)
    threads = torch.get_num_threads()
    runners = {"torch": lambda q: net.predict_with_support(q, cache)}
    export_s = {}
    for name, prec in [("openvino", "fp32")] + ([("openvino bf16 hint", "bf16")] if cpu_has_native_bf16() else []):
        t = time.perf_counter()
        ovm = openvino_query_network(net, cache, qs[:1], threads, prec)
        export_s[name] = time.perf_counter() - t
        if ovm is None:
            continue
        runners[name] = (lambda m: lambda q: m(q, cache.level0, cache.cross0_mean))(ovm)
    times = {k: [] for k in runners}
    probs = {}
    with torch.inference_mode():
        for k, run in runners.items():   # warm-up, and the outputs compared
            probs[k] = np.stack([torch.sigmoid(run(q[None]))[0, 0].numpy() for q in qs])
        for _ in range(repeats):
            for q in qs:
                for k, run in runners.items():
                    t = time.perf_counter()
                    run(q[None])
                    times[k].append(time.perf_counter() - t)
    from medseg_backend.metrics import dice

    result["support"] = int(si.shape[0])
    result["rows"] = [{"runtime": k, "median_s": float(np.median(v)), "best_s": float(min(v)), "calls": len(v),
                       "export_s": export_s.get(k), "max_dp": float(np.abs(probs[k] - probs["torch"]).max()),
                       "dice": float(dice(probs[k] > 0.5, probs["torch"] > 0.5)),
                       "px": int(np.count_nonzero((probs[k] > 0.5) != (probs["torch"] > 0.5)))}
                      for k, v in times.items()]


def run_engine(tmp: Path, dev, result: dict) -> None:
    from medseg_backend.universeg import UniverSegEngine, examples_from_volume

    meta = json.loads((tmp / "meta.json").read_text())
    vol, lab = read_ct()
    examples = examples_from_volume(vol, lab, label=LIVER, axis="sagittal")
    engine = UniverSegEngine(model=load_net(dev), device=dev)
    result["rss_loaded_mb"] = current_rss_mb()
    result["precision"] = engine.precision
    roi = tuple(meta["roi"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine.segment_volume(vol, examples, roi=roi[:3] + (roi[0],) + roi[4:], axis="sagittal", label=LIVER,
                              support_size=meta["support"])                          # warm-up, one slice
        t = time.perf_counter()
        res = engine.segment_volume(vol, examples, roi=roi, axis="sagittal", label=LIVER,
                                    support_size=meta["support"])
    total = time.perf_counter() - t
    result["total_s"] = total
    result["per_query_s"] = [total / res.slices_run]
    result["slices"] = res.slices_run


# --------------------------------------------------------------------------------------------------- main --
def reference_cases(device) -> list:
    path = REF / "reference_io.npz"
    if not path.is_file():
        return []
    ref = np.load(path)
    net = load_net(device)
    rows = []
    for pre in ("", "case2_", "case3_"):
        q, si, sl = (torch.from_numpy(ref[pre + k]).to(device) for k in ("query", "support_images", "support_labels"))
        out = ref[pre + "output"]
        row = {"case": pre.rstrip("_") or "case1", "shape": f"B={q.shape[0]} S={si.shape[1]} {q.shape[-1]}px"}
        dtypes = [("fp32", None), ("bf16", torch.bfloat16)] + ([("fp16", torch.float16)] if device.type == "cuda"
                                                               else [])
        for name, dt in dtypes:
            net.compute_dtype = dt
            with torch.inference_mode():
                got = net(q, si, sl).float().cpu().numpy()
            row[name] = _agreement(got, out)
        net.compute_dtype = None
        if device.type == "cpu" and openvino_version():
            got = []
            with torch.inference_mode():
                for b in range(q.shape[0]):
                    cache = net.prepare_support(si[b], sl[b])
                    ovm = openvino_query_network(net, cache, q[b:b + 1], torch.get_num_threads())
                    if ovm is None:
                        break
                    got.append(ovm(q[b:b + 1], cache.level0, cache.cross0_mean).numpy())
            if len(got) == q.shape[0]:
                row["openvino fp32"] = _agreement(np.concatenate(got), out)
        rows.append(row)
    return rows


def _agreement(got, out):
    """max |logit difference|, max |probability difference|, mask pixels that differ."""
    return (float(np.abs(got - out).max()), float(np.abs(1 / (1 + np.exp(-got)) - 1 / (1 + np.exp(-out))).max()),
            int(np.count_nonzero((got > 0) != (out > 0))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=3)
    ap.add_argument("--support-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-plain", action="store_true", help="do not run the slow plain baseline")
    ap.add_argument("--runtimes-only", action="store_true", help="only the torch / OpenVINO comparison")
    ap.add_argument("--repeats", type=int, default=3, help="runtime comparison: passes over the queries")
    ap.add_argument("--threads", default="", help="runtime comparison at these thread counts, e.g. 1,2")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, Path(args.tmp), args.device)
        return 0

    dev = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench-universeg-") as d:
        tmp = Path(d)
        meta = prepare_inputs(tmp, args.queries, args.support_size)
        (tmp / "meta.json").write_text(json.dumps(meta))
        print(f"UniverSeg v1 benchmark on {dev.type}"
              + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else
                 f" ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})"))
        print(f"support S={meta['support']} (of {meta['available']} sagittal liver slices of ct_sm), "
              f"{meta['queries']} query slices, 128x128, torch {torch.__version__}")
        kinds = ([] if args.skip_plain else ["plain"]) + ["fast-fp32"]
        if dev.type == "cuda":
            kinds += ["fast-bf16", "fast-fp16"]
        else:
            kinds += ["fast-bf16"]
        kinds.append("engine")
        if args.runtimes_only:
            kinds = []
        threads = [t for t in args.threads.split(",") if t] or [""]
        if dev.type == "cpu" and openvino_version():
            kinds += [f"runtimes{t}" for t in threads]
        results = {}
        for kind in kinds:
            cmd = [sys.executable, __file__, "--worker", kind, "--tmp", str(tmp), "--device", args.device]
            env = dict(os.environ, MEDSEG_BENCH_REPEATS=str(args.repeats))
            if kind.startswith("runtimes") and kind != "runtimes":
                env["MEDSEG_NUM_THREADS"] = kind[len("runtimes"):]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                print(f"{kind}: worker failed\n{proc.stderr[-2000:]}")
                continue
            results[kind] = json.loads((tmp / f"{kind}.json").read_text())

        rt_rows = [(k, results.pop(k)) for k in list(results) if k.startswith("runtimes")]
        base = results.get("plain")
        base_probs = np.load(tmp / "plain.npy") if base else None
        if rt_rows:
            print()
            print("| runtime | threads | support S | s/query (median) | best s | calls | speed-up over torch | "
                  "export or cache load s | max abs dp vs torch | mask Dice vs torch | mask px diff |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            for _, r in rt_rows:
                t0 = next(x["median_s"] for x in r["rows"] if x["runtime"] == "torch")
                for x in r["rows"]:
                    print(f"| {x['runtime']} | {r['threads']} | {r['support']} | {x['median_s']:.3f} | "
                          f"{x['best_s']:.3f} | {x['calls']} | {t0 / x['median_s']:.2f}x | "
                          + (f"{x['export_s']:.1f}" if x["export_s"] is not None else "-")
                          + f" | {x['max_dp']:.1e} | {x['dice']:.4f} | {x['px']} |")
        if results:
            print()
            print(f"{'path':<11} {'s/query':>9} {'ratio':>7} {'prepare s':>10} {'peak RSS MB':>12} {'loaded MB':>10} "
                  f"{'max|dp| vs plain':>17} {'mask px diff':>13}")
            for kind, r in results.items():
                per = float(np.median(r["per_query_s"]))
                ratio = f"{float(np.median(base['per_query_s'])) / per:6.1f}x" if base else "   n/a"
                dp, px = "", ""
                if base_probs is not None and (tmp / f"{kind}.npy").exists() and kind != "plain":
                    p = np.load(tmp / f"{kind}.npy")
                    dp = f"{np.abs(p - base_probs).max():.2e}"
                    px = f"{int(np.count_nonzero((p > 0.5) != (base_probs > 0.5)))}"
                extra = f" cuda peak {r['cuda_peak_mb']:.0f} MB" if "cuda_peak_mb" in r else ""
                print(f"{kind:<11} {per:9.3f} {ratio:>7} {r.get('prepare_s', float('nan')):10.3f} "
                      f"{r['peak_rss_mb']:12.0f} {r['rss_loaded_mb']:10.0f} {dp:>17} {px:>13}{extra}")
            if "engine" in results:
                print(f"(engine = whole pipeline per slice incl. support preparation amortised over "
                      f"{results['engine']['slices']} slices, precision {results['engine']['precision']})")

    rows = reference_cases(dev)
    if rows:
        print()
        print("reference cases (released implementation's outputs): max|logit diff| / max|prob diff| / "
              "mask pixels that differ")
        for row in rows:
            cells = "  ".join(f"{k}: {v[0]:.1e} / {v[1]:.1e} / {v[2]}" for k, v in row.items()
                              if k not in ("case", "shape"))
            print(f"  {row['case']} ({row['shape']}): {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
