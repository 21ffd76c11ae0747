"""Dice to ground truth for each 3-D propagation mode on the shared reference cases (official LiteMedSAM
weights, the reference's windowed volumes). Boxes: the tight GT box, and a loose box (z-range extended by
``--extend`` slices at both ends, as a user's ROI drawn past the object would be).

Run: ``.venv-test/bin/python benchmarks/propagation_modes.py [--shared ../shared] [--extend 4]``
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medseg_backend.cli import dice  # noqa: E402
from medseg_backend.medsam import MedSAMEngine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(REPO.parent / "shared"))
    ap.add_argument("--extend", type=int, default=4)
    args = ap.parse_args()
    engine = MedSAMEngine("lite-medsam", device="cpu", precision="fp32")
    modes = [("official", {}), ("roi", {}), ("stop (N=2)", {"propagation": "stop", "stop_after": 2})]
    print("| case | box | " + " | ".join(m for m, _ in modes) + " |")
    print("|---|---|" + "---|" * len(modes))
    sums = {}
    for f in sorted((Path(args.shared) / "reference" / "litemedsam" / "3d").glob("*.npz")):
        d = np.load(f)
        vol, gt = d["volume_u8"], d["gt"]
        tight = [int(v) for v in d["box3d"]]
        loose = list(tight)
        loose[2] = max(0, loose[2] - args.extend)
        loose[5] = min(vol.shape[0] - 1, loose[5] + args.extend)
        for name, box in (("tight", tight), (f"z±{args.extend}", loose)):
            cells = []
            for mode, kw in modes:
                kw = dict(kw) if kw else {"propagation": mode}
                r = engine.segment_volume(vol, [tuple(box)], intensity="raw", **kw)
                dc = dice(r.labels, gt)
                sums.setdefault((name if name == "tight" else "loose", mode), []).append(dc)
                cells.append(f"{dc:.4f} ({r.slices_run} sl)")
            print(f"| {f.stem} | {name} | " + " | ".join(cells) + " |", flush=True)
        engine.cache.clear()
    for box in ("tight", "loose"):
        print(f"| **mean** | {box} | " + " | ".join(f"{np.mean(sums[(box, m)]):.4f}" for m, _ in modes) + " |")


if __name__ == "__main__":
    main()
