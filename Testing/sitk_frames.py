"""SimpleITK (LPS) <-> Slicer (RAS) voxel frames, for the headless MRML tests that compare with SimpleITK.

Test-only helpers (moved from ``MedSegSlicerLib.geometry``, where nothing else used them): the geometry is the
backend's :class:`medseg_backend.io.Geometry` (spacing, origin, direction in LPS, as SimpleITK).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from medseg_backend.errors import InputError
from medseg_backend.io import Geometry

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def sitk_geometry(ijk_to_ras: np.ndarray) -> Geometry:
    """IJK-to-RAS 4x4 -> ``medseg_backend.io.Geometry`` (spacing, origin, direction in LPS, as SimpleITK)."""
    ijk_to_lps = LPS_FROM_RAS @ np.asarray(ijk_to_ras, dtype=float)
    lin = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    if np.any(spacing <= 0):
        raise InputError("The volume has a zero voxel size: fix its spacing (Volumes module) and run again.")
    return Geometry(tuple(spacing.tolist()), tuple(ijk_to_lps[:3, 3].tolist()), tuple((lin / spacing).ravel().tolist()))


def ijk_to_ras_from_sitk(spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float]) -> np.ndarray:
    """SimpleITK geometry (LPS) -> IJK-to-RAS 4x4."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3) * np.asarray(spacing, dtype=float)[None, :]
    m[:3, 3] = np.asarray(origin, dtype=float)
    return LPS_FROM_RAS @ m
