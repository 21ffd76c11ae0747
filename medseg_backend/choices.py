"""Every choice list of the backend, the command line and the Slicer module, and the default of each, in one place
(no torch import, so argument parsers and the Slicer layer can use it cheaply). The run spec
(:mod:`medseg_backend.runspec`) checks every value of a run against these lists."""
from __future__ import annotations

MEDSAM_MODELS = ("lite-medsam", "medsam-vit-b")
DEFAULT_MODEL = MEDSAM_MODELS[0]
#: 3-D propagation modes of MedSAM (see medseg_backend.medsam.propagation). The default is the published procedure
#: ``official``. ``adaptive`` beat it on the 20 structures it was tuned on but lost on held-out brain-tumour MR
#: (mean -0.027 Dice, worst -0.34 on a ring-enhancing tumour core; issue 23), so it stays opt-in until a default
#: is at most 0.01 below ``official`` on every held-back case.
PROPAGATIONS = ("official", "adaptive", "roi", "stop", "guarded")
DEFAULT_PROPAGATION = "official"
#: slicing axes in voxel space: index of the (K, J, I) array axis the slices are taken along
AXES = {"axial": 0, "coronal": 1, "sagittal": 2}
DEFAULT_AXIS = "axial"
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Encoder runtimes (medseg_backend.runtime): ``auto`` is OpenVINO on the CPU when it is installed, else torch.
RUNTIMES = ("auto", "torch", "openvino")
#: Which way a walk from a corrected slice goes: towards higher slice indices, lower ones, or both.
DIRECTIONS = ("both", "up", "down")
DEFAULT_DIRECTION = "both"
