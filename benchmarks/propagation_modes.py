"""3-D propagation modes against ground truth, and how well the per-slice confidence finds the bad slices.

Cases: the LiteMedSAM 3-D reference volumes (``volume_u8``, ``gt``, ``box3d``; windowed as the official pipeline
does) bundled in ``Testing/Data/litemedsam_reference`` (or ``--reference DIR`` with ``3d/*.npz`` files), plus, with ``--extra`` pointing at a folder laid out as the project's
shared data (``totalseg_examples``, ``dcmqi_ct3slice``, ``pyradiomics_testcases``, ``sct_spinalcord``), the other
labelled structures there, windowed the same way (CT L40/W400, MR 0.5/99.5 percentiles) and sliced along the
patient's axial axis (the SCT T2 scan is stored sagittally: its array is turned so that slices are axial).

Boxes: ``tight`` (the GT bounding box) and ``loose`` (z-range widened by ``--extend`` slices each side and the
in-plane box by ``max(5 px, 10 %)`` each side, as a user's ROI drawn generously would be).

For each case x box x mode: Dice to GT and slices run. Then, for every mode, the confidence figures over all
slices written: Spearman correlation between slice confidence and slice Dice, the share of slices with
Dice < 0.7 that are flagged (recall) and the share of slices flagged.

Each volume is encoded once (the engine's embedding cache); every mode and box costs decodes only.

Run: ``python benchmarks/propagation_modes.py [--reference DIR] [--extra DATA_DIR]``
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "Testing"))

from medseg_backend.metrics import dice  # noqa: E402
from medseg_backend.slicing import bbox3d  # noqa: E402

MODES = ("official", "roi", "adaptive")
LOW_DICE = 0.7

# Extra labelled structures in the shared-data layout: (case, image, label map, label value, preset).
_TS_CT = ("totalseg_examples/ct/image.nii.gz", "totalseg_examples/ct/label_total_fast.nii.gz")
_TS_MR = ("totalseg_examples/mr_sm/image.nii.gz", "totalseg_examples/mr_sm/label_total_mr.nii.gz")
_DCMQI = ("dcmqi_ct3slice/ct.nrrd", "dcmqi_ct3slice/label_liver1_spine2_heart3.nrrd")
EXTRA = [
    ("totalseg_ct_spleen", *_TS_CT, 1, "ct-abdomen"),
    ("totalseg_ct_kidney_right", *_TS_CT, 2, "ct-abdomen"),
    ("totalseg_ct_kidney_left", *_TS_CT, 3, "ct-abdomen"),
    ("totalseg_ct_liver", *_TS_CT, 5, "ct-abdomen"),
    ("totalseg_mr_sm_spleen", *_TS_MR, 1, "mr"),
    ("totalseg_mr_sm_kidney_right", *_TS_MR, 2, "mr"),
    ("totalseg_mr_sm_kidney_left", *_TS_MR, 3, "mr"),
    ("totalseg_mr_sm_liver", *_TS_MR, 5, "mr"),
    ("dcmqi_ct3slice_spine", *_DCMQI, 2, "ct-abdomen"),
    ("dcmqi_ct3slice_heart", *_DCMQI, 3, "ct-abdomen"),
    ("pyradiomics_breast1", "pyradiomics_testcases/breast1_image.nrrd", "pyradiomics_testcases/breast1_label.nrrd",
     1, "mr"),
    ("sct_t2_cord", "sct_spinalcord/t2/t2.nii.gz", "sct_spinalcord/t2/t2_seg-manual.nii.gz", 1, "mr"),
]


def load_cases(reference=None, extra: Path = None, only: str = "") -> List[Dict]:
    """Each case: name, vol (uint8 K, J, I), gt (bool)."""
    cases = [dict(name=name, vol=d["volume_u8"], gt=d["gt"] > 0) for name, d in reference_cases(reference)]
    if extra is not None:
        import SimpleITK as sitk

        from medseg_backend.intensity import apply_intensity, resolve_preset

        windowed = {}
        for name, image, label, value, preset in EXTRA:
            if not (Path(extra) / image).exists():
                continue
            if image not in windowed:
                img = sitk.ReadImage(str(Path(extra) / image))
                arr = sitk.GetArrayFromImage(img)
                windowed[image] = (apply_intensity(arr, resolve_preset(preset, arr)[0]), axial_array_axis(img))
            vol, axis = windowed[image]
            gt = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(extra) / label))) == value
            # slice along the patient's axial axis, as a radiologist scrolls (the SCT T2 scan is stored sagittally)
            cases.append(dict(name=name, vol=np.moveaxis(vol, axis, 0), gt=np.moveaxis(gt, axis, 0)))
    return [c for c in cases if only in c["name"]]


def axial_array_axis(image) -> int:
    """The numpy array axis (K, J, I order) whose index direction is closest to the patient's head-foot axis."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    return 2 - int(np.argmax(np.abs(direction[2])))


