"""Propagation modes on a tuning part and a held-back part split by dataset, with encodings cached on disk.

The split (fixed before any result was looked at; see ``benchmarks/PROPAGATION.md``):

* **tuning**: every structure of the TotalSegmentator examples (CT, its 3 mm reduction ``ct_sm`` in the
  LiteMedSAM reference files, and the abdominal MR) - abdominal organs, vessels, a vertebra; the only dataset
  with many structures, so rules can be chosen on it without looking at the others.
* **held-back**: pyradiomics (brain tumours, breast lesion: the kind the default lost on), the Spinal Cord
  Toolbox scans (thin cord, butterfly grey matter), dcmqi (3-slice CT) and every public case found elsewhere
  (``--extra-dir``, laid out as ``<name>/cases.json``: see :func:`extra_cases`).

Boxes as :func:`propagation_modes.case_boxes` (``tight``, ``loose``). Each run is stored under
``CACHE/runs`` (labels of the object, the per-slice records), so that tables and choice rules can be
recomputed without decoding again; each slice embedding is stored once under ``CACHE/emb`` (an encode costs
~1-3 s on a shared CPU, a decode ~0.05-0.2 s).

Run: ``python benchmarks/propagation_split.py encode|run|report [--part tuning|held_back] [--modes ...]``
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from propagation_modes import axial_array_axis, case_boxes  # noqa: E402

from medseg_backend.medsam.predictor import EmbeddingCache  # noqa: E402
from medseg_backend.metrics import dice  # noqa: E402

DATA = Path(os.environ.get("MEDSEG_SHARED_DATA", "/work/shared/data"))
REFERENCE = Path(os.environ.get("MEDSEG_SHARED_REFERENCE", "/work/shared/reference/litemedsam"))
CACHE = Path(os.environ.get("MEDSEG_BENCH_CACHE", "/work/cache_i23"))

#: dataset -> part. Fixed before any result was seen; by dataset, never by case.
SPLIT = {"totalseg": "tuning", "pyradiomics": "held_back", "sct": "held_back", "dcmqi": "held_back"}

_TS_CT_SM = "totalseg_examples/ct_sm/label_total.nii.gz"
_TS_MR = ("totalseg_examples/mr_sm/image.nii.gz", "totalseg_examples/mr_sm/label_total_mr.nii.gz", "mr")
_DCMQI = ("dcmqi_ct3slice/ct.nrrd", "dcmqi_ct3slice/label_liver1_spine2_heart3.nrrd", "ct-abdomen")
_T2S = ("sct_spinalcord/t2s/t2s.nii.gz",)
# (case, dataset, image, label map, preset, label value)
SHARED = [
    # the 3 mm CT as the reference files feed it (``ref:`` = that file's ``volume_u8``), its other structures
    *[(f"totalseg_ct_sm_{n}", "totalseg", "ref:totalseg_ct_sm_liver", _TS_CT_SM, "raw", v) for n, v in (
        ("gallbladder", 4), ("stomach", 6), ("pancreas", 7), ("adrenal_gland_right", 8), ("duodenum", 19),
        ("vertebrae_L1", 31), ("aorta", 52), ("inferior_vena_cava", 63), ("portal_splenic_vein", 64))],
    *[(f"totalseg_mr_sm_{n}", "totalseg", *_TS_MR, v) for n, v in (
        ("spleen", 1), ("kidney_right", 2), ("kidney_left", 3), ("gallbladder", 4), ("liver", 5), ("stomach", 6),
        ("pancreas", 7), ("aorta", 23), ("inferior_vena_cava", 24), ("autochthon_left", 46))],
    ("dcmqi_ct3slice_spine", "dcmqi", *_DCMQI, 2),
    ("dcmqi_ct3slice_heart", "dcmqi", *_DCMQI, 3),
    ("pyradiomics_breast1", "pyradiomics", "pyradiomics_testcases/breast1_image.nrrd",
     "pyradiomics_testcases/breast1_label.nrrd", "mr", 1),
    ("sct_t2_cord", "sct", "sct_spinalcord/t2/t2.nii.gz", "sct_spinalcord/t2/t2_seg-manual.nii.gz", "mr", 1),
    ("sct_t2s_cord", "sct", *_T2S, "sct_spinalcord/t2s/t2s_seg.nii.gz", "mr", 1),
    ("sct_t2s_grey_matter", "sct", *_T2S, "sct_spinalcord/t2s/t2s_gmseg_manual.nii.gz", "mr", 1),
    ("sct_mt1_cord", "sct", "sct_spinalcord/mt/mt1.nii.gz", "sct_spinalcord/mt/mt1_seg.nii.gz", "mr", 1),
]
#: the LiteMedSAM 3-D reference volumes (``volume_u8`` as the official pipeline fed it) and their dataset
REFERENCE_DATASET = {"totalseg_ct_sm": "totalseg", "pyradiomics": "pyradiomics", "sct": "sct", "dcmqi": "dcmqi"}


class DiskCache(EmbeddingCache):
    """The predictor's embedding cache, backed by one file per slice embedding (same keys)."""

    def __init__(self, folder: Path, max_bytes: int = 2 ** 30) -> None:
        super().__init__(max_bytes)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _file(self, key) -> Path:
        return self.folder / (hashlib.sha1(repr(key).encode()).hexdigest() + ".pt")

    def get(self, key):
        import torch

        t = self._items.get(key)
        if t is None and self._file(key).exists():
            t = torch.load(self._file(key))
            super().put(key, t)
        if t is None:
            self.misses += 1
            return None
        self.hits += 1
        return t

    def put(self, key, value) -> None:
        import torch

        f = self._file(key)
        if not f.exists():
            torch.save(value, f)
        super().put(key, value)


