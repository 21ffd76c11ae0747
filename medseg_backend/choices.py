"""Every choice list of the backend, the command line and the Slicer module, in one place (no torch import, so
argument parsers and the Slicer layer can use it cheaply)."""
from __future__ import annotations

MEDSAM_MODELS = ("lite-medsam", "medsam-vit-b")
#: 3-D propagation modes of MedSAM (see medseg_backend.medsam). ``adaptive`` beats ``official`` on the mean (+0.038
#: tight, +0.021 loose boxes, 20 cases) but is worse than it by more than 0.01 on some cases (worst -0.064 / -0.051):
#: it stays opt-in until no case falls behind (README, "3-D propagation modes").
PROPAGATIONS = ("official", "adaptive", "roi", "stop")
DEFAULT_PROPAGATION = "official"
#: slicing axes in voxel space: index of the (K, J, I) array axis the slices are taken along
AXES = {"axial": 0, "coronal": 1, "sagittal": 2}
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Which way a walk from a corrected slice goes: towards higher slice indices, lower ones, or both.
DIRECTIONS = ("both", "up", "down")
