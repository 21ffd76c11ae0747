"""Where an image grid lies in space (:class:`Geometry`: spacing, origin, direction, and a NIfTI file's own
transforms), written back unchanged so an output overlays its input exactly."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

from .nifti import NiftiTransforms


@dataclass(frozen=True)
class Geometry:
    """Physical placement of an image grid (SimpleITK / LPS conventions)."""

    spacing: Tuple[float, ...]
    origin: Tuple[float, ...]
    direction: Tuple[float, ...]  # row-major, dim x dim
    #: The NIfTI-1 file's own transform fields (:class:`NiftiTransforms`) when the grid was read from one: written
    #: back into NIfTI outputs on this grid, so qform and sform (and their codes) stay the input's exactly.
    nifti: Optional[NiftiTransforms] = field(default=None, compare=False, repr=False)

    @property
    def dimension(self) -> int:
        return len(self.spacing)

    @staticmethod
    def identity(dimension: int) -> "Geometry":
        return Geometry((1.0,) * dimension, (0.0,) * dimension,
                        tuple(np.eye(dimension).ravel().tolist()))

    @staticmethod
    def from_sitk(img) -> "Geometry":
        return Geometry(tuple(img.GetSpacing()), tuple(img.GetOrigin()), tuple(img.GetDirection()))

    def apply_to(self, img) -> None:
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)

    def slice2d(self, k: int) -> "Geometry":
        """Geometry of slice ``k`` of a 3-D grid as a 2-D image (in-plane axes kept)."""
        if self.dimension != 3:
            return self
        d = np.asarray(self.direction).reshape(3, 3)
        origin = np.asarray(self.origin) + d[:, 2] * self.spacing[2] * k
        return Geometry(self.spacing[:2], tuple(origin[:2].tolist()), tuple(d[:2, :2].ravel().tolist()))

    def plane(self, array_axis: int, k: int) -> "Geometry":
        """Geometry of the 2-D plane ``k`` along array axis ``array_axis`` (0 = K, 1 = J, 2 = I) of a 3-D grid,
        for 2-D picture outputs: in-plane spacing, the plane's origin, the in-plane part of the direction (the
        identity when that part is not a rotation, e.g. a coronal plane of an oblique volume)."""
        if self.dimension != 3:
            return self
        if array_axis == 0:
            g = self.slice2d(k)
        else:
            d = np.asarray(self.direction).reshape(3, 3)
            normal = 2 - array_axis
            keep = [a for a in range(3) if a != normal]
            origin = np.asarray(self.origin) + d[:, normal] * self.spacing[normal] * k
            g = Geometry(tuple(self.spacing[a] for a in keep), tuple(origin[keep].tolist()),
                         tuple(d[np.ix_(keep, keep)].ravel().tolist()))
        m = np.asarray(g.direction).reshape(2, 2)
        if not np.allclose(m @ m.T, np.eye(2), atol=1e-6):
            g = Geometry(g.spacing, g.origin, (1.0, 0.0, 0.0, 1.0))
        return g


    def describe(self) -> str:
        """Spacing, origin and direction in a few words (for messages that name two geometries)."""
        def nums(values, fmt="{:.4g}"):
            return "(" + ", ".join(fmt.format(0.0 if abs(v) < 5e-13 else v) for v in values) + ")"
        return (f"spacing {nums(self.spacing)}, origin {nums(self.origin)}, direction "
                f"{nums(self.direction, '{:.3g}')}")

    def mismatch(self, other: "Geometry") -> Optional[str]:
        """None when ``other`` places the same grid (to 1e-4 of a spacing, 1e-2 of a voxel in origin, 1e-4 in
        direction: the precision of NIfTI's float32 header), else which of spacing / origin / direction differ."""
        if self.dimension != other.dimension:
            return "dimension"
        sp, osp = np.asarray(self.spacing, float), np.asarray(other.spacing, float)
        differ = []
        if not np.allclose(sp, osp, rtol=1e-4, atol=0):
            differ.append("spacing")
        if np.any(np.abs(np.asarray(self.origin) - np.asarray(other.origin)) > 1e-2 * np.minimum(sp, osp)):
            differ.append("origin")
        if not np.allclose(self.direction, other.direction, rtol=0, atol=1e-4):
            differ.append("direction")
        return " and ".join(differ) or None