def extra_cases(folder: Path) -> List[dict]:
    """Cases found in public repositories, kept outside the repository: ``folder/<name>/cases.json`` lists
    ``{"case", "dataset", "image", "label", "preset", "value"}`` entries (paths relative to that folder; image and
    label on one grid; optional ``slice_step``: keep every n-th axial slice). Every dataset found this way is held
    back."""
    out = []
    for cj in sorted(Path(folder).glob("*/cases.json")):
        for c in json.loads(cj.read_text()):
            out.append(dict(c, name=c["case"], image=str(cj.parent / c["image"]),
                            label=str(cj.parent / c["label"]), part="held_back"))
    return out


def load_cases(part: str = "", only: str = "", extra_dirs=()) -> List[dict]:
    """name, dataset, part, vol (uint8, slices along the patient's axial axis), gt (bool)."""
    import SimpleITK as sitk

    from medseg_backend.intensity import apply_intensity, resolve_preset

    cases = []
    for f in sorted((REFERENCE / "3d").glob("*.npz")):
        ds = next(v for k, v in REFERENCE_DATASET.items() if f.stem.startswith(k))
        cases.append(dict(name="ref_" + f.stem, dataset=ds, part=SPLIT[ds], src=str(f)))
    for name, ds, image, label, preset, value in SHARED:
        cases.append(dict(name=name, dataset=ds, part=SPLIT[ds], label=str(DATA / label),
                          image=image if image.startswith("ref:") else str(DATA / image),
                          preset=preset, value=value))
    for d in extra_dirs:
        cases += extra_cases(Path(d))
    cases = [c for c in cases if (not part or c["part"] == part) and any(o in c["name"] for o in only.split(","))]
    windowed = {}
    for c in cases:
        if "src" in c:
            d = np.load(c["src"])
            c["vol"], c["gt"] = d["volume_u8"], d["gt"] > 0
            continue
        if c["image"].startswith("ref:"):
            c["vol"] = np.load(REFERENCE / "3d" / (c["image"][4:] + ".npz"))["volume_u8"]
            c["gt"] = sitk.GetArrayFromImage(sitk.ReadImage(c["label"])) == int(c["value"])
            continue
        if c["image"] not in windowed:
            img = sitk.ReadImage(c["image"])
            arr = sitk.GetArrayFromImage(img)
            windowed[c["image"]] = (apply_intensity(arr, resolve_preset(c["preset"], arr)[0]), axial_array_axis(img))
        vol, axis = windowed[c["image"]]
        gt = sitk.GetArrayFromImage(sitk.ReadImage(c["label"])) == int(c["value"])
        step = int(c.get("slice_step", 1))  # every n-th axial slice (thicker slices, fewer encodes)
        c["vol"], c["gt"] = np.moveaxis(vol, axis, 0)[::step], np.moveaxis(gt, axis, 0)[::step]
    return [c for c in cases if c["gt"].any()]


def make_engine():
    from medseg_backend.medsam import MedSAMEngine

    engine = MedSAMEngine("lite-medsam", device="cpu", precision="fp32")
    engine.predictor.cache = DiskCache(CACHE / "emb")
    return engine


def run_file(case: str, box: str, mode: str) -> Path:
    return CACHE / "runs" / f"{case}__{box}__{mode}.npz"


