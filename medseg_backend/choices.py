"""Every choice list of the backend, the command line and the Slicer module, in one place (no torch import, so
argument parsers and the Slicer layer can use it cheaply)."""
from __future__ import annotations

MEDSAM_MODELS = ("lite-medsam", "medsam-vit-b")
#: 3-D propagation modes of MedSAM (see medseg_backend.medsam). ``adaptive`` beats ``official`` on tight boxes
#: (+0.040 mean Dice over 20 cases) but not on loose ones (+0.010, one case -0.117): it stays opt-in until it
#: meets the bar on both (README, "3-D propagation modes").
PROPAGATIONS = ("official", "adaptive", "roi", "stop")
DEFAULT_PROPAGATION = "official"
#: slicing axes in voxel space: index of the (K, J, I) array axis the slices are taken along
AXES = {"axial": 0, "coronal": 1, "sagittal": 2}
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Which way a walk from a corrected slice goes: towards higher slice indices, lower ones, or both.
DIRECTIONS = ("both", "up", "down")
