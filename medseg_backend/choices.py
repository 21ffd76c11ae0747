"""Every choice list of the backend, the command line and the Slicer module, in one place (no torch import, so
argument parsers and the Slicer layer can use it cheaply)."""
from __future__ import annotations

MEDSAM_MODELS = ("lite-medsam", "medsam-vit-b")
#: 3-D propagation modes of MedSAM (see medseg_backend.medsam.propagation). The default ``adaptive`` beats the
#: published procedure ``official`` (kept for exact parity) on 20 labelled structures by +0.096 mean Dice with tight
#: boxes and +0.076 with loose ones, and is nowhere more than 0.007 below it (README, "3-D propagation modes").
PROPAGATIONS = ("official", "adaptive", "roi", "stop")
DEFAULT_PROPAGATION = "adaptive"
#: slicing axes in voxel space: index of the (K, J, I) array axis the slices are taken along
AXES = {"axial": 0, "coronal": 1, "sagittal": 2}
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Which way a walk from a corrected slice goes: towards higher slice indices, lower ones, or both.
DIRECTIONS = ("both", "up", "down")
