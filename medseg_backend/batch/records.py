"""The per-case record: what produced a case's outputs, written last and atomically.

``<outdir>/records/<case_id>.json`` holds the case's spec (model, weights file and sha256, prompts, options), the
sha256 of each output, the seconds it took and its measures. A case is done only when its record exists, its spec
equals the one asked for now, and every output is there with the recorded hash: a re-run skips exactly those
cases and redoes the rest (a run killed before the record was written, a changed row, an output deleted or
altered).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Dict, List, Optional

from ..download import sha256_file
from ..io import make_public

RECORDS = "records"
#: prefix of every temporary file a batch run makes in its output folder (removed by the next run when a run was
#: killed before it could clean up; io.write_images uses the same prefix)
TEMP_PREFIX = ".medseg-"


def record_path(outdir: str, case_id: str) -> str:
    return os.path.join(outdir, RECORDS, case_id + ".json")


def output_hashes(paths: List[str], outdir: str) -> Dict[str, str]:
    """{path relative to ``outdir``: sha256}."""
    return {os.path.relpath(p, outdir): sha256_file(p) for p in paths}


def write_record(outdir: str, case_id: str, record: Dict) -> str:
    """Write the record through a temporary file and an atomic rename (the case counts as done from then on)."""
    path = record_path(outdir, case_id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".json", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(dict(record, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z")), fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        make_public(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def done_record(outdir: str, spec: Dict) -> Optional[Dict]:
    """The record of a finished case with this ``spec`` (see :meth:`CaseSpec.as_dict`) whose outputs are intact,
    else None."""
    path = record_path(outdir, spec["case_id"])
    try:
        with open(path, encoding="utf-8") as fh:
            rec = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("spec") != spec or not isinstance(rec.get("outputs"), dict):
        return None
    for rel, digest in rec["outputs"].items():
        p = os.path.join(outdir, rel)
        try:
            if sha256_file(p) != digest:
                return None
        except OSError:
            return None
    return rec


def clean_temporaries(outdir: str) -> int:
    """Remove the temporary files a killed run left in ``outdir`` and its records folder (call under the output
    folder's lock only); returns how many."""
    n = 0
    for folder in (outdir, os.path.join(outdir, RECORDS)):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if name.startswith(TEMP_PREFIX) and os.path.isfile(os.path.join(folder, name)):
                try:
                    os.unlink(os.path.join(folder, name))
                    n += 1
                except OSError:
                    pass
    return n
