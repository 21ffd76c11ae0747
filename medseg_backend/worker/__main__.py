"""``python -m medseg_backend.worker``: the model worker (see :mod:`medseg_backend.worker.protocol`)."""
import sys

from .server import main

sys.exit(main())
