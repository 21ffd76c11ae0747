"""``medseg medsam`` (2-D / 3-D box segmentation) and ``medseg demo`` (the bundled sample, embedded weights).

Registered by :func:`medseg_backend.cli.build_parser` through :func:`register`.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..choices import (AXES, DEFAULT_AXIS, DEFAULT_MODEL, DEFAULT_PROPAGATION, DEVICES, MEDSAM_MODELS, PRECISIONS,
                       PROPAGATIONS, RUNTIMES)
from ..errors import MedSegError
from ..metrics import dice
from ..runspec import DEFAULT_STOP_AFTER, BoxRun
from ..slicing import axis_index, bbox3d, middle_slice, project_box
from .common import ProgressPrinter, parse_box, quiet_check as _quiet_check
from .common import choices_metavar as _choices
from ..textforms import default_slice_report_path  # noqa: F401  (shared with batch manifests)

INTENSITY_HELP = ("intensity preset: auto (default), raw (8-bit as is), ct-abdomen (40/400), ct-lung, ct-brain, "
                  "ct-mediastinum, mr (0.5/99.5 percentiles of voxels > 0) or window:L,W")


# --------------------------------------------------------------------------------------------------------
# medseg medsam
# --------------------------------------------------------------------------------------------------------
def _add_medsam(sub) -> None:
    p = sub.add_parser("medsam", help="segment from box prompts with LiteMedSAM / MedSAM ViT-B",
                       description="Segment a 2-D image or a 3-D volume from box prompts. Boxes are voxel "
                                   "indices, x = column, y = row, z = slice of the SimpleITK array, inclusive.")
    p.add_argument("image", help="2-D image (PNG, JPEG, TIFF) or volume (NRRD, NIfTI, MHA, DICOM folder)")
    p.add_argument("--series", metavar="N|UID",
                   help="DICOM folder holding several series: the one to segment (its number as listed, or its UID)")
    p.add_argument("--box", action="append", required=True,
                   help="X0,Y0,X1,Y1 (2-D or with --slice) or X0,Y0,Z0,X1,Y1,Z1 (3-D); repeat for several "
                        "objects (labels 1..N)")
    p.add_argument("-o", "--output", required=True, help="label map to write (.nrrd, .nii.gz, .mha, .png, .tif)")
    # The run's choices are checked by the run spec (medseg_backend.runspec), with the same message as in Slicer
    # and the worker; the metavars list them.
    p.add_argument("--model", default=DEFAULT_MODEL, metavar=_choices(MEDSAM_MODELS))
    p.add_argument("--weights", help="checkpoint file (default: the installed weights, see `medseg models list`)")
    p.add_argument("--intensity", default="auto", help=INTENSITY_HELP)
    p.add_argument("--device", default="auto", metavar=_choices(DEVICES))
    p.add_argument("--precision", default="auto", metavar=_choices(PRECISIONS))
    p.add_argument("--runtime", default="auto", metavar=_choices(RUNTIMES),
                   help="image encoder runtime: auto (OpenVINO on the CPU when installed, else torch), torch, openvino")
    p.add_argument("--slice", type=int, help="segment only this slice (index along --axis) of a volume with a 2-D box")
    p.add_argument("--axis", default=DEFAULT_AXIS, metavar=_choices(AXES),
                   help="slicing axis in voxel space (axial = along K)")
    p.add_argument("--propagation", default=DEFAULT_PROPAGATION, metavar=_choices(PROPAGATIONS),
                   help="official (default): the published LiteMedSAM 3-D procedure (exact parity); adaptive: "
                        "start on the middle third's slice the model is surest of, carry the previous mask's box, "
                        "widen it where the mask is flush with it, switch to the ROI's box where that is more "
                        "confident, stop where the mask leaves the object's intensities and shrinks (opt-in: it lost "
                        "to official on held-out tumour MR); guarded: official and adaptive on the same embeddings, "
                        "adaptive's side of the middle slice only where both walks' signals say it is clearly better "
                        "(opt-in; see benchmarks/PROPAGATION.md); roi: the ROI's box on every slice; stop: official, "
                        "but stop after --stop-after empty slices")
    p.add_argument("--stop-after", type=int, default=DEFAULT_STOP_AFTER)
    p.add_argument("--slice-report", help="3-D: per-slice report (object, slice, area, confidence, profile, flag), "
                                          ".csv or .json (default: <output stem>.slices.csv beside the label map)")
    p.add_argument("--probabilities", help="also write the probability map (float32; .nrrd, .nii.gz, .mha, .tif)")
    p.add_argument("--overlay", help="also write a PNG picture of the result (middle slice of the first box in 3-D)")
    p.set_defaults(func=cmd_medsam)


def run_spec(args) -> BoxRun:
    """The run of ``medseg medsam``'s arguments, checked (every choice, the boxes' numbers and order) before
    anything is read."""
    return BoxRun(boxes=[parse_box(b) for b in args.box], model=args.model, weights=args.weights, device=args.device,
                  precision=args.precision, runtime=args.runtime, intensity=args.intensity, axis=args.axis,
                  propagation=args.propagation, stop_after=args.stop_after,
                  outputs=("labels", "probabilities") if args.probabilities else ("labels",))


def out_of_memory(what: str) -> MedSegError:
    """The one-line error for a MemoryError: what ran out, and what to do."""
    return MedSegError(f"Out of memory while {what}: nothing was written; close other programs, use a smaller box "
                       "or ROI, or crop the volume first.")


def cmd_medsam(args) -> int:
    try:
        return _cmd_medsam(args)
    except MemoryError:
        raise out_of_memory(f"segmenting {args.image}") from None


def _cmd_medsam(args) -> int:
    from ..intensity import apply_intensity, cut_slab, intensity_stats, resolve_preset
    from ..io import (IMAGE_2D_OUTPUTS, OVERLAY_EXTENSIONS, PROBABILITY_EXTENSIONS, LABEL_EXTENSIONS, _has_ext,
                      check_outputs, check_volume_format, float_image, label_image, read_image, rgb_image,
                      write_images)
    from ..slicing import check_box
    from ..overlay import overlay_rgb

    # 1. The run (choices, boxes) and every output path, before anything is read or computed.
    spec = run_spec(args)
    report_path = slice_report_path(args)
    check_outputs([(args.output, "output", LABEL_EXTENSIONS),
                   (args.probabilities, "probability map", PROBABILITY_EXTENSIONS),
                   (args.overlay, "overlay", OVERLAY_EXTENSIONS),
                   (report_path, "slice report", (".csv", ".json"))],
                  inputs=[args.image, args.weights])
    # 2. The input, the boxes and the intensity preset, before the model is loaded.
    img = read_image(args.image, series=args.series)
    arr = img.array
    volume = arr.ndim == 3 and not img.is_rgb
    plane_out = False  # --slice with a 2-D picture output: write that slice only
    if args.slice_report and not (volume and args.slice is None):
        raise MedSegError("--slice-report is for 3-D runs (a volume with a 3-D box): drop it for 2-D images and "
                          "--slice.")
    want = 3 if volume and args.slice is None else 2
    if spec.ndim != want:
        for b in args.box:
            parse_box(b, want)          # the box form this image needs, in parse_box's words
    boxes = list(spec.boxes)
    ax = axis_index(spec.axis)
    if want == 2:
        if volume:
            if not 0 <= args.slice < arr.shape[ax]:
                raise MedSegError(f"--slice {args.slice} is outside the volume (0..{arr.shape[ax] - 1} along "
                                  f"{spec.axis}): pick an existing slice.")
            rule, why = resolve_preset(args.intensity, arr)  # window the whole volume, as the 3-D path does
            plane_shape = tuple(n for a, n in enumerate(arr.shape) if a != ax)
            _quiet_check(check_box, boxes[0], plane_shape)
            plane_out = _has_ext(args.output, IMAGE_2D_OUTPUTS)
            if args.probabilities and _has_ext(args.probabilities, IMAGE_2D_OUTPUTS) != plane_out:
                raise MedSegError("With --slice, write the label map and the probabilities both as 2-D pictures "
                                  "(.png/.tif) or both as volumes (.nrrd/.nii.gz).")
        else:
            resolve_preset(args.intensity, arr)
            _quiet_check(check_box, boxes[0], arr.shape[:2])
    else:
        rule, why = resolve_preset(args.intensity, arr)
        ranges = [project_box(_quiet_check(check_box, b, arr.shape, what=f"Box {i + 1}", axis=ax), ax)[:2]
                  for i, b in enumerate(boxes)]
        check_volume_format(args.output, arr.shape, is_volume=True, what="output")
        check_volume_format(args.probabilities, arr.shape, is_volume=True, what="probability map")
        # What the run needs of the volume: the slices the boxes cover, windowed with the whole volume's numbers.
        # The volume itself is freed before the model is loaded (memory: the volume once, then the slab).
        slab = cut_slab(arr, ax, min(r[0] for r in ranges), max(r[1] for r in ranges), rule, why, copy=True)
        arr = img.array = None
    # 3. The model, the run.
    from ..medsam import MedSAMEngine

    t0 = time.perf_counter()
    engine = MedSAMEngine(args.model, weights=args.weights, device=args.device, precision=args.precision,
                          runtime=args.runtime)
    geometry = img.geometry
    if not volume or args.slice is not None:
        if volume:
            plane = apply_intensity(np.take(arr, args.slice, axis=ax), rule, intensity_stats(arr, rule))
            res = engine.segment_image(plane, boxes[0], intensity=rule)
            if plane_out:
                labels, prob = res.mask, res.probabilities
                geometry = img.geometry.plane(ax, args.slice)
            else:
                labels = np.zeros(arr.shape, dtype=np.uint8)
                prob = np.zeros(arr.shape, dtype=np.float32)
                idx = [slice(None)] * 3
                idx[ax] = args.slice
                labels[tuple(idx)] = res.mask
                prob[tuple(idx)] = res.probabilities
            messages = [why]
            picture = lambda: overlay_rgb(plane, res.mask, [res.box])  # noqa: E731
        else:
            res = engine.run(spec, arr)
            labels, prob, messages = res.mask, res.probabilities, res.messages
            picture = lambda: overlay_rgb(apply_intensity(arr, resolve_preset(args.intensity, arr)[0]),  # noqa: E731
                                          res.mask, [res.box])
        n_run = 1
    else:
        res3 = engine.run(spec, slab, progress=ProgressPrinter())
        labels, prob, messages = res3.labels, res3.probabilities, res3.messages
        n_run = res3.slices_run

        def picture():
            """Middle slice of the first box along the slicing axis, windowed as the run was."""
            b = boxes[0]
            lo, hi = ranges[0]  # the first box's slices along the slicing axis, clipped
            mid = middle_slice(lo, hi)
            shown = np.take(slab.windowed(), mid - slab.first, axis=ax)
            return overlay_rgb(shown, np.take(labels, mid, axis=ax), [project_box(b, ax)[2]])
    dt = time.perf_counter() - t0
    for m in messages:
        print(m, file=sys.stderr)
    # 4. All outputs together, or none.
    items = [(args.output, label_image(labels, geometry), geometry)]
    if args.probabilities:
        items.append((args.probabilities, float_image(prob, geometry), geometry))
    if args.overlay:
        items.append((args.overlay, rgb_image(picture())))
    report = None
    if volume and args.slice is None:
        report = report_path or default_slice_report_path(args.output)
        items.append((report, slice_report_text(report, res3, img.geometry, args.axis)))
    write_images(items)
    if report:
        print(f"wrote {report}: {len(res3.slices)} slice(s), {len(res3.flagged())} flagged for review")
    voxels = int(np.count_nonzero(labels))
    print(f"wrote {args.output}: {voxels} voxels labelled, {n_run} slice(s), {dt:.1f} s "
          f"({engine.model_name}, {engine.device.type}, {engine.precision}, {engine.runtime})")
    return 0


def slice_report_path(args) -> Optional[str]:
    """The per-slice report of a 3-D run: ``--slice-report`` or, for a 3-D box, the default beside the label map
    (known before the image is read only when given or when the boxes are 3-D)."""
    if args.slice_report:
        return args.slice_report
    if args.slice is None and args.box and all(len(b.split(",")) == 6 for b in args.box):
        return default_slice_report_path(args.output)
    return None


def slice_report_text(path: str, result, geometry, axis: str) -> str:
    """The per-slice report (CSV, or JSON for a .json path): object, slice, area, confidence, flag."""
    from ..confidence import report_text

    spacing = getattr(geometry, "spacing", None)
    return report_text(result.slices, spacing, axis, "json" if path.lower().endswith(".json") else "csv")


# --------------------------------------------------------------------------------------------------------
# medseg demo
# --------------------------------------------------------------------------------------------------------
DEMO_ORGANS = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver"}


#: The bundled sample of a source checkout (medseg_backend/cli/medsam.py -> the repository root).
DEMO_DATA = Path(__file__).resolve().parents[2] / "Testing" / "Data" / "totalseg_ct_sm"


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="segment the bundled abdominal CT sample with the embedded LiteMedSAM")
    p.add_argument("--data", help="folder with ct.nii.gz and labels.nii.gz (default: Testing/Data/totalseg_ct_sm)")
    p.add_argument("--output", default="demo-output", help="folder for the label map and the overlay PNG")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from ..intensity import apply_intensity, resolve_preset
    from ..io import read_image, write_label, write_rgb_png
    from ..medsam import MedSAMEngine
    from ..overlay import overlay_rgb, radiological_axial, upscale_nearest

    data = Path(args.data) if args.data else DEMO_DATA
    ct = read_image(str(data / "ct.nii.gz"))
    gt = read_image(str(data / "labels.nii.gz")).array
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    ids = [k for k in DEMO_ORGANS if (gt == k).any()]
    boxes = [bbox3d(gt == k) for k in ids]
    print(f"Demo: LiteMedSAM (embedded weights) on {data / 'ct.nii.gz'} {ct.array.shape[::-1]} voxels, "
          f"{len(boxes)} boxes from the bundled label map ({', '.join(DEMO_ORGANS[k] for k in ids)})")
    t0 = time.perf_counter()
    engine = MedSAMEngine("lite-medsam", device=args.device)
    t_load = time.perf_counter() - t0
    res = engine.segment_volume(ct.array, boxes, intensity="auto", progress=ProgressPrinter())
    t_run = time.perf_counter() - t0 - t_load
    for m in res.messages:
        print(m)
    # Compare each organ where its own run put it (later boxes overwrite earlier ones in the label map).
    print(f"{'organ':14s} {'Dice':>6s}  voxels (pred / label)")
    scores = []
    for obj, k in enumerate(ids, start=1):
        d = dice(res.labels == obj, gt == k)
        scores.append(d)
        print(f"{DEMO_ORGANS[k]:14s} {d:6.3f}  {int((res.labels == obj).sum())} / {int((gt == k).sum())}")
    print(f"mean Dice {np.mean(scores):.3f}; {res.slices_run} slices in {t_run:.1f} s "
          f"({t_run / max(res.slices_run, 1):.2f} s/slice, {res.slices_encoded} encoded, model load {t_load:.1f} s, "
          f"{engine.device.type}, {engine.precision})")
    label_path = out / "ct_sm_litemedsam.nii.gz"
    write_label(str(label_path), res.labels, ct.geometry)
    rule, _ = resolve_preset("auto", ct.array)
    k = int(np.argmax([(res.labels[z] > 0).sum() for z in range(res.labels.shape[0])]))
    pic = overlay_rgb(apply_intensity(ct.array[k], rule), res.labels[k],
                      [b2d for s0, s1, b2d in (project_box(b, "axial") for b in boxes) if s0 <= k <= s1])
    pic_path = out / "ct_sm_litemedsam_overlay.png"
    write_rgb_png(str(pic_path), upscale_nearest(radiological_axial(pic, ct.geometry.direction), 3))
    print(f"wrote {label_path} and {pic_path}")
    return 0


def register(sub) -> None:
    """Add ``medsam`` and ``demo`` to the ``medseg`` sub-commands."""
    _add_medsam(sub)
    _add_demo(sub)
