"""``python -m medseg_backend.cli`` = ``medseg`` (as ``python -m medseg_backend``)."""
import sys

from . import main

sys.exit(main())
