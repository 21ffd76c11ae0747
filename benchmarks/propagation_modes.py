"""Dice to ground truth for each 3-D propagation mode on the LiteMedSAM 3-D reference cases (official LiteMedSAM
weights, the reference's windowed volumes; bundled in ``Testing/Data/litemedsam_reference``). Boxes: the tight GT
box, and a loose box (z-range extended by ``--extend`` slices at both ends, as a user's ROI drawn past the object
would be).

Run: ``.venv-test/bin/python benchmarks/propagation_modes.py [--extend 4] [--reference DIR]``
(``--reference DIR``: a folder of reference ``3d/*.npz`` files in the original layout instead of the fixtures.)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "Testing"))

from medseg_backend.cli import dice  # noqa: E402
from medseg_backend.medsam import MedSAMEngine  # noqa: E402


def reference_cases(reference=None):
    """(name, case) pairs: the bundled fixtures, or ``reference/3d/*.npz`` when a folder is given."""
    if reference is None:
        import fixture_data

        return sorted(fixture_data.litemedsam_3d_cases().items())
    return [(f.stem, np.load(f)) for f in sorted((Path(reference) / "3d").glob("*.npz"))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", help="folder with 3d/*.npz reference files (default: the bundled fixtures)")
    ap.add_argument("--extend", type=int, default=4)
    args = ap.parse_args()
    engine = MedSAMEngine("lite-medsam", device="cpu", precision="fp32")
    modes = [("official", {}), ("roi", {}), ("stop (N=2)", {"propagation": "stop", "stop_after": 2})]
    print("| case | box | " + " | ".join(m for m, _ in modes) + " |")
    print("|---|---|" + "---|" * len(modes))
    sums = {}
    for case, d in reference_cases(args.reference):
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
            print(f"| {case} | {name} | " + " | ".join(cells) + " |", flush=True)
        engine.cache.clear()
    for box in ("tight", "loose"):
        print(f"| **mean** | {box} | " + " | ".join(f"{np.mean(sums[(box, m)]):.4f}" for m, _ in modes) + " |")


if __name__ == "__main__":
    main()
