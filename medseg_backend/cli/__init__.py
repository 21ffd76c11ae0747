"""Command line: ``medseg medsam``, ``medseg universeg``, ``medseg library``, ``medseg models``, ``medseg batch``,
``medseg demo``, ``medseg serve`` / ``medseg serve-token``.

One module per command family (:mod:`.medsam`, :mod:`.universeg`, :mod:`.models`, :mod:`.batch`, :mod:`.serve`), sharing
:mod:`.common`; every choice list comes from :mod:`medseg_backend.choices`. Every user error is a
:class:`~medseg_backend.errors.MedSegError`: it is printed as one ``error: ...`` line and the command exits with
status 2, having written nothing. Warnings (box clipped, few examples, ...) are printed as ``warning: ...`` lines.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import List, Optional

from ..errors import MedSegError, MedSegWarning
from . import batch, medsam, models, serve, universeg


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="medseg", description="MedSAM / LiteMedSAM / UniverSeg segmentation "
                                     "of medical images (backend of the MedSegSlicer 3D Slicer extension)")
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    medsam.register(sub)
    universeg.register(sub)
    models.register(sub)
    batch.register(sub)
    serve.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", MedSegWarning)
        warnings.showwarning = show
        try:
            return int(args.func(args) or 0)
        except MedSegError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("error: interrupted: nothing was written.", file=sys.stderr)
            return 130
