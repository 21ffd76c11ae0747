"""A NIfTI-1 file's own transform fields (qform, sform and their codes): read from the input, checked against
each other, and written back into NIfTI outputs on the same grid."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ..errors import MedSegWarning


@dataclass(frozen=True)
class NiftiTransforms:
    """The placement fields of a NIfTI-1 header: pixdim[0..3] (qfac, voxel sizes), qform_code, sform_code,
    quatern_b/c/d, qoffset_x/y/z and srow_x/y/z, as numbers (any byte order), plus the grid size."""

    pixdim: Tuple[float, float, float, float]
    codes: Tuple[int, int]                      # qform_code, sform_code
    quatern: Tuple[float, ...]                  # b, c, d, offset x, y, z
    srow: Tuple[float, ...]                     # 12 values, row-major 3 x 4
    dims: Tuple[int, ...]                       # voxels along i, j, k

    @staticmethod
    def parse(header: bytes) -> Optional["NiftiTransforms"]:
        """From a NIfTI-1 header (single file or pair); None for anything else."""
        import struct

        if len(header) < 348:
            return None
        for end in ("<", ">"):
            if struct.unpack(end + "i", header[:4])[0] == 348:
                break
        else:
            return None
        if header[344:347] not in (b"n+1", b"ni1"):
            return None
        dims = struct.unpack(end + "8h", header[40:56])
        if not 1 <= dims[0] <= 7:
            return None
        return NiftiTransforms(struct.unpack(end + "4f", header[76:92]), struct.unpack(end + "2h", header[252:256]),
                               struct.unpack(end + "6f", header[256:280]), struct.unpack(end + "12f", header[280:328]),
                               tuple(int(d) for d in dims[1:min(dims[0], 3) + 1]))

    def qform(self) -> np.ndarray:
        """IJK -> RAS 4x4 of the qform (the NIfTI-1 standard's method 2)."""
        b, c, d = self.quatern[:3]
        a = float(np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d))))
        r = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                      [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                      [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
        qfac = -1.0 if self.pixdim[0] < 0 else 1.0
        m = np.eye(4)
        m[:3, :3] = r @ np.diag([self.pixdim[1], self.pixdim[2], qfac * self.pixdim[3]])
        m[:3, 3] = self.quatern[3:]
        return m

    def sform(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :] = np.asarray(self.srow, dtype=float).reshape(3, 4)
        return m

    def corners(self) -> np.ndarray:
        """The grid's corner voxel indices (homogeneous, 4 x 8)."""
        size = list(self.dims) + [1] * (3 - len(self.dims))
        pts = [[i, j, k, 1.0] for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)]
        return np.asarray(pts, dtype=float).T

    def patch(self, header: bytearray) -> bool:
        """Write these fields into the NIfTI-1 ``header`` (in its own byte order) of a file on the same grid;
        False when it is not such a header."""
        import struct

        other = NiftiTransforms.parse(bytes(header[:348]))
        if other is None or other.dims != self.dims:
            return False
        end = "<" if struct.unpack("<i", bytes(header[:4]))[0] == 348 else ">"
        struct.pack_into(end + "4f", header, 76, *self.pixdim)
        struct.pack_into(end + "2h", header, 252, *self.codes)
        struct.pack_into(end + "6f", header, 256, *self.quatern)
        struct.pack_into(end + "12f", header, 280, *self.srow)
        return True


def check_qform_sform(path: str, xf: NiftiTransforms, img) -> None:
    """Warn when a NIfTI file's qform and sform (both set) place the grid more than a tenth of a voxel apart:
    tools that read the other one put the image elsewhere. The outputs keep both (see :class:`Geometry`)."""
    if xf.codes[0] <= 0 or xf.codes[1] <= 0 or img.GetDimension() != 3:
        return
    corners = xf.corners()
    q, s = xf.qform() @ corners, xf.sform() @ corners
    apart = float(np.max(np.linalg.norm((q - s)[:3], axis=0)))
    spacing = np.asarray(img.GetSpacing(), dtype=float)
    if not np.isfinite(apart) or apart <= 0.1 * float(spacing.min()):
        return
    d = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    read = np.eye(4)
    read[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ d @ np.diag(spacing)        # SimpleITK's LPS -> RAS
    read[:3, 3] = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(img.GetOrigin(), dtype=float)
    r = read @ corners
    used = "sform" if np.max(np.abs(r - s)) < np.max(np.abs(r - q)) else "qform"
    warnings.warn(f"{path}: its qform and sform disagree, placing the image up to {apart:.3g} mm apart (qform code "
                  f"{xf.codes[0]}, sform code {xf.codes[1]}); the {used} is used (as ITK-based viewers such as Slicer "
                  "read it) and NIfTI outputs keep both of the input's transforms, so they overlay it in any viewer; "
                  "if the image itself looks misplaced, make the two agree (e.g. fslorient -copysform2qform).",
                  MedSegWarning, stacklevel=3)


def write_nifti_transforms(tmp: str, xf: NiftiTransforms) -> None:
    """Put the input's NIfTI transform fields into the header of the NIfTI file ``tmp`` just written (.nii or
    .nii.gz) on the same grid."""
    if tmp.lower().endswith(".gz"):
        import gzip

        with gzip.open(tmp, "rb") as f:
            data = bytearray(f.read())
        if xf.patch(data):
            with gzip.open(tmp, "wb", compresslevel=6) as f:
                f.write(data)
        return
    with open(tmp, "r+b") as f:
        header = bytearray(f.read(348))
        if xf.patch(header):
            f.seek(0)
            f.write(header)
