"""The test fixtures bundled in ``Testing/Data``: checked against ``Testing/Data/MANIFEST.sha256`` and unpacked.

Used by ``conftest.py`` (pytest fixtures) and by the benchmarks. Every file is hashed before its first use, so a
corrupt or half-checked-out fixture fails loudly instead of giving wrong numbers. The fixtures are rebuilt from the
project's shared data folder by ``Testing/Data/make_fixtures.py`` (which also rewrites the manifest); what each
one keeps and cuts is in the ``SOURCE.md`` beside it.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Dict, List

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "Data"
MANIFEST = DATA_DIR / "MANIFEST.sha256"


class FixtureError(RuntimeError):
    """A bundled fixture is missing, unlisted or does not match its recorded sha256."""


@lru_cache(maxsize=None)
def manifest() -> Dict[str, str]:
    if not MANIFEST.is_file():
        raise FixtureError(f"{MANIFEST} is missing: rebuild it with Testing/Data/make_fixtures.py")
    out = {}
    for line in MANIFEST.read_text(encoding="utf-8").splitlines():
        if line.strip():
            digest, rel = line.split(None, 1)
            out[rel.strip()] = digest
    return out


@lru_cache(maxsize=None)
def path(rel: str) -> Path:
    """``Testing/Data/<rel>`` after checking its sha256 against the manifest."""
    expected = manifest().get(rel)
    if expected is None:
        raise FixtureError(f"{rel} is not listed in {MANIFEST.name}: add it with Testing/Data/make_fixtures.py")
    p = DATA_DIR / rel
    if not p.is_file():
        raise FixtureError(f"fixture {p} is missing (listed in {MANIFEST.name}); check out the repository again")
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    if digest != expected:
        raise FixtureError(f"fixture {p} is corrupt: sha256 {digest}, expected {expected} (from {MANIFEST.name}); "
                           "check out the file again (git checkout -- Testing/Data) or rebuild the fixtures")
    return p


def verify_all() -> List[str]:
    """Check every file of the manifest; return their relative paths."""
    return [path(rel).relative_to(DATA_DIR).as_posix() for rel in manifest()]


def _unpack(bits: np.ndarray, shape) -> np.ndarray:
    return np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape)


def read_png(rel: str) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path(rel))))


def sam_med2d_image(name: str) -> Path:
    """One of the SAM-Med2D demo PNGs (8-bit RGB CT slices), e.g. ``amos_0006_90.png``."""
    return path(f"sam_med2d_demo/images/{name}")


def sam_med2d_mask(case: str) -> Path:
    """The binary 0/255 organ mask PNG of a 2-D case, e.g. ``amos_0006_90_liver_000``."""
    return path(f"sam_med2d_demo/masks/{case}.png")


def litemedsam_2d_cases() -> List[dict]:
    """The 30 official LiteMedSAM 2-D reference cases, sorted by name. Each dict has ``name``, ``image`` (H,W,3
    uint8, as fed), ``image_file``, ``box`` (x0,y0,x1,y1 inclusive, tight GT box), ``box256``, ``new_size``,
    ``gt`` (H,W 0/1), ``ref_mask`` (H,W 0/1), ``ref_logits_window`` (float32 logits of the reference in the window
    ``logits_window`` = (y0, x0, y1, x1) around the box, end exclusive), ``iou_pred`` and ``dice_vs_gt``."""
    d = np.load(path("litemedsam_reference/2d.npz"))
    images, cases = {}, []
    for name in (str(n) for n in d["cases"]):
        image_file = str(d[f"{name}/image_file"])
        if image_file not in images:
            images[image_file] = read_png(f"sam_med2d_demo/images/{image_file}")
        image = images[image_file]
        H, W = image.shape[:2]
        window = d[f"{name}/ref_logits_window"]
        y0, x0 = (int(v) for v in d[f"{name}/logits_window_origin"])
        cases.append({
            "name": name, "image": image, "image_file": image_file,
            "box": tuple(int(v) for v in d[f"{name}/box"]), "box256": d[f"{name}/box256"],
            "new_size": d[f"{name}/new_size"],
            "gt": (read_png(f"sam_med2d_demo/masks/{name}.png") > 0).astype(np.uint8),
            "ref_mask": _unpack(d[f"{name}/ref_mask"], (H, W)),
            "ref_logits_window": window, "logits_window": (y0, x0, y0 + window.shape[0], x0 + window.shape[1]),
            "iou_pred": float(d[f"{name}/iou_pred"]), "dice_vs_gt": float(d[f"{name}/dice_vs_gt"]),
        })
    return cases


def _case_3d(d, name: str) -> dict:
    out = {"volume_u8": d["volume/" + str(d[f"{name}/volume"])]}
    prefix = name + "/"
    for key in d.files:
        if not key.startswith(prefix) or key == prefix + "volume":
            continue
        field = key[len(prefix):]
        value = d[key]
        if field.endswith("_packed"):
            out[field[:-len("_packed")]] = _unpack(value, out["volume_u8"].shape)
        else:
            out[field] = value.item() if value.ndim == 0 and value.dtype.kind in "US" else value
    return out


def litemedsam_3d_cases() -> Dict[str, dict]:
    """The 8 official LiteMedSAM 3-D reference cases by name, each with the keys of the reference files:
    ``volume_u8`` (K,J,I uint8 after windowing, as fed), ``box3d`` ([x0,y0,z0,x1,y1,z1] voxel indices, inclusive),
    ``gt``, ``ref_mask``, ``spacing`` (x,y,z), ``modality``, ``name``, ``dice_vs_gt``, ``z_middle``,
    ``slice_order``, ``slice_box256``, ``slice_box_source``, ``slice_iou``, ``source``, ``normalisation``."""
    d = np.load(path("litemedsam_reference/3d.npz"))
    return {str(n): _case_3d(d, str(n)) for n in d["cases_3d"]}


def litemedsam_3d_multiobject() -> dict:
    """The official four-box run on ct_sm (liver, spleen, kidney_right, kidney_left as 1..4): ``volume_u8``,
    ``boxes3d``, ``object_names``, ``label_ids``, ``gt``, ``ref_mask``, ``spacing``, ``slice_box256``, ..."""
    d = np.load(path("litemedsam_reference/3d.npz"))
    return _case_3d(d, str(d["cases_3d_multiobject"][0]))


def universeg_state_path() -> Path:
    """UniverSeg v1 weights with random values in the official layout (the oracle's network)."""
    return path("universeg_reference/random_v1_state.pt")


def universeg_layout() -> Path:
    """The official v1 state dict's keys and shapes (JSON list of [key, shape])."""
    return path("universeg_reference/state_dict_v1.json")


def universeg_reference_io() -> Dict[str, np.ndarray]:
    """Inputs and float32 outputs of the released UniverSeg implementation with ``random_v1_state.pt`` for three
    shapes (prefixes ``""``, ``case2_``, ``case3_``: ``query``, ``support_images``, ``support_labels``,
    ``output``)."""
    return dict(np.load(path("universeg_reference/reference_io.npz")))
