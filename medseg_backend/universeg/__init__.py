"""In-context segmentation with UniverSeg v1: segment a new image from a few example segmentations.

Public API (used by the CLI and the Slicer effect)::

    from medseg_backend.universeg import Example, UniverSegEngine, UniverSegResult
    from medseg_backend.universeg import examples_from_labelled_slices, examples_from_volume
    from medseg_backend.universeg.library import load_library, export_library

    examples = examples_from_labelled_slices(volume, labelmap, label=1, axis="axial")
    engine = UniverSegEngine(weights=None, device="auto")          # licence must be accepted
    result = engine.segment_volume(volume, examples, roi=(x0, y0, z0, x1, y1, z1), label=1)
    result.mask, result.probabilities, result.messages
"""
from .examples import Example, cut_examples, examples_from_labelled_slices, examples_from_volume


def __getattr__(name):
    # the engine (torch) is loaded on first use only: examples and libraries work without torch
    if name in ("UniverSegEngine", "UniverSegResult"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["Example", "cut_examples", "UniverSegEngine", "UniverSegResult", "examples_from_labelled_slices",
           "examples_from_volume"]
