"""``medseg batch MANIFEST -o OUTDIR``: segment a cohort on Ray, resumable (see :mod:`medseg_backend.batch`).

Registered by :func:`medseg_backend.cli.build_parser` through :func:`register`. Ray (and highdicom for
``--format dicom-seg``) are the optional extra ``medseg-backend[batch]``; without them the command says how to
install it, and everything else works as before.
"""
from __future__ import annotations

import os
import sys

from ..choices import DEVICES
from ..errors import InputError, MedSegError


def register(sub) -> None:
    p = sub.add_parser(
        "batch", help="segment a cohort from a CSV manifest on Ray (resumable; summary; DICOM SEG)",
        description="Segment every case of a CSV manifest (one row per case: image, model, boxes or label map + "
                    "labels, or UniverSeg examples / library) on Ray. The manifest is checked whole first; a "
                    "re-run skips the cases already done (their record and outputs intact). Needs the extra: "
                    "pip install 'medseg-backend[batch]'.")
    p.add_argument("manifest", help="CSV file, one row per case (columns: see GUIDE.md, 'A whole cohort')")
    p.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    p.add_argument("--workers", type=int, help="parallel workers, each with its own loaded model (default: one per "
                                               "CPU of the Ray cluster)")
    p.add_argument("--address", help="an existing Ray cluster (e.g. ray://head:10001 or auto); default: local Ray")
    p.add_argument("--format", default="nifti", choices=("nifti", "nrrd", "dicom-seg"),
                   help="label maps as .nii.gz (default) or .nrrd, or DICOM SEG for DICOM inputs")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--check", action="store_true", help="check the manifest and list what would run; run nothing")
    p.set_defaults(func=cmd_batch)


def cmd_batch(args) -> int:
    from .. import __version__
    from ..batch.manifest import load_manifest
    from ..batch.records import clean_temporaries, done_record
    from ..batch.runner import INSTALL_HINT, _Interrupted, import_ray, run_cases, start_ray
    from ..batch.summary import summary_files, table
    from ..io import check_writable_folder, write_images
    from ..locking import FileLock

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: give 1 or more.")
    if not args.check:
        import_ray()
    if args.format == "dicom-seg":
        try:
            import highdicom  # noqa: F401
        except ImportError:
            raise MedSegError(f"--format dicom-seg needs highdicom, which is not installed: {INSTALL_HINT}.") from None
    outdir = os.path.abspath(args.output)
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise InputError(f"The output folder {args.output} is a file: give a folder name.")
    cases = load_manifest(args.manifest, outdir, args.format)  # every row checked before anything is written
    if args.check:
        print(f"{args.manifest}: {len(cases)} case(s) checked, nothing run")
        for c in cases:
            print(f"  {c.case_id}: {c.model}, {len(c.boxes) or 1} object(s) -> {os.path.basename(c.output)}")
        return 0
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as exc:
        raise InputError(f"Cannot create the output folder {args.output} ({exc.strerror}): choose another.") from None
    check_writable_folder(outdir, "output")
    lock = FileLock(os.path.join(outdir, ".batch.lock"), what="")
    holder = lock.held_elsewhere()
    if holder is not None:
        raise InputError(f"Another medseg batch{holder} is writing into {args.output}: wait until it ends, or choose "
                         "another output folder.")
    with lock:
        clean_temporaries(outdir)
        rows, todo = {}, []
        for c in cases:
            spec = c.as_dict()
            rec = done_record(outdir, spec)
            if rec is None:
                todo.append(spec)
                continue
            rows[c.case_id] = {"case_id": c.case_id, "model": c.model, "status": "skipped (done)",
                               **{k: rec.get(k) for k in ("seconds", "slices", "flagged", "dice", "assd_mm",
                                                           "hd95_mm")}}
        say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
        say(f"{len(cases)} case(s): {len(rows)} already done, {len(todo)} to run")
        interrupted = None
        if todo:
            started = start_ray(args.workers, args.address)
            try:
                got = run_cases(todo, outdir, workers=args.workers, device=args.device, version=__version__, say=say,
                                offset=len(rows), total=len(cases))
            except _Interrupted as exc:
                got, interrupted = exc.rows, exc
            finally:
                if started:
                    import ray

                    ray.shutdown()
            specs = {s["case_id"]: s for s in todo}
            for r in got:
                rec = done_record(outdir, specs[r["case_id"]]) if r["status"] == "interrupted" else None
                if rec is not None:  # its worker recorded it while the run was being stopped
                    r = dict(r, status="done", error="",
                             **{k: rec.get(k) for k in ("seconds", "slices", "flagged", "dice", "assd_mm", "hd95_mm")})
                rows[r["case_id"]] = r
        ordered = [rows[c.case_id] for c in cases]
        write_images(summary_files(ordered, outdir))
    print(table(ordered))
    print(f"summary: {os.path.join(args.output, 'summary.csv')} and summary.json")
    if interrupted is not None:
        done = sum(r["status"] in ("done", "skipped (done)") for r in ordered)
        print(f"error: interrupted: {done} case(s) done and recorded; run the same command again to finish the other "
              f"{len(ordered) - done}.", file=sys.stderr)
        return 130
    return 1 if any(r["status"] not in ("done", "skipped (done)") for r in ordered) else 0
