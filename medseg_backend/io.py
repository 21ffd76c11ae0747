"""Reading images and writing label maps, with their geometry, through SimpleITK.

Arrays are in SimpleITK order: a volume is ``(K, J, I)`` = (slice z, row y, column x); a 2-D image is
``(H, W)`` or ``(H, W, 3)`` for RGB. Voxel boxes everywhere in the backend use x = column, y = row,
z = slice, inclusive. Geometry (spacing, origin, direction) travels in :class:`Geometry` and is written back
unchanged, so an output label map overlays its input exactly.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InputError, MedSegWarning
from .errors import clip_text as _clip_text

IMAGE_2D_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOLUME_EXTENSIONS = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
LABEL_EXTENSIONS = (".nrrd", ".nii", ".nii.gz", ".mha", ".png", ".tif", ".tiff")


@dataclass(frozen=True)
class Geometry:
    """Physical placement of an image grid (SimpleITK / LPS conventions)."""

    spacing: Tuple[float, ...]
    origin: Tuple[float, ...]
    direction: Tuple[float, ...]  # row-major, dim x dim
    #: The NIfTI-1 file's own transform fields (:class:`NiftiTransforms`) when the grid was read from one: written
    #: back into NIfTI outputs on this grid, so qform and sform (and their codes) stay the input's exactly.
    nifti: Optional["NiftiTransforms"] = field(default=None, compare=False, repr=False)

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


def check_same_grid(image: "LoadedImage", label: "LoadedImage", what: str) -> None:
    """Refuse a label map whose grid has the image's shape but another placement (spacing, origin or direction):
    its voxels would be taken for the image's voxels at other places. 2-D picture files (PNG, JPEG, BMP, TIFF)
    carry no reliable geometry and are not compared."""
    if image.array.shape[:3] != label.array.shape[:3] or \
            _has_ext(image.path, PICTURE_EXTENSIONS) or _has_ext(label.path, PICTURE_EXTENSIONS):
        return
    differ = image.geometry.mismatch(label.geometry)
    if differ:
        raise InputError(f"{what}: {label.path} has the shape of {image.path} but another {differ} (image: "
                         f"{image.geometry.describe()}; label: {label.geometry.describe()}): resample the label onto "
                         "its image's grid (or save both from one scene) and try again.")


#: 2-D picture formats: no spacing, origin or direction in the file (TIFF: at most a print resolution).
PICTURE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class LoadedImage:
    array: np.ndarray
    geometry: Geometry
    path: str
    is_rgb: bool

    @property
    def is_volume(self) -> bool:
        return self.array.ndim == 3 and not self.is_rgb


_SITK_QUIET = False


def _sitk():
    """SimpleITK, imported lazily (keeps `import medseg_backend` light), with ITK's global warning display off:
    raw ITK warnings on stderr mean nothing to a user; the checks here turn the relevant cases into messages."""
    global _SITK_QUIET
    import SimpleITK as sitk

    if not _SITK_QUIET:
        try:
            sitk.ProcessObject.SetGlobalWarningDisplay(False)
        except AttributeError:  # pragma: no cover - very old SimpleITK
            sitk.ProcessObject_SetGlobalWarningDisplay(False)
        _SITK_QUIET = True
    return sitk


def _has_ext(path: str, exts: Sequence[str]) -> bool:
    low = path.lower()
    return any(low.endswith(e) for e in exts)


# ------------------------------------------------------------------------------------ completeness checks --
# SimpleITK reads a NIfTI file whose voxel data stop early without complaint (the missing voxels become 0),
# reads NaN / Inf voxels of a float NIfTI file as 0, and reports a short MetaImage as "No such file or
# directory". These checks compare the data length with what the header announces, and count the non-finite
# values in a float NIfTI file's raw voxel block, before SimpleITK reads the file.
def _incomplete(path: str, announced: int, present: int) -> InputError:
    return InputError(f"{path} is truncated: its header announces {announced} bytes of voxel data but only "
                      f"{max(present, 0)} are there; copy or export the file again (the transfer was incomplete).")


def _nifti_expected(header: bytes) -> Optional[Tuple[int, int, Optional[np.dtype]]]:
    """(vox_offset, data bytes, float dtype or None) from a NIfTI-1/-2 single-file header, or None when it is not
    one we can size. The dtype (with the file's byte order) is given for float32 / float64 voxels only."""
    import struct

    if len(header) < 348:
        return None
    for end in ("<", ">"):
        size = struct.unpack(end + "i", header[:4])[0]
        if size == 348:
            if header[344:347] != b"n+1":
                return None
            dims = struct.unpack(end + "8h", header[40:56])
            datatype = struct.unpack(end + "h", header[70:72])[0]
            bitpix = struct.unpack(end + "h", header[72:74])[0]
            offset = int(struct.unpack(end + "f", header[108:112])[0])
            break
        if size == 540 and len(header) >= 540:
            if header[4:7] != b"n+2":
                return None
            datatype = struct.unpack(end + "h", header[12:14])[0]
            bitpix = struct.unpack(end + "h", header[14:16])[0]
            dims = struct.unpack(end + "8q", header[16:80])
            offset = struct.unpack(end + "q", header[168:176])[0]
            break
    else:
        return None
    nd = dims[0]
    if not 1 <= nd <= 7 or bitpix <= 0 or bitpix % 8 or any(d < 0 for d in dims[1:nd + 1]):
        return None
    count = 1
    for d in dims[1:nd + 1]:
        count *= int(d)
    floats = {(16, 32): "f4", (64, 64): "f8"}.get((datatype, bitpix))
    return max(offset, size), count * (bitpix // 8), np.dtype(end + floats) if floats else None


class _NonFinite:
    """Counts NaN and Inf voxels in the raw float voxel block of a file fed to it in pieces (any split), in
    bounded memory: SimpleITK's NIfTI reader turns them into 0, so its array cannot show them."""

    def __init__(self, offset: int, nbytes: int, dtype: np.dtype) -> None:
        self.offset, self.end, self.dtype = offset, offset + nbytes, dtype
        self.pos = 0              # bytes of the file seen so far
        self.rest = b""           # bytes of an element split between two pieces
        self.nan = self.inf = self.seen = 0

    def feed(self, block: bytes) -> None:
        lo, hi = max(self.offset - self.pos, 0), min(self.end - self.pos, len(block))
        self.pos += len(block)
        if hi <= lo:
            return
        data = self.rest + block[lo:hi]
        usable = len(data) - len(data) % self.dtype.itemsize
        self.rest = data[usable:]
        values = np.frombuffer(data[:usable], dtype=self.dtype)
        self.seen += values.size
        self.nan += int(np.count_nonzero(np.isnan(values)))
        self.inf += int(np.count_nonzero(np.isinf(values)))

    def check(self, path: str) -> None:
        bad = self.nan + self.inf
        if not bad:
            return
        kinds = " and ".join(f"{n} {w}" for n, w in ((self.nan, "NaN"), (self.inf, "Inf")) if n)
        if bad == self.seen:
            raise InputError(f"{path} holds no numbers: every voxel is NaN/Inf ({kinds}); export the image again "
                             "(the conversion that wrote it failed).")
        raise InputError(f"{path} has {bad} NaN/Inf voxels ({kinds}): replace them (e.g. with the background "
                         "value) before segmenting.")


def _check_nifti(path: str) -> Optional[bytes]:
    """Refuse a truncated NIfTI file or one with NaN / Inf voxels; returns its header (None when unreadable)."""
    scan: Optional[_NonFinite] = None
    if path.lower().endswith(".gz"):
        import gzip
        import zlib

        try:
            with gzip.open(path, "rb") as f:
                header = f.read(540)
                sized = _nifti_expected(header)
                if sized is not None and sized[2] is not None:
                    scan = _NonFinite(*sized)
                    scan.feed(header)
                total = len(header)
                while True:
                    block = f.read(1 << 22)
                    if not block:
                        break
                    total += len(block)
                    if scan is not None:
                        scan.feed(block)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise InputError(f"{path} is truncated or damaged ({_clip_text(str(exc) or type(exc).__name__, 80)}): "
                             "copy or export the file again (the transfer was incomplete).") from None
        except OSError:
            return None  # unreadable: SimpleITK says why
    else:
        try:
            with open(path, "rb") as f:
                header = f.read(540)
            total = os.path.getsize(path)
        except OSError:
            return None
    sized = _nifti_expected(header)
    if sized is None:
        return header
    offset, nbytes, floats = sized
    if total < offset + nbytes:
        raise _incomplete(path, nbytes, total - offset)
    if floats is not None and scan is None:
        scan = _NonFinite(offset, nbytes, floats)
        try:
            with open(path, "rb") as f:
                while True:
                    block = f.read(1 << 22)
                    if not block:
                        break
                    scan.feed(block)
        except OSError:
            return None
    if scan is not None:
        scan.check(path)
    return header


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


def _check_qform_sform(path: str, xf: NiftiTransforms, img) -> None:
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


def _write_nifti_transforms(tmp: str, xf: NiftiTransforms) -> None:
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


_MET_SIZES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


def _check_metaimage(path: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return
    fields, data_start = {}, None
    pos = 0
    while pos < len(head):
        nl = head.find(b"\n", pos)
        if nl < 0:
            break
        line = head[pos:nl].decode("latin-1").strip()
        pos = nl + 1
        if "=" in line:
            key, value = (t.strip() for t in line.split("=", 1))
            fields[key.lower()] = value
            if key.lower() == "elementdatafile":
                data_start = pos
                break
    if data_start is None:
        return
    if fields.get("compresseddata", "false").lower() == "true" or "headersize" in fields:
        return
    try:
        dims = [int(v) for v in fields.get("dimsize", "").split()]
        comps = int(fields.get("elementnumberofchannels", "1"))
    except ValueError:
        return
    esize = _MET_SIZES.get(fields.get("elementtype", "").upper())
    if not dims or esize is None:
        return
    nbytes = esize * comps
    for d in dims:
        nbytes *= d
    datafile = fields.get("elementdatafile", "")
    if datafile.upper() == "LOCAL":
        present = os.path.getsize(path) - data_start
    elif datafile.upper().startswith("LIST") or "%" in datafile:
        return
    else:
        other = os.path.join(os.path.dirname(path), datafile)
        if not os.path.isfile(other):
            raise InputError(f"{path}: its voxel data file '{datafile}' is missing: keep the .mhd and its data file "
                             "together in one folder.")
        present = os.path.getsize(other)
    if present < nbytes:
        raise _incomplete(path, nbytes, present)


def _check_complete(path: str) -> Optional[bytes]:
    """Refuse incomplete (or, NIfTI, non-finite) files before SimpleITK reads them; a NIfTI file's header."""
    low = path.lower()
    if low.endswith(".nii") or low.endswith(".nii.gz"):
        return _check_nifti(path)
    if low.endswith(".mha") or low.endswith(".mhd"):
        _check_metaimage(path)
    return None


#: At most this many series are listed when a DICOM folder holds several.
SERIES_LISTED = 20


def _series_description(sitk, first_file: str) -> str:
    """The Series Description (0008,103E) of a DICOM file, '' when absent or unreadable."""
    try:
        r = sitk.ImageFileReader()
        r.SetFileName(first_file)
        r.ReadImageInformation()
        return r.GetMetaData("0008|103e").strip() if r.HasMetaDataKey("0008|103e") else ""
    except RuntimeError:
        return ""


#: ``read_image(series=NO_SERIES_CHOICE)``: the caller offers no way to pick a series (the error says so).
NO_SERIES_CHOICE = "\0no-choice"


def _pick_series(sitk, reader, folder: str, series: Sequence[str], choice: Optional[str]) -> List[str]:
    """The files of the one series to read from a DICOM folder: the only one, or ``choice`` (a UID, or its
    number 1..N in the listed order). Several series and no choice: :class:`InputError` listing them."""
    series = sorted(series)
    can_pick = choice != NO_SERIES_CHOICE
    choice = choice if can_pick else None
    if choice is not None:
        text = str(choice).strip()
        uid = text if text in series else None
        if uid is None and text.isdigit() and 1 <= int(text) <= len(series):
            uid = series[int(text) - 1]
        if uid is None:
            raise InputError(f"Series '{_clip_text(text, 80)}' is not in DICOM folder {folder} (it holds "
                             f"{len(series)} series: {_clip_text(', '.join(series), 300)}): give one of those "
                             f"UIDs or a number 1..{len(series)}.")
        return list(reader.GetGDCMSeriesFileNames(folder, uid))
    if len(series) == 1:
        return list(reader.GetGDCMSeriesFileNames(folder, series[0]))
    listed = []
    for n, uid in enumerate(series[:SERIES_LISTED], start=1):
        files = reader.GetGDCMSeriesFileNames(folder, uid)
        desc = _series_description(sitk, files[0]) if files else ""
        listed.append(f"{n}) {uid}" + (f" '{_clip_text(desc, 60)}'" if desc else "") + f", {len(files)} slice(s)")
    more = f"; and {len(series) - SERIES_LISTED} more" if len(series) > SERIES_LISTED else ""
    pick = "pick one with --series N or --series UID (or give a folder that holds one series)" if can_pick else \
        "give a folder that holds one series (copy that series' files into a folder of their own)"
    raise InputError(f"DICOM folder {folder} holds {len(series)} series: {'; '.join(listed)}{more}; {pick}.")


def read_image(path: str, *, allow_rgb_volume: bool = False, label: bool = False,
               series: Optional[str] = NO_SERIES_CHOICE) -> LoadedImage:
    """Read a 2-D image or a 3-D volume (file or DICOM folder). Raises :class:`InputError` on any problem.
    ``label=True``: a label map, which may be constant (an example without the structure is all 0).
    ``series``: in a DICOM folder holding several series, the one to read (its UID or its number as listed in
    the error that names them); a folder with several series and no ``series`` is refused (saying ``--series``
    picks one when the caller passes ``series``, even None)."""
    sitk = _sitk()
    p = Path(path)
    if not p.exists():
        raise InputError(f"Image not found: {path}: check the path (volume file, 2-D image or DICOM folder).")
    if series not in (None, NO_SERIES_CHOICE) and not p.is_dir():
        raise InputError(f"--series picks a series of a DICOM folder, but {path} is a file: drop --series or give "
                         "the folder.")
    header = None
    try:
        if p.is_dir():
            reader = sitk.ImageSeriesReader()
            found = reader.GetGDCMSeriesIDs(str(p))
            if not found:
                raise InputError(f"No DICOM series in folder {path}: point to a folder of .dcm files of one "
                                 "series, or to a volume file.")
            reader.SetFileNames(_pick_series(sitk, reader, str(path), found, series))
            img = reader.Execute()
        else:
            if not os.access(str(p), os.R_OK):
                raise InputError(f"Cannot read {path}: permission denied; make the file readable (or copy it) and "
                                 "try again.")
            header = _check_complete(str(p))
            img = sitk.ReadImage(str(p))
    except InputError:
        raise
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[-1] if first else "unknown reason"
        if "No such file or directory" in detail or "Could not open" in detail or "Can't open" in detail:
            detail = "the file is incomplete or damaged"
        raise InputError(f"Cannot read {path} as an image ({_clip_text(detail, 120)}): use PNG, JPEG, TIFF, NRRD, "
                         "NIfTI, MHA or a DICOM folder, and check that the file is complete.") from None
    ncomp = img.GetNumberOfComponentsPerPixel()
    dim = img.GetDimension()
    array = _array_of(sitk, img)
    geometry = Geometry.from_sitk(img)
    nifti = NiftiTransforms.parse(header) if header else None
    if nifti is not None and nifti.dims == tuple(img.GetSize()):
        _check_qform_sform(str(path), nifti, img)
        geometry = Geometry(geometry.spacing, geometry.origin, geometry.direction, nifti)
    if dim == 3 and array.ndim == 3 and array.shape[0] == 1 and ncomp == 1 and _has_ext(path, IMAGE_2D_EXTENSIONS):
        array = array[0]
        geometry = geometry.slice2d(0)
        dim = 2
    is_rgb = False
    if ncomp > 1:
        if ncomp == 4 and dim == 2:  # RGBA: drop alpha
            array = array[..., :3]
            ncomp = 3
        if ncomp != 3:
            raise InputError(f"{path} has {ncomp} components per pixel: give a grey or RGB image.")
        if dim == 3:
            if not allow_rgb_volume:
                raise InputError(f"{path} is an RGB volume: convert it to a grey-level volume first "
                                 "(e.g. luminance) or give one RGB slice as a 2-D image.")
        is_rgb = True
    if dim > 3 or array.ndim > (4 if is_rgb else 3):
        raise InputError(f"{path} is a {dim}-D image: give a 2-D image or a 3-D volume "
                         "(extract one time point / channel first).")
    loaded = LoadedImage(array=array, geometry=geometry, path=str(path), is_rgb=is_rgb)
    validate_array(loaded.array, name=str(path), allow_constant=label)
    return loaded


class _ImageBuffer:
    """Lends a SimpleITK image's pixel buffer to numpy and keeps the image alive as long as an array uses it."""

    def __init__(self, image, view: np.ndarray) -> None:
        self.image = image
        self.__array_interface__ = dict(view.__array_interface__, data=(view.__array_interface__["data"][0], False))


def _array_of(sitk, img) -> np.ndarray:
    """The image's voxels as a writable numpy array over SimpleITK's own buffer (no copy: a volume costs its size
    once, not twice, while it is read)."""
    view = sitk.GetArrayViewFromImage(img)
    if not view.flags.c_contiguous or view.size == 0:
        return sitk.GetArrayFromImage(img)
    return np.asarray(_ImageBuffer(img, view))


def validate_array(array: np.ndarray, name: str = "image", *, allow_constant: bool = False) -> None:
    """Reject arrays no model can use: empty, non-finite or constant (unless ``allow_constant``: labels)."""
    if array.ndim > 4 or array.ndim < 2:
        raise InputError(f"{name} has {array.ndim} dimensions: give a 2-D image or a 3-D volume.")
    if array.size == 0 or 0 in array.shape:
        raise InputError(f"{name} is empty (shape {tuple(array.shape)}): check the file; it holds no voxels.")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad == array.size:
            raise InputError(f"{name} holds no numbers: every voxel is NaN/Inf ({bad}); export the image again "
                             "(the conversion that wrote it failed).")
        raise InputError(f"{name} has {bad} NaN/Inf voxels: replace them (e.g. with the background value) "
                         "before segmenting.")
    if array.dtype.kind not in "biuf":
        raise InputError(f"{name} has pixel type {array.dtype}: give integer or floating-point intensities.")
    if not allow_constant and array.dtype.kind != "b" and np.min(array) == np.max(array):
        raise InputError(f"{name} is constant (every voxel = {np.min(array).item()!r}): there is nothing to segment; "
                         "check that the right image was loaded.")


def array_to_sitk(array: np.ndarray, geometry: Optional[Geometry], *, is_vector: bool = False):
    sitk = _sitk()
    img = sitk.GetImageFromArray(array, isVector=is_vector)
    if geometry is not None and geometry.dimension == img.GetDimension():
        geometry.apply_to(img)
    return img


def _suffix(path: str) -> str:
    low = path.lower()
    if low.endswith(".nii.gz"):
        return ".nii.gz"
    return os.path.splitext(low)[1]


IMAGE_2D_OUTPUTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
PROBABILITY_EXTENSIONS = (".nrrd", ".nii", ".nii.gz", ".mha", ".tif", ".tiff")
OVERLAY_EXTENSIONS = (".png",)


# ------------------------------------------------------------------------------------------- output paths --
def current_umask() -> int:
    """The process umask (read without changing it where the platform allows)."""
    try:
        with open("/proc/self/status", "r", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_public(path: Union[str, os.PathLike], folder: bool = False) -> None:
    """Give a file made by :mod:`tempfile` (0600 / 0700) the permissions a plain ``open`` / ``mkdir`` would
    have given it: 0666 / 0777 minus the umask. Best effort (Windows ignores most bits)."""
    try:
        os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())
    except OSError:
        pass


def same_path(a: Union[str, os.PathLike], b: Union[str, os.PathLike]) -> bool:
    """True when ``a`` and ``b`` name one file: the same inode when both exist (symlinks, hard links, other
    spellings), else the same resolved path."""
    a, b = os.fspath(a), os.fspath(b)
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.normcase(os.path.realpath(os.path.abspath(a))) == \
        os.path.normcase(os.path.realpath(os.path.abspath(b)))


def check_writable_folder(folder: Union[str, os.PathLike], what: str = "output") -> None:
    """Raise :class:`InputError` unless ``folder`` exists, is a folder and accepts new files."""
    folder = os.fspath(folder) or "."
    if not os.path.exists(folder):
        raise InputError(f"The {what} folder {folder} does not exist: create it or choose another path.")
    if not os.path.isdir(folder):
        raise InputError(f"The {what} folder {folder} is not a folder (a file has that name): choose another path.")
    ok = os.access(folder, os.W_OK | os.X_OK)
    if ok:
        try:  # the real test (ACLs, read-only mounts, network shares): create and remove a probe file
            fd, probe = tempfile.mkstemp(prefix=".medseg-probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError:
            ok = False
    if not ok:
        raise InputError(f"The {what} folder {folder} is not writable: choose a folder you can write to (or fix its "
                         "permissions).")


def check_output_path(path: str, *, allowed: Sequence[str] = LABEL_EXTENSIONS, what: str = "output") -> None:
    """Raise :class:`InputError` unless ``path`` can take a new ``what`` file: known extension, not a folder,
    in an existing writable folder. Called before any work."""
    if not _has_ext(path, allowed):
        raise InputError(f"Cannot tell the {what} format from '{path}': end the name with one of "
                         f"{', '.join(allowed)}.")
    if os.path.isdir(path):
        raise InputError(f"The {what} path {path} is a folder: give a file name inside it, e.g. "
                         f"{os.path.join(path, 'segmentation' + allowed[0])}.")
    check_writable_folder(os.path.dirname(path) or ".", what)


def check_outputs(outputs: Sequence[Tuple[Optional[str], str, Sequence[str]]],
                  inputs: Sequence[Optional[Union[str, os.PathLike]]] = ()) -> None:
    """Check every output before any work: each ``(path, what, allowed extensions)`` with a path (see
    :func:`check_output_path`), no output equal to an input file (which it would replace) or to another output."""
    given = [(p, w, a) for p, w, a in outputs if p]
    for path, what, allowed in given:
        if not _has_ext(path, allowed):
            raise InputError(f"Cannot tell the {what} format from '{path}': end the name with one of "
                             f"{', '.join(allowed)}.")
    for path, what, _ in given:
        for inp in inputs:
            if inp and same_path(path, inp):
                raise InputError(f"The {what} path {path} is the input file {os.fspath(inp)}: writing there would "
                                 "replace your input; choose another file name.")
    for i, (path, what, _) in enumerate(given):
        for other, other_what, _ in given[:i]:
            if same_path(path, other):
                raise InputError(f"The {other_what} and the {what} would both be written to {path}: give each "
                                 "output its own file name.")
    for path, what, allowed in given:
        check_output_path(path, allowed=allowed, what=what)


def check_volume_format(path: Optional[str], shape: Sequence[int], *, is_volume: bool, what: str = "output") -> None:
    """A volume with more than one slice cannot go into a 2-D picture format (it would keep one slice only)."""
    if path and is_volume and len(shape) == 3 and shape[0] > 1 and _has_ext(path, IMAGE_2D_OUTPUTS):
        raise InputError(f"The {what} {path} is a 2-D picture format but the result is a volume of {shape[0]} "
                         f"slices: write .nrrd or .nii.gz (or segment one slice with --slice).")


def write_images(items: Sequence[Tuple]) -> None:
    """Write SimpleITK images (or text, for a ``str``) ``[(path, image), ...]`` all or nothing: each into a
    temporary file in its target folder; only when every one was written are they moved into place
    (:func:`os.replace`). On any failure (or an interrupt) no new output and no temporary file remains.

    An item ``(path, image, geometry)`` whose geometry came from a NIfTI file (``geometry.nifti``) and goes to a
    NIfTI file on the same grid gets that file's qform, sform and codes exactly (SimpleITK would write one
    transform, as both, from the image's direction)."""
    sitk = _sitk()
    temps: List[Tuple[str, str]] = []
    placed: List[str] = []
    current = ""
    try:
        for item in items:
            path, img = item[0], item[1]
            xf = item[2].nifti if len(item) > 2 and item[2] is not None else None
            current = path
            folder = os.path.dirname(os.path.abspath(path))
            fd, tmp = tempfile.mkstemp(prefix=".medseg-", suffix=_suffix(path), dir=folder)
            os.close(fd)
            temps.append((tmp, path))
            if isinstance(img, str):
                with open(tmp, "w", encoding="utf-8") as fh:
                    fh.write(img)
            else:
                sitk.WriteImage(img, tmp, True)
                if xf is not None and _suffix(path) in (".nii", ".nii.gz"):
                    _write_nifti_transforms(tmp, xf)
            make_public(tmp)
        for tmp, path in temps:
            current = path
            os.replace(tmp, path)
            placed.append(path)
        temps = []
    except RuntimeError as exc:
        raise InputError(f"Cannot write {current} ({_clip_text(str(exc).strip().splitlines()[-1], 100)}): choose a "
                         ".nrrd, .nii.gz, .mha, .png or .tif output path in a writable folder; nothing was "
                         "written.") from None
    except OSError as exc:
        raise InputError(f"Cannot write {current} ({exc.strerror or type(exc).__name__}): choose a writable folder "
                         "with free space; nothing was written.") from None
    finally:
        if temps:  # failed or interrupted: remove what this call created
            for tmp, _ in temps:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            for path in placed:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def label_image(labels: np.ndarray, geometry: Optional[Geometry]):
    """A label map (0 = background) as a SimpleITK image with ``geometry`` (uint8, or uint16 above 255)."""
    arr = np.ascontiguousarray(labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16, copy=False))
    return array_to_sitk(arr, geometry)


def float_image(data: np.ndarray, geometry: Optional[Geometry]):
    return array_to_sitk(np.ascontiguousarray(data.astype(np.float32, copy=False)), geometry)


def rgb_image(rgb: np.ndarray):
    return array_to_sitk(np.ascontiguousarray(rgb.astype(np.uint8)), None, is_vector=True)


def write_label(path: str, labels: np.ndarray, geometry: Optional[Geometry]) -> None:
    """Write a label map (0 = background) with ``geometry``; PNG/TIFF get uint8 values as they are."""
    check_output_path(path)
    check_volume_format(path, labels.shape, is_volume=labels.ndim == 3)
    write_images([(path, label_image(labels, geometry), geometry)])


def write_rgb_png(path: str, rgb: np.ndarray) -> None:
    check_output_path(path, allowed=OVERLAY_EXTENSIONS, what="overlay")
    write_images([(path, rgb_image(rgb))])


def to_grey(array: np.ndarray) -> np.ndarray:
    """RGB (…, 3) -> grey with ITU-R 601 luma weights (used for UniverSeg examples)."""
    rgb = array.astype(np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
