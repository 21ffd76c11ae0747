"""`medseg models ...`: list, fetch, import, verify, locate and delete weights; accept licences.

``register(subparsers)`` adds the ``models`` command to the main parser of :mod:`medseg_backend.cli`; every
sub-command stores its handler in ``args.func`` and the handler returns an exit code (0 success, 1 a verify
found a bad file). Errors are raised as :class:`~medseg_backend.errors.MedSegError`; ``cli.main`` prints
``error: <message>`` and exits 2. Warnings raised while fetching or importing (a checkpoint may raise many) are
printed after the step, each once and at most ``common.MAX_WARNINGS_SHOWN`` of them.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from .. import weights
from ..progress import CancelToken
from .common import ProgressPrinter, relayed_warnings

__all__ = ["register"]


def _yes_no(flag: Optional[bool]) -> str:
    return "yes" if flag else "no"


def _cmd_list(args) -> int:
    rows = []
    for entry in weights.entries():
        st = weights.status(entry.name)
        accepted = _yes_no(st["licence_accepted"]) if entry.requires_acceptance else "-"
        where = st["path"] or "(not installed)"
        if st["recorded_sha256"]:
            where += f"  sha256 {st['recorded_sha256']}"
        rows.append((entry.name, _yes_no(st["installed"]), accepted, entry.licence, entry.title, where))
    header = ("NAME", "INSTALLED", "ACCEPTED", "LICENCE", "TITLE")
    widths = [max(len(r[i]) for r in rows + [header + ("",)]) for i in range(len(header))]
    out = sys.stdout
    out.write("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip() + "\n")
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)).rstrip() + "\n")
        out.write(" " * 4 + r[5] + "\n")
    out.write(f"cache folder: {weights.cache_dir()}\n")
    return 0


def _report_installed(name: str, path) -> None:
    st = weights.status(name)
    sys.stdout.write(f"{name}: {path}\n")
    if st["recorded_sha256"]:
        sys.stdout.write(f"sha256 {st['recorded_sha256']} (recorded {st['recorded_at']})\n")


def _cmd_fetch(args) -> int:
    progress = ProgressPrinter()
    cancel = CancelToken()
    try:
        with relayed_warnings():
            try:
                path = weights.fetch(args.name, accept_licence=args.accept_licence, progress=progress, cancel=cancel)
            finally:
                progress.close()
    except KeyboardInterrupt:
        cancel.cancel()
        sys.stderr.write("\ncancelled: nothing was installed\n")
        return 130
    _report_installed(weights.get_entry(args.name).name, path)
    return 0


def _cmd_import(args) -> int:
    with relayed_warnings():
        path = weights.import_weights(args.name, args.file, accept_licence=args.accept_licence,
                                      progress=ProgressPrinter())
    _report_installed(weights.get_entry(args.name).name, path)
    return 0


def _cmd_verify(args) -> int:
    results = weights.verify(args.name)
    failed = 0
    for r in results:
        if r["ok"] is None:
            sys.stdout.write(f"{r['name']}: not installed\n")
            continue
        state = "ok" if r["ok"] else "FAILED"
        failed += 0 if r["ok"] else 1
        hash_info = f"sha256 {r['sha256']}"
        if r["hash_source"]:
            hash_info += f" ({'matches' if r['hash_ok'] else 'differs from'} {r['hash_source']})"
        sys.stdout.write(f"{r['name']}: {state}  {r['path']}  {r['size']} bytes  {hash_info}  "
                         f"layout {'ok' if r['layout_ok'] else 'WRONG'}\n")
        for p in r["problems"]:
            sys.stdout.write(f"    {p}\n")
    return 1 if failed else 0


def _cmd_path(args) -> int:
    if args.name is None:
        sys.stdout.write(f"{weights.cache_dir()}\n")
        return 0
    entry = weights.get_entry(args.name)
    path = weights.installed_path(entry.name)
    if path is None:
        raise weights.not_installed_error(entry)
    sys.stdout.write(f"{path}\n")
    return 0


def _cmd_delete(args) -> int:
    entry = weights.get_entry(args.name)
    removed = weights.delete(entry.name, progress=ProgressPrinter())
    for p in removed:
        sys.stdout.write(f"removed {p}\n")
    remaining = weights.installed_path(entry.name)
    if remaining is not None:
        sys.stdout.write(f"{entry.name}: the copy at {remaining} belongs to an installed pip package and was kept\n")
    elif not removed:
        sys.stdout.write(f"{entry.name}: nothing to delete\n")
    return 0


def _cmd_accept(args) -> int:
    entry = weights.get_entry(args.name)
    if not entry.requires_acceptance:
        sys.stdout.write(f"{entry.name} ({entry.licence}) needs no acceptance\n")
        return 0
    rec = weights.accept_licence(entry.name)
    sys.stdout.write(f"{entry.name}: accepted {entry.licence} ({entry.licence_url}) on {rec['accepted_at']}\n")
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``models`` and its sub-commands to ``subparsers`` (from ``parser.add_subparsers()``)."""
    names = ", ".join(weights.ENTRIES)
    p = subparsers.add_parser("models", help="list, fetch, import, verify or delete model weights",
                              description="Model weights registry and cache (shared by the CLI and Slicer). "
                                          f"Models: {names}.")
    p.set_defaults(func=_cmd_list)
    sub = p.add_subparsers(dest="models_command", metavar="COMMAND")

    s = sub.add_parser("list", help="models, installed files and licences")
    s.set_defaults(func=_cmd_list)

    s = sub.add_parser("fetch", help="download a model's weights into the cache (progress on stderr)")
    s.add_argument("name", metavar="NAME", help=names)
    s.add_argument("--accept-licence", "--accept-license", dest="accept_licence", action="store_true",
                   help="accept the weights' licence (required once for universeg-v1: OpenRAIL++-M, research only)")
    s.set_defaults(func=_cmd_fetch)

    s = sub.add_parser("import", help="install a weights file obtained by other means (offline)")
    s.add_argument("name", metavar="NAME", help=names)
    s.add_argument("file", metavar="FILE", help="the downloaded checkpoint")
    s.add_argument("--accept-licence", "--accept-license", dest="accept_licence", action="store_true",
                   help="accept the weights' licence")
    s.set_defaults(func=_cmd_import)

    s = sub.add_parser("verify", help="check size, sha256 and layout of installed weights (exit 1 if bad)")
    s.add_argument("name", metavar="NAME", nargs="?", default=None, help="one model (default: all)")
    s.set_defaults(func=_cmd_verify)

    s = sub.add_parser("path", help="print the cache folder, or the weights file of NAME")
    s.add_argument("name", metavar="NAME", nargs="?", default=None)
    s.set_defaults(func=_cmd_path)

    s = sub.add_parser("delete", help="remove NAME's cached weights, partial download and recorded hash")
    s.add_argument("name", metavar="NAME")
    s.set_defaults(func=_cmd_delete)

    s = sub.add_parser("accept-licence", aliases=["accept-license"], help="accept NAME's licence")
    s.add_argument("name", metavar="NAME")
    s.set_defaults(func=_cmd_accept)
    return p