def run_case(engine, c: dict, bname: str, box, mode: str, force: bool = False) -> dict:
    """One run, stored: labels (bool, the object's voxels), records (json), per_box info."""
    f = run_file(c["name"], bname, mode)
    if f.exists() and not force:
        d = np.load(f, allow_pickle=False)
        return dict(labels=d["labels"], records=json.loads(str(d["records"])), info=json.loads(str(d["info"])))
    res = engine.segment_volume(c["vol"], [box], intensity="raw", propagation=mode)
    recs = [r.as_dict() for r in res.slices]
    info = {k: v for k, v in res.per_box[0].items() if k != "records"}
    f.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(f, labels=res.labels > 0, records=json.dumps(recs), info=json.dumps(info, default=str))
    return dict(labels=res.labels > 0, records=recs, info=info)


def stored_runs(cases, modes) -> Dict[tuple, dict]:
    """(case, box, mode) -> stored run, for the runs on disk."""
    out = {}
    for c in cases:
        for bname in ("tight", "loose"):
            for m in modes:
                if run_file(c["name"], bname, m).exists():
                    out[(c["name"], bname, m)] = run_case(None, c, bname, None, m)
    return out


def combined(c, runs, b, rule=None):
    """What ``guarded`` returns, from the stored ``official`` and ``adaptive`` runs: ``official``'s labels, each
    side of the middle slice taken from ``adaptive`` where ``take_adaptive`` (the product's rule, with the module's
    current thresholds) says so; and which sides were taken (up, down). ``run --modes guarded`` runs the mode
    itself through the engine; the two agree (checked on the tuning part, see PROPAGATION.md)."""
    from medseg_backend.confidence import SliceRecord, mask_iou
    from medseg_backend.medsam.propagation import take_adaptive

    rule = rule or take_adaptive
    off, ada = runs[(c["name"], b, "official")], runs[(c["name"], b, "adaptive")]
    mid = off["info"]["z_middle"]
    out = off["labels"].copy()
    ro = {r["slice"]: SliceRecord(**r) for r in off["records"]}
    ra = {r["slice"]: SliceRecord(**r) for r in ada["records"]}
    picks = []
    for ks in ([k for k in ro if k > mid], [k for k in ro if k < mid]):
        both = [k for k in ks if k in ra]
        same = float(np.mean([mask_iou(off["labels"][k], ada["labels"][k]) for k in both])) if both else 0.0
        take = bool(ks) and rule([ro[k] for k in ks], [ra[k] for k in both], same)
        if take:
            for k in ks:
                out[k] = ada["labels"][k]
        picks.append(int(take))
    return out, picks


def with_guarded(cases, runs) -> Dict[tuple, dict]:
    """``runs`` plus a ``guarded`` entry (labels, records of the walk each slice came from, sides taken) for every
    case and box with stored ``official`` and ``adaptive`` runs and no stored ``guarded`` run."""
    out = dict(runs)
    for c in cases:
        for b in ("tight", "loose"):
            if (c["name"], b, "adaptive") not in runs or (c["name"], b, "guarded") in runs:
                continue
            lab, picks = combined(c, runs, b)
            mid = runs[(c["name"], b, "official")]["info"]["z_middle"]
            taken = [(k > mid and picks[0]) or (k < mid and picks[1]) for k in range(c["gt"].shape[0])]
            recs = [r for r in runs[(c["name"], b, "official")]["records"] if not taken[r["slice"]]] + \
                [r for r in runs[(c["name"], b, "adaptive")]["records"] if taken[r["slice"]]]
            out[(c["name"], b, "guarded")] = dict(labels=lab, records=sorted(recs, key=lambda r: r["slice"]),
                                                  info=dict(chosen=picks))
    return out