def case_boxes(gt: np.ndarray, extend: int = 4, frac: float = 0.10, px: int = 5) -> Dict[str, tuple]:
    tight = list(bbox3d(gt))
    depth, rows, cols = gt.shape
    loose = list(tight)
    for a, size in ((0, cols), (1, rows)):
        m = max(px, int(round(frac * (tight[a + 3] - tight[a] + 1))))
        loose[a], loose[a + 3] = max(0, tight[a] - m), min(size - 1, tight[a + 3] + m)
    loose[2], loose[5] = max(0, tight[2] - extend), min(depth - 1, tight[5] + extend)
    return {"tight": tuple(tight), "loose": tuple(loose)}


def slice_scores(res, gt: np.ndarray):
    """(confidence, slice Dice, flagged) for each slice the run wrote."""
    return [(r.confidence, dice(res.labels[r.slice] == r.object, gt[r.slice]), r.flagged) for r in res.slices]


def confidence_figures(rows) -> Dict[str, float]:
    from scipy.stats import spearmanr

    c = np.array([r[0] for r in rows])
    d = np.array([r[1] for r in rows])
    f = np.array([r[2] for r in rows], dtype=bool)
    low = d < LOW_DICE
    return {"slices": len(rows), "spearman": float(spearmanr(c, d).correlation),
            "low": int(low.sum()), "recall": float(f[low].mean()) if low.any() else 1.0,
            "flagged": float(f.mean()), "precision": float(low[f].mean()) if f.any() else 1.0}


def run(engine, cases, modes=MODES, extend: int = 4, out=print):
    out("| case | box | " + " | ".join(modes) + " |")
    out("|---|---|" + "---|" * len(modes))
    dices: Dict[tuple, List[float]] = {}
    conf_rows: Dict[str, list] = {m: [] for m in modes}
    for c in cases:
        for bname, box in case_boxes(c["gt"], extend).items():
            cells = []
            for mode in modes:
                res = engine.segment_volume(c["vol"], [box], intensity="raw", propagation=mode)
                dc = dice(res.labels, c["gt"])
                dices.setdefault((bname, mode), []).append(dc)
                conf_rows[mode] += slice_scores(res, c["gt"])
                cells.append(f"{dc:.4f} ({res.slices_run} sl)")
            out(f"| {c['name']} | {bname} | " + " | ".join(cells) + " |")
        engine.predictor.cache.clear()
    n = len(cases)
    for bname in ("tight", "loose"):
        out(f"| **mean of {n}** | {bname} | " + " | ".join(f"{np.mean(dices[(bname, m)]):.4f}" for m in modes) + " |")
    if "official" in modes:
        for m in modes:
            if m == "official":
                continue
            for bname in ("tight", "loose"):
                delta = np.array(dices[(bname, m)]) - np.array(dices[(bname, "official")])
                out(f"{m} - official, {bname}: mean {delta.mean():+.4f}, worst case {delta.min():+.4f} "
                    f"({cases[int(np.argmin(delta))]['name']})")
    out("")
    out("| mode | slices | Spearman(conf, Dice) | slices Dice < 0.7 | flagged among them | flagged | Dice < 0.7 among "
        "flagged |")
    out("|---|---|---|---|---|---|---|")
    for m in modes:
        f = confidence_figures(conf_rows[m])
        out(f"| {m} | {f['slices']} | {f['spearman']:.3f} | {f['low']} | {f['recall']:.1%} | {f['flagged']:.1%} | "
            f"{f['precision']:.1%} |")
    return dices, conf_rows


def reference_cases(reference=None):
    """(name, case) pairs: the bundled fixtures, or ``reference/3d/*.npz`` when a folder is given."""
    if reference is None:
        import fixture_data

        return sorted(fixture_data.litemedsam_3d_cases().items())
    return [(f.stem, np.load(f)) for f in sorted((Path(reference) / "3d").glob("*.npz"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", help="folder with 3d/*.npz reference files (default: the bundled fixtures)")
    ap.add_argument("--extra", help="shared-data folder with the other labelled volumes (optional)")
    ap.add_argument("--extend", type=int, default=4, help="loose box: slices added at each end")
    ap.add_argument("--only", default="", help="cases whose name contains this")
    ap.add_argument("--modes", default=",".join(MODES))
    args = ap.parse_args()
    from medseg_backend.medsam import MedSAMEngine

    cases = load_cases(args.reference, Path(args.extra) if args.extra else None, args.only)
    if not cases:
        sys.exit("no cases found")
    engine = MedSAMEngine("lite-medsam", device="cpu", precision="fp32", cache_mb=4096)
    t0 = time.perf_counter()
    run(engine, cases, tuple(args.modes.split(",")), args.extend, out=lambda s: print(s, flush=True))
    print(f"\n{len(cases)} cases in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
