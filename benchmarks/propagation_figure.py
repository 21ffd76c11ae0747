"""A strip of slices of one stored run: the image around the box, the ground truth's contour (green) and each
mode's mask (one row per mode), with the slice's Dice and confidence. For ``benchmarks/PROPAGATION.md``.

Run: ``python benchmarks/propagation_figure.py CASE BOX OUT.png [--modes official,adaptive,guarded]
[--slices a,b,c] [--extra-dir DIR]``
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from propagation_modes import case_boxes  # noqa: E402
from propagation_split import load_cases, stored_runs, with_guarded  # noqa: E402

from medseg_backend.metrics import dice  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("case")
    ap.add_argument("box", choices=("tight", "loose"))
    ap.add_argument("out")
    ap.add_argument("--modes", default="official,adaptive,guarded")
    ap.add_argument("--slices", default="")
    ap.add_argument("--extra-dir", action="append", default=[])
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = next(c for c in load_cases("", args.case, args.extra_dir) if c["name"] == args.case)
    modes = args.modes.split(",")
    runs = with_guarded([c], stored_runs([c], set(modes) | {"official", "adaptive"}))
    x0, y0, z0, x1, y1, z1 = case_boxes(c["gt"])[args.box]
    slices = [int(s) for s in args.slices.split(",")] if args.slices else \
        list(np.unique(np.linspace(z0, z1, 8).round().astype(int)))
    pad = 4
    ys = slice(max(0, y0 - pad), y1 + pad + 1)
    xs = slice(max(0, x0 - pad), x1 + pad + 1)
    fig, axes = plt.subplots(len(modes), len(slices), figsize=(1.7 * len(slices), 1.9 * len(modes)), squeeze=False)
    for i, m in enumerate(modes):
        r = runs[(c["name"], args.box, m)]
        recs = {s["slice"]: s for s in r["records"]}
        for j, k in enumerate(slices):
            ax = axes[i][j]
            ax.imshow(c["vol"][k][ys, xs], cmap="gray", vmin=0, vmax=255)
            mask = r["labels"][k][ys, xs]
            if mask.any():
                ax.imshow(np.ma.masked_where(~mask, mask), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
            if c["gt"][k].any():
                ax.contour(c["gt"][k][ys, xs].astype(float), levels=[0.5], colors="lime", linewidths=0.8)
            conf = f" c {recs[k]['confidence']:.2f}" if k in recs else " -"
            ax.set_title(f"z{k} D {dice(r['labels'][k], c['gt'][k]):.2f}{conf}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"{m}\nDice {dice(r['labels'], c['gt']):.3f}", fontsize=8)
    fig.suptitle(f"{c['name']} ({args.box} box): ground truth green, mask orange; D = slice Dice, c = confidence",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