def report(cases, runs, modes, out=print) -> Dict:
    """Per-case Dice table, means and worst differences to ``official`` per box, and the confidence figures, for
    one part."""
    from propagation_modes import confidence_figures

    out("| case | box | " + " | ".join(modes) + " |")
    out("|---|---|" + "---|" * len(modes))
    dices: Dict[tuple, Dict[str, float]] = {}
    conf_rows: Dict[str, list] = {m: [] for m in modes}
    for c in cases:
        for bname in ("tight", "loose"):
            if not all((c["name"], bname, m) in runs for m in modes):
                continue
            row = dices.setdefault((c["name"], bname), {})
            for m in modes:
                r = runs[(c["name"], bname, m)]
                row[m] = dice(r["labels"], c["gt"])
                conf_rows[m] += [(s["confidence"], dice(r["labels"][s["slice"]], c["gt"][s["slice"]]), s["flagged"])
                                 for s in r["records"]]
            out(f"| {c['name']} | {bname} | " + " | ".join(f"{row[m]:.4f}" for m in modes) + " |")
    summary = {}
    for bname in ("tight", "loose", "all"):
        keys = [k for k in dices if bname in ("all", k[1])]
        if not keys:
            continue
        means = {m: float(np.mean([dices[k][m] for k in keys])) for m in modes}
        out(f"| **mean of {len(keys)}** | {bname} | " + " | ".join(f"{means[m]:.4f}" for m in modes) + " |")
        for m in modes:
            if m == "official" or "official" not in modes:
                continue
            delta = {k: dices[k][m] - dices[k]["official"] for k in keys}
            worst = min(delta, key=delta.get)
            below = sum(v < -0.01 for v in delta.values())
            summary[(m, bname)] = dict(mean=float(np.mean(list(delta.values()))), worst=delta[worst], worst_case=worst,
                                       below=below, n=len(keys))
    out("")
    for (m, bname), v in summary.items():
        out(f"{m} - official, {bname}: mean {v['mean']:+.4f}, worst {v['worst']:+.4f} ({v['worst_case'][0]}, "
            f"{v['worst_case'][1]}), {v['below']} of {v['n']} runs more than 0.01 below")
    out("")
    out("| mode | slices | Spearman(conf, Dice) | slices Dice < 0.7 | flagged among them | flagged | Dice < 0.7 among "
        "flagged |")
    out("|---|---|---|---|---|---|---|")
    figs = {}
    for m in modes:
        if not conf_rows[m]:
            continue
        f = figs[m] = confidence_figures(conf_rows[m])
        out(f"| {m} | {f['slices']} | {f['spearman']:.3f} | {f['low']} | {f['recall']:.1%} | {f['flagged']:.1%} | "
            f"{f['precision']:.1%} |")
    return dict(dices=dices, summary=summary, confidence=figs)


def encode(cases) -> None:
    engine = make_engine()
    p = engine.predictor
    # the kinds the default lost on first, the long thin-cord scans last
    for c in sorted(cases, key=lambda c: (c["dataset"] == "sct", c["dataset"] != "pyradiomics")):
        lo, hi = case_boxes(c["gt"])["loose"][2], case_boxes(c["gt"])["loose"][5]
        t0 = time.perf_counter()
        before = p.cache.misses
        p.embeddings([c["vol"][k] for k in range(lo, hi + 1)])
        p.cache.clear()
        print(f"{c['name']}: slices {lo}-{hi}, encoded {p.cache.misses - before} in {time.perf_counter() - t0:.0f} s",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=("list", "encode", "run", "report"))
    ap.add_argument("--part", default="")
    ap.add_argument("--only", default="", help="cases whose name contains this (or one of these, comma-separated)")
    ap.add_argument("--reverse", action="store_true", help="run: last case first (a second runner)")
    ap.add_argument("--modes", default="official,adaptive")
    ap.add_argument("--extra-dir", action="append", default=[])
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="run: print progress, not Dice (held-back runs made "
                                                         "before the rules are frozen)")
    args = ap.parse_args()
    cases = load_cases(args.part, args.only, args.extra_dir)
    if args.what == "list":
        for c in cases:
            b = case_boxes(c["gt"])
            print(c["part"], c["dataset"], c["name"], c["vol"].shape, b["tight"], int(c["gt"].sum()))
        return
    if args.what == "encode":
        encode(cases)
        return
    modes = args.modes.split(",")
    if args.what == "report":
        for part in ("tuning", "held_back"):
            sel = [c for c in cases if c["part"] == part]
            if sel:
                print(f"\n## {part} ({len(sel)} structures)\n")
                runs = stored_runs(sel, modes)
                if "guarded" in modes:
                    runs = with_guarded(sel, {**stored_runs(sel, ("official", "adaptive")), **runs})
                report(sel, runs, modes)
        return
    engine = make_engine()
    order = sorted(cases, key=lambda c: (c["dataset"] == "sct", c["dataset"] != "pyradiomics"))
    for c in reversed(order) if args.reverse else order:
        for bname, box in case_boxes(c["gt"]).items():
            cells = []
            for mode in modes:
                t0 = time.perf_counter()
                r = run_case(engine, c, bname, box, mode, args.force)
                score = "" if args.quiet else f"{dice(r['labels'], c['gt']):.4f} "
                cells.append(f"{mode} {score}({time.perf_counter() - t0:.0f} s)")
            print(c["part"], c["name"], bname, " | ".join(cells), flush=True)
        engine.predictor.cache.clear()


if __name__ == "__main__":
    main()
