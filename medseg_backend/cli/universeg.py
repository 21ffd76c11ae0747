"""``medseg universeg`` (in-context segmentation from examples) and ``medseg library`` (example libraries).

Registered by :func:`medseg_backend.cli.build_parser` through :func:`register`. Each command returns an exit
code; user errors are :class:`~medseg_backend.errors.MedSegError` (printed by ``cli.main``).
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from typing import List, Tuple

import numpy as np

from ..choices import AXES, DEFAULT_AXIS, DEVICES, PRECISIONS
from ..errors import InputError, MedSegWarning
from ..runspec import DEFAULT_SUPPORT_SIZE, ExampleRef, ExamplesRun
from .common import choices_metavar as _choices
from ..textforms import split_pair  # noqa: F401  (shared with batch manifests)

INTENSITY_HELP = ("intensity preset for examples and target: auto, raw, ct-abdomen, ct-lung, ct-brain, "
                  "ct-mediastinum, mr or window:L,W (default: the library's preset, else auto)")


def register(subparsers) -> None:
    _add_universeg(subparsers)
    _add_library(subparsers)


# ------------------------------------------------------------------------------------------------ helpers --
def _grey_target(img):
    from ..io import to_grey

    if img.is_rgb:
        warnings.warn(f"{img.path} is an RGB image: converted to grey levels for UniverSeg.", MedSegWarning,
                      stacklevel=2)
        grey = to_grey(img.array)
        return np.clip(np.rint(grey), 0, 255).astype(np.uint8) if img.array.dtype == np.uint8 else \
            grey.astype(np.float32)
    return img.array


def _example_paths(pairs: List[str]) -> List[str]:
    out = []
    for text in pairs or ():
        out.extend(split_pair(text))
    return out


def _examples_from_pairs(pairs: List[str]):
    from ..io import check_same_grid, read_image
    from ..universeg import Example

    out = []
    for text in pairs:
        ipath, lpath = split_pair(text)
        img = read_image(ipath)
        lab = read_image(lpath, label=True)  # an empty label is an example without the structure: skipped later
        if lab.is_rgb:
            raise InputError(f"Label {lpath} is an RGB image: give a grey label map (0 = background).")
        check_same_grid(img, lab, f"Example {os.path.basename(ipath)}")
        out.append(Example(img.array, lab.array, os.path.basename(ipath)))
    return out


# ---------------------------------------------------------------------------------------- medseg universeg --
def _add_universeg(sub) -> None:
    p = sub.add_parser(
        "universeg", help="segment a structure from example segmentations (UniverSeg, no training)",
        description="Segment TARGET (2-D image or volume, slice-wise along --axis) from examples: image/label "
                    "pairs, an example library, or a few labelled slices of TARGET itself (few-shot completion). "
                    "The UniverSeg weights are OpenRAIL++-M (research only): accept the licence once with "
                    "`medseg models fetch universeg-v1 --accept-licence`.")
    p.add_argument("target", help="image or volume to segment (NRRD, NIfTI, MHA, PNG, TIFF, DICOM folder)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--examples", nargs="+", metavar="IMG:LABEL",
                     help="example image and label files (2-D slices or volumes; volumes give their slices that "
                          "contain --label)")
    src.add_argument("--library", metavar="DIR", help="example library folder or imported library name")
    src.add_argument("--labelled-slices", metavar="LABELMAP",
                     help="label map on TARGET's grid with a few slices labelled (few-shot completion)")
    p.add_argument("-o", "--output", required=True, help="label map to write (.nrrd, .nii.gz, .mha, .png, .tif)")
    p.add_argument("--series", metavar="N|UID",
                   help="TARGET is a DICOM folder holding several series: the one to segment (its number as listed, "
                        "or its UID)")
    p.add_argument("--roi", help="X0,Y0,Z0,X1,Y1,Z1 (volume) or X0,Y0,X1,Y1 (2-D), voxel indices, inclusive; "
                                 "voxels outside stay 0 (default: whole target, region from the examples)")
    p.add_argument("--label", type=int, help="value of the structure in the example labels (default: the "
                                             "library's, else 1)")
    # The run's choices are checked by the run spec (medseg_backend.runspec), as in Slicer and the worker.
    p.add_argument("--axis", default=DEFAULT_AXIS, metavar=_choices(AXES),
                   help="slicing axis in voxel space (axial = along K)")
    p.add_argument("--support-size", type=int, default=DEFAULT_SUPPORT_SIZE, help="examples per pass (UniverSeg was trained with 64)")
    p.add_argument("--ensemble", type=int, default=1,
                   help="with more examples than --support-size: average this many random subsets")
    p.add_argument("--seed", type=int, default=0, help="seed of the random subsets")
    p.add_argument("--tta", action="store_true", help="also run left-right flipped and average")
    p.add_argument("--neighbour-hint", action="store_true",
                   help="crop each slice around its neighbour's result (outward from the middle slice)")
    p.add_argument("--intensity", default=None, help=INTENSITY_HELP)
    p.add_argument("--weights", help="UniverSeg checkpoint (default: the installed universeg-v1)")
    p.add_argument("--device", default="auto", metavar=_choices(DEVICES))
    p.add_argument("--precision", default="auto", metavar=_choices(PRECISIONS),
                   help="auto = fp32 (exact); bf16/fp16 are faster, with small differences")
    p.add_argument("--output-value", type=int, help="value written for the structure (default: --label)")
    p.add_argument("--no-keep-labelled", action="store_true",
                   help="with --labelled-slices: also overwrite the slices you labelled with the prediction")
    p.add_argument("--probabilities", help="also write the probability map (float32; .nrrd, .nii.gz, .mha, .tif)")
    p.set_defaults(func=cmd_universeg)


def cmd_universeg(args) -> int:
    from .medsam import out_of_memory

    try:
        return _cmd_universeg(args)
    except MemoryError:
        raise out_of_memory(f"segmenting {args.target}") from None


def _cmd_universeg(args) -> int:
    from ..io import (LABEL_EXTENSIONS, PROBABILITY_EXTENSIONS, check_outputs, check_same_grid, check_volume_format,
                      float_image, label_image, read_image, write_images)
    from .common import parse_box
    from ..slicing import check_box
    from ..progress import CancelToken
    from ..universeg import UniverSegEngine, examples_from_labelled_slices
    from ..universeg.library import load_library
    from ..slicing import axis_index

    # 1. Every output path, before anything is read or computed.
    inputs = [args.target, args.labelled_slices, args.weights] + _example_paths(args.examples)
    check_outputs([(args.output, "output", LABEL_EXTENSIONS), (args.probabilities, "probability map", PROBABILITY_EXTENSIONS)],
                  inputs=inputs)
    # 2. Inputs, ROI and options, before the model is loaded.
    img = read_image(args.target, series=args.series)
    target = _grey_target(img)
    check_volume_format(args.output, target.shape, is_volume=target.ndim == 3, what="output")
    check_volume_format(args.probabilities, target.shape, is_volume=target.ndim == 3, what="probability map")
    roi = parse_box(args.roi, target.ndim) if args.roi else None
    if roi is not None:
        from .common import quiet_check as _quiet_check

        _quiet_check(check_box, roi, target.shape, what="ROI", axis=0 if target.ndim == 2 else axis_index(args.axis))
    label = args.label
    intensity = args.intensity
    keep = None
    if args.library:
        examples, manifest = load_library(args.library)
        label = manifest["label"] if label is None else label
        intensity = manifest.get("intensity", "auto") if intensity is None else intensity
        print(f"library '{manifest['structure']}' ({manifest.get('modality', '?')}): {len(examples)} item(s), "
              f"label {manifest['label']}", file=sys.stderr)
    else:
        label = 1 if label is None else label
        if args.labelled_slices:
            lab = read_image(args.labelled_slices, label=True)
            if lab.array.shape != target.shape:
                raise InputError(f"Labelled slices {args.labelled_slices} {tuple(lab.array.shape)} and the target "
                                 f"{tuple(target.shape)} differ in shape: label slices of the target itself.")
            check_same_grid(img, lab, "Labelled slices")
            if target.ndim != 3:
                raise InputError("--labelled-slices needs a volume target: for a 2-D image give --examples.")
            examples = examples_from_labelled_slices(target, lab.array, label=label, axis=args.axis)
            if not args.no_keep_labelled:
                keep = lab.array
        else:
            examples = _examples_from_pairs(args.examples)
    spec = ExamplesRun(examples=[ExampleRef.of(e, f"image{i}", f"label{i}") for i, e in enumerate(examples)],
                       roi=roi, axis=args.axis, intensity=intensity or "auto", support_size=args.support_size,
                       ensemble=args.ensemble, seed=args.seed, tta=args.tta, neighbour_hint=args.neighbour_hint,
                       label=label, weights=args.weights, device=args.device, precision=args.precision,
                       outputs=("mask", "probabilities") if args.probabilities else ("mask",))
    value = label if args.output_value is None else args.output_value
    if not 0 < value < 65536:
        raise InputError(f"Output value {value} does not fit a label map: use 1..65535 (--output-value).")
    from ..intensity import resolve_preset

    resolve_preset(spec.intensity, target)  # a window outside the data: before the model loads
    # 3. The model, the run.
    t0 = time.perf_counter()
    engine = UniverSegEngine(weights=spec.weights, device=spec.device, precision=spec.precision)
    from .common import ProgressPrinter

    res = engine.run(spec, target, examples, progress=ProgressPrinter(), cancel=CancelToken())
    mask = res.mask.astype(bool)
    if keep is not None:
        ax = axis_index(spec.axis)
        other = tuple(a for a in range(3) if a != ax)
        for n in np.flatnonzero(np.any(keep == label, axis=other)):
            idx = [slice(None)] * 3
            idx[ax] = int(n)
            mask[tuple(idx)] = keep[tuple(idx)] == label
        res.messages.append("your labelled slices were kept as drawn")
    dt = time.perf_counter() - t0
    for m in res.messages:
        print(m, file=sys.stderr)
    dtype = np.uint8 if value < 256 else np.uint16
    out = mask.astype(dtype) * dtype(value)
    # 4. All outputs together, or none.
    items = [(args.output, label_image(out, img.geometry), img.geometry)]
    if args.probabilities:
        items.append((args.probabilities, float_image(res.probabilities, img.geometry), img.geometry))
    write_images(items)
    print(f"wrote {args.output}: {int(mask.sum())} voxels labelled ({value}), {res.slices_run} slice(s), "
          f"{dt:.1f} s (universeg-v1, {engine.device.type}, {engine.precision})")
    return 0


# ----------------------------------------------------------------------------------------- medseg library --
def _add_library(sub) -> None:
    p = sub.add_parser("library", help="example libraries for UniverSeg: export, import, list",
                       description="Example libraries: folders of example images + labels with a manifest.json "
                                   "(structure, modality, intensity preset, label value).")
    lsub = p.add_subparsers(dest="library_command", metavar="ACTION")
    lsub.required = True

    e = lsub.add_parser("export", help="write examples into a new library folder")
    e.add_argument("folder", help="library folder to create")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--examples", nargs="+", metavar="IMG:LABEL", help="example image and label files")
    src.add_argument("--volume", metavar="IMG", help="a volume whose labelled slices become the examples "
                                                      "(with --labelmap)")
    e.add_argument("--labelmap", metavar="LABEL", help="label map on --volume's grid")
    e.add_argument("--structure", required=True, help="what the examples show, e.g. liver")
    e.add_argument("--modality", default="unknown", help="e.g. CT, MR, US")
    e.add_argument("--intensity", default="auto", help="preset to use with these examples (default auto)")
    e.add_argument("--label", type=int, default=1, help="value of the structure in the labels (default 1)")
    e.add_argument("--axis", default=DEFAULT_AXIS, choices=list(AXES),
                   help="with --volume: slicing axis of the exported slices")
    e.add_argument("--max-slices", type=int, help="with --volume: keep this many evenly spaced labelled slices")
    e.add_argument("--overwrite", action="store_true", help="replace an existing library folder")
    e.set_defaults(func=cmd_library_export)

    i = lsub.add_parser("import", help="check a library folder and copy it into the shared library collection")
    i.add_argument("folder", help="library folder (with manifest.json)")
    i.add_argument("--name", help="name in the collection (default: the folder name)")
    i.add_argument("--overwrite", action="store_true", help="replace an imported library of the same name")
    i.set_defaults(func=cmd_library_import)

    ls = lsub.add_parser("list", help="list imported libraries, or the items of one library")
    ls.add_argument("folder", nargs="?", help="a library folder or name: list its items")
    ls.set_defaults(func=cmd_library_list)


def cmd_library_export(args) -> int:
    from ..io import check_same_grid, read_image
    from ..universeg import examples_from_volume
    from ..universeg.library import export_library

    if args.volume:
        if not args.labelmap:
            raise InputError("--volume needs --labelmap: give the label map drawn on that volume.")
        vol = read_image(args.volume)
        lab = read_image(args.labelmap, label=True)
        check_same_grid(vol, lab, f"Example volume {os.path.basename(args.volume)}")
        if vol.array.ndim == 2 and not vol.is_rgb:
            from ..universeg import Example

            examples = [Example(vol.array, lab.array, os.path.basename(args.volume))]
        else:
            examples = examples_from_volume(vol.array, lab.array, label=args.label, axis=args.axis,
                                            max_slices=args.max_slices, name=os.path.basename(args.volume))
    else:
        if args.labelmap:
            raise InputError("--labelmap goes with --volume; with --examples give IMG:LABEL pairs.")
        examples = _examples_from_pairs(args.examples)
    out = export_library(args.folder, examples, structure=args.structure, modality=args.modality,
                         intensity=args.intensity, label=args.label, overwrite=args.overwrite)
    print(f"wrote library {out}: {args.structure}, {len(examples)} example(s) offered")
    return 0


def cmd_library_import(args) -> int:
    from ..universeg.library import import_library, library_summary

    dest = import_library(args.folder, args.name, overwrite=args.overwrite)
    s = library_summary(dest)
    print(f"imported '{s['name']}' ({s['structure']}, {s['modality']}, {s['items']} item(s)) into {dest}")
    return 0


def cmd_library_list(args) -> int:
    from ..universeg.library import libraries_dir, list_libraries, read_manifest, resolve_library

    if args.folder:
        root = resolve_library(args.folder)
        m = read_manifest(root)
        print(f"{root}: {m['structure']} ({m.get('modality')}), label {m['label']}, intensity "
              f"{m.get('intensity')}, {len(m['items'])} item(s)")
        for it in m["items"]:
            print(f"  {it.get('name', '')}: {it['image']} + {it['label']}")
        return 0
    libs = list_libraries()
    if not libs:
        print(f"no imported libraries in {libraries_dir()} (add one with `medseg library import FOLDER`)")
        return 0
    for s in libs:
        if "error" in s:
            print(f"{s['name']}: BROKEN - {s['error']}")
        else:
            print(f"{s['name']}: {s['structure']} ({s['modality']}), label {s['label']}, intensity {s['intensity']}, "
                  f"{s['items']} item(s) - {s['path']}")
    return 0
