"""Draw the extension's icons and render the README / Extension Manager screenshots (numpy + SimpleITK only).

    python Resources/make_images.py            # icons + screenshots (screenshots run LiteMedSAM headless)
    python Resources/make_images.py --icons    # icons only

Icons: ``Resources/MedSegSlicer.png`` (128x128, extension), ``MedSegSlicer/Resources/Icons/MedSegSlicer.png``
(module), ``MedSegSlicer/MedSegSlicerEffects/{MedSAMBox,UniverSeg}.png`` (effects). Screenshots are rendered from
the bundled CT (``Testing/Data/totalseg_ct_sm``) with the real model output written through the Qt-free MRML layer
into a segment and read back from the scene: ``Resources/Screenshots/medsam_box.png`` and
``Resources/Screenshots/universeg_examples.png`` (only when the official UniverSeg weights are installed and
their licence accepted).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import SimpleITK as sitk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_png(path: str, rgba: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = sitk.GetImageFromArray(np.ascontiguousarray(rgba.astype(np.uint8)), isVector=True)
    sitk.WriteImage(img, path)


def rounded_square(n: int, radius: float) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n] + 0.5
    cx = np.clip(x, radius, n - radius)
    cy = np.clip(y, radius, n - radius)
    return (x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2


def draw_rect(rgba, x0, y0, x1, y1, color, width):
    for w in range(width):
        rgba[y0 + w, x0:x1 + 1] = color
        rgba[y1 - w, x0:x1 + 1] = color
        rgba[y0:y1 + 1, x0 + w] = color
        rgba[y0:y1 + 1, x1 - w] = color


def icon(n: int = 128, kind: str = "extension") -> np.ndarray:
    """Dark tile, a grey 'slice' disc, an orange organ blob; a yellow box (MedSAM) and/or example dots (UniverSeg)."""
    s = n / 128.0
    rgba = np.zeros((n, n, 4), np.uint8)
    tile = rounded_square(n, 18 * s)
    rgba[tile] = (24, 48, 88, 255)
    y, x = np.mgrid[0:n, 0:n] + 0.5
    disc = (x - 64 * s) ** 2 / (50 * s) ** 2 + (y - 66 * s) ** 2 / (42 * s) ** 2 <= 1
    shade = (150 + 40 * np.cos((x + y) / (23 * s))).astype(np.uint8)
    rgba[disc, 0] = shade[disc]
    rgba[disc, 1] = shade[disc]
    rgba[disc, 2] = shade[disc]
    blob = ((x - 58 * s) ** 2 / (22 * s) ** 2 + (y - 66 * s) ** 2 / (16 * s) ** 2 <= 1) | \
           ((x - 74 * s) ** 2 / (13 * s) ** 2 + (y - 58 * s) ** 2 / (12 * s) ** 2 <= 1)
    rgba[blob & disc] = (240, 130, 30, 255)
    if kind in ("extension", "medsam"):
        draw_rect(rgba, int(30 * s), int(40 * s), int(92 * s), int(88 * s), (255, 220, 0, 255), max(1, int(4 * s)))
    if kind in ("extension", "universeg"):
        for i, cx in enumerate((24, 44, 64) if kind == "extension" else (30, 64, 98)):
            r = (x - cx * s) ** 2 + (y - 112 * s) ** 2 <= (7 * s) ** 2
            rgba[r] = (80, 200, 255, 255) if i % 2 == 0 else (120, 230, 140, 255)
    rgba[~tile] = 0
    return rgba


def window(slice_hu: np.ndarray, level: float = 40.0, width: float = 400.0) -> np.ndarray:
    lo, hi = level - width / 2, level + width / 2
    return (np.clip((slice_hu - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def overlay(grey: np.ndarray, masks, box=None, scale: int = 4) -> np.ndarray:
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    for mask, color in masks:
        m = mask > 0
        rgb[m] = 0.55 * rgb[m] + 0.45 * np.asarray(color, np.float32)
        edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
        rgb[edge] = color
    big = np.kron(rgb, np.ones((scale, scale, 1))).astype(np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        draw_rect(big, x0 * scale, y0 * scale, (x1 + 1) * scale - 1, (y1 + 1) * scale - 1, (255, 220, 0), 2)
    # radiological display: anterior up, patient's right on the viewer's left (this volume's IJK axes run along
    # +R, +A, +S, so both in-plane axes are flipped)
    big = big[::-1, ::-1]
    return np.concatenate([big, np.full(big.shape[:2] + (1,), 255, np.uint8)], axis=2)


def screenshots() -> None:
    sys.path.insert(0, os.path.join(ROOT, "MedSegSlicer"))
    sys.path.insert(0, os.path.join(ROOT, "MedSegSlicer", "Testing", "Python"))
    import MedSegSlicerScenarios as scenarios
    from MedSegSlicerLib import geometry, labelmaps
    from MedSegSlicerLib.segmenter import Segmenter
    from MedSegSlicerLib.scene import SceneContext

    sample_dir = os.path.join(ROOT, "Testing", "Data", "totalseg_ct_sm")
    ctx = SceneContext.headless()
    sample = scenarios.load_sample(ctx, sample_dir)
    core = Segmenter(ctx, device="auto")
    truth = sample.mask("kidney_left")
    box = scenarios.slab_box(truth, 5)
    roi = ctx.add_roi("kidney box")
    geometry.voxel_box_to_roi(roi, sample.volume, box)
    seg, ids, outcome = core.segment_with_medsam(sample.volume, [roi], None, names=["kidney_left"],
                                                 intensity="window:40,400")
    result = labelmaps.segment_to_array(seg, ids[0], sample.volume)
    ct = geometry.volume_to_array(sample.volume).array
    k = (box[2] + box[5]) // 2
    d = scenarios.dice(result[box[2]:box[5] + 1], truth[box[2]:box[5] + 1])
    write_png(os.path.join(ROOT, "Resources", "Screenshots", "medsam_box.png"),
              overlay(window(ct[k]), [(truth[k], (80, 200, 255)), (result[k], (240, 130, 30))],
                      (box[0], box[1], box[3], box[4])))
    print(f"medsam_box.png: slice {k}, LiteMedSAM (orange) vs label (blue), Dice {d:.3f} on {box[5] - box[2] + 1} "
          f"slices, {outcome.seconds:.1f} s")
    # UniverSeg: liver completed from every 4th labelled slice - only with the official weights (a picture made
    # with the test stand-in network would not show what the model does)
    from medseg_backend.weights import store

    if not (store.status("universeg-v1")["installed"] and store.licence_accepted("universeg-v1")):
        print("universeg_examples.png skipped: UniverSeg weights not installed / licence not accepted")
        return
    from MedSegSlicerLib import examples as ex

    liver = sample.mask("liver")
    z = [int(i) for i in np.nonzero(liver.any(axis=(1, 2)))[0]]
    labelled = np.zeros_like(liver)
    labelled[z[::4]] = liver[z[::4]]
    work = ctx.add_segmentation("work", sample.volume)
    sid = labelmaps.write_mask(work, labelled, sample.volume, name="liver")
    arrays = ex.from_labelled_slices(sample.volume, work, sid, "axial")
    seg2, sid2, out = core.segment_with_universeg(sample.volume, [arrays], work, segment_id=sid,
                                                  keep_labelled=arrays, intensity="window:40,400")
    result = labelmaps.segment_to_array(seg2, sid2, sample.volume)
    k = [i for i in z if i not in z[::4]][len(z) // 2 - 1]
    write_png(os.path.join(ROOT, "Resources", "Screenshots", "universeg_examples.png"),
              overlay(window(ct[k]), [(liver[k], (80, 200, 255)), (result[k], (120, 230, 140))]))
    print(f"universeg_examples.png: slice {k} (not labelled), Dice {scenarios.dice(result, liver):.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--icons", action="store_true", help="only draw the icons")
    args = ap.parse_args(argv)
    write_png(os.path.join(ROOT, "Resources", "MedSegSlicer.png"), icon(128, "extension"))
    write_png(os.path.join(ROOT, "MedSegSlicer", "Resources", "Icons", "MedSegSlicer.png"), icon(128, "extension"))
    write_png(os.path.join(ROOT, "MedSegSlicer", "MedSegSlicerEffects", "MedSAMBox.png"), icon(64, "medsam"))
    write_png(os.path.join(ROOT, "MedSegSlicer", "MedSegSlicerEffects", "UniverSeg.png"), icon(64, "universeg"))
    if not args.icons:
        screenshots()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
