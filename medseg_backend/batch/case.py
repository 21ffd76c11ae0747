"""One batch case, start to finish, inside a worker: read, segment, write the outputs all or none, measure
against the reference, then write the record (last).

:class:`Engines` keeps each loaded model for the worker's lifetime, so a model is loaded once per worker, not per
case. Nothing here imports Ray: the Ray actor in :mod:`.runner` wraps :func:`run_case`.
"""
from __future__ import annotations

import os
import time
import traceback
from typing import Dict, Optional

import numpy as np

from ..errors import MedSegError, clip_text
from .records import output_hashes, write_record


class Engines:
    """Loaded engines by (model, weights file, device)."""

    def __init__(self, device: str = "auto") -> None:
        self.device = device
        self._engines: Dict = {}
        self.loads = 0

    def get(self, model: str, weights: Optional[str]):
        key = (model, weights)
        if key not in self._engines:
            if model == "universeg":
                from ..universeg import UniverSegEngine

                self._engines[key] = UniverSegEngine(weights=weights, device=self.device)
            else:
                from ..medsam import MedSAMEngine

                self._engines[key] = MedSAMEngine(model, weights=weights, device=self.device)
            self.loads += 1
        return self._engines[key]


def _examples(spec: Dict):
    from ..io import read_image
    from ..universeg import Example
    from ..universeg.library import load_library

    if spec["library"]:
        examples, manifest = load_library(spec["library"])
        return examples, manifest
    out = []
    for ipath, lpath in spec["examples"]:
        out.append(Example(read_image(ipath).array, read_image(lpath, label=True).array, os.path.basename(ipath)))
    return out, None


def _measures(labels: np.ndarray, spec: Dict, spacing_kji, values) -> Dict:
    """Dice and surface distances against the reference: object i (value i + 1 of ``labels``) against the
    reference's ``values[i]`` (or its non-zero voxels when no values are known); the mean over objects."""
    from ..io import read_image
    from ..metrics import dice, surface_distances

    ref = read_image(spec["reference"], label=True).array
    n = int(labels.max(initial=0)) if not values else len(values)
    dices, assds, hd95s = [], [], []
    for i in range(max(n, 1)):
        pred = labels == (i + 1) if values and len(values) > 1 and spec["model"] != "universeg" else labels > 0
        truth = ref == values[i] if values else ref > 0
        dices.append(dice(pred, truth))
        assd, hd = surface_distances(pred, truth, spacing_kji)
        assds.append(assd)
        hd95s.append(hd)
    return {"dice": float(np.mean(dices)), "assd_mm": float(np.mean(assds)), "hd95_mm": float(np.mean(hd95s))}


def run_case(spec: Dict, outdir: str, engines: Engines, version: str) -> Dict:
    """Run one case (``spec`` = :meth:`CaseSpec.as_dict`); return its summary row. Never raises for the case's own
    problems: a failure is ``status: failed`` with one line of error, and nothing of that case is left written
    (or only whole outputs without a record, which the next run redoes)."""
    t0 = time.perf_counter()
    row = {"case_id": spec["case_id"], "model": spec["model"], "status": "failed", "seconds": None, "slices": None,
           "flagged": None, "dice": None, "assd_mm": None, "hd95_mm": None, "error": ""}
    try:
        row.update(_run(spec, outdir, engines, version, t0))
        row["status"] = "done"
    except MedSegError as exc:
        row["error"] = clip_text(str(exc), 300)
    except Exception as exc:  # noqa: BLE001 - one line in the summary; the other cases go on
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
        row["error"] = clip_text(f"{type(exc).__name__}: {exc}{where}", 300)
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def _run(spec: Dict, outdir: str, engines: Engines, version: str, t0: float) -> Dict:
    from ..textforms import default_slice_report_path
    from ..confidence import report_text
    from ..io import label_image, read_image, write_images

    img = read_image(spec["image"])
    arr = img.array
    engine = engines.get(spec["model"], spec["weights"])
    out_path = spec["output"]
    report_path = None
    if spec["model"] == "universeg":
        examples, manifest = _examples(spec)
        value = spec["value"] if spec["value"] is not None else (manifest["label"] if manifest else 1)
        intensity = spec["intensity"] or (manifest.get("intensity", "auto") if manifest else "auto")
        res = engine.segment_volume(arr, examples, roi=spec["roi"], axis=spec["axis"], label=value,
                                    intensity=intensity)
        mask = res.mask.astype(bool)
        labels = mask.astype(np.uint8)  # objects 1..N, as a DICOM SEG wants them
        if spec["format"] != "dicom-seg":  # the label map holds the structure's value, as `medseg universeg` writes
            labels = mask.astype(np.uint8 if value < 256 else np.uint16) * value
        values = [value]
        slices, flagged, report = res.slices_run, None, None
    else:
        res = engine.segment_volume(arr, spec["boxes"], intensity=spec["intensity"] or "auto",
                                    propagation=spec["propagation"], axis=spec["axis"])
        labels = res.labels
        values = spec["label_values"]
        slices, flagged = res.slices_run, len(res.flagged())
        base = out_path[:-len(".seg.dcm")] + ".dcm" if out_path.lower().endswith(".seg.dcm") else out_path
        report_path = default_slice_report_path(base)
        report = report_text(res.slices, img.geometry.spacing, spec["axis"], "csv")
    seconds_model = time.perf_counter() - t0
    # Outputs: all or none (the label map / DICOM SEG and the slice report), then the record.
    written = []
    if spec["format"] == "dicom-seg":
        from .dicomseg import write_dicom_seg

        if report is not None:
            write_images([(report_path, report)])
            written.append(report_path)
        try:
            write_dicom_seg(out_path, labels, spec["image"], spec["structures"],
                            algorithm=_algorithm(spec["model"]), version=version)
        except BaseException:
            for p in written:
                os.unlink(p)
            raise
        written.append(out_path)
    else:
        items = [(out_path, label_image(labels, img.geometry))]
        if report is not None:
            items.append((report_path, report))
        write_images(items)
        written = [p for p, _ in items]
    measures = {}
    if spec["reference"]:
        measures = _measures(labels, spec, tuple(img.geometry.spacing)[::-1], values)
    result = {"slices": int(slices), "flagged": flagged, **measures}
    write_record(outdir, spec["case_id"], {
        "case_id": spec["case_id"], "spec": spec, "outputs": output_hashes(written, outdir),
        "seconds": round(time.perf_counter() - t0, 3), "seconds_model": round(seconds_model, 3),
        "medseg_version": version, "device": str(getattr(engine, "device", "")), **result})
    return result


def _algorithm(model: str) -> str:
    return {"lite-medsam": "LiteMedSAM", "medsam-vit-b": "MedSAM", "universeg": "UniverSeg"}[model]
