"""What is known about a model's weights (:func:`status`) and a full check of the installed files
(:func:`verify`: size, sha256, layout)."""
from __future__ import annotations

from typing import List, Optional

from ..download import sha256_file
from ..errors import WeightsError
from ..progress import CancelToken
from .cache import downloads_dir
from .hashes import check_layout
from .installed import expected_size, find_installed
from .licences import licence_accepted
from .registry import ENTRIES, get_entry
from .state import read_state, record


def status(name: str) -> dict:
    """What is known about ``name``: installed file, licence, recorded and expected hashes, partial download."""
    entry = get_entry(name)
    state = read_state()
    path, source = find_installed(entry)
    rec = state["files"].get(entry.name) if source == "cache" else None
    lic = state["licences"].get(entry.name)
    part = downloads_dir() / (entry.filename + ".part")
    return {
        "name": entry.name,
        "title": entry.title,
        "arch": entry.arch,
        "installed": path is not None,
        "path": str(path) if path is not None else None,
        "source": source,
        "file_size": path.stat().st_size if path is not None else None,
        "licence": entry.licence,
        "licence_url": entry.licence_url,
        "requires_acceptance": entry.requires_acceptance,
        "licence_accepted": licence_accepted(entry.name),
        "accepted_at": lic.get("accepted_at") if isinstance(lic, dict) and entry.requires_acceptance else None,
        "url": entry.url,
        "page": entry.page,
        "expected_sha256": entry.sha256,
        "sha256_authoritative": entry.sha256_authoritative,
        "recorded_sha256": rec.get("sha256") if isinstance(rec, dict) else None,
        "recorded_at": rec.get("recorded_at") if isinstance(rec, dict) else None,
        "partial_download_bytes": part.stat().st_size if part.is_file() else 0,
    }


def verify(name: Optional[str] = None, cancel: Optional[CancelToken] = None) -> List[dict]:
    """Check the installed files (all entries, or ``name``): size, sha256 against the authoritative / recorded /
    known hash, and layout. One dict per entry with ``ok`` = True / False, or None when not installed."""
    entries = [get_entry(name)] if name is not None else list(ENTRIES.values())
    results = []
    for entry in entries:
        path, source = find_installed(entry)
        res = {"name": entry.name, "installed": path is not None, "path": str(path) if path else None,
               "source": source, "ok": None, "size": None, "sha256": None, "expected_sha256": None,
               "hash_source": None, "hash_ok": None, "layout_ok": None, "problems": []}
        if path is None:
            res["problems"].append("not installed")
            results.append(res)
            continue
        rec = record(entry) if source == "cache" else None
        res["size"] = path.stat().st_size
        res["sha256"] = sha256_file(path, cancel=cancel)
        if rec is not None:
            res["expected_sha256"], res["hash_source"] = rec["sha256"], "recorded"
        elif entry.sha256 is not None:
            res["expected_sha256"] = entry.sha256
            res["hash_source"] = "authoritative" if entry.sha256_authoritative else "known"
        if res["expected_sha256"] is not None:
            res["hash_ok"] = res["sha256"] == res["expected_sha256"]
            if not res["hash_ok"]:
                sev = "warning: " if res["hash_source"] == "known" else ""
                res["problems"].append(f"{sev}sha256 differs from the {res['hash_source']} {res['expected_sha256']}")
        size = expected_size(entry, rec)
        if size is not None and res["size"] != size:
            res["problems"].append(f"size {res['size']} bytes, {size} expected")
        try:
            check_layout(entry, path, f"Layout check failed for {entry.name}")
            res["layout_ok"] = True
        except WeightsError as e:
            res["layout_ok"] = False
            res["problems"].append(str(e))
        res["ok"] = all(p.startswith("warning: ") for p in res["problems"])
        results.append(res)
    return results
