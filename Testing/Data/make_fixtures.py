"""Rebuild the test fixtures in ``Testing/Data`` from the project's shared data folder.

    python Testing/Data/make_fixtures.py --shared DATA_FOLDER

A developer tool, never run by the tests: it is the only code in the repository that reads the shared folder
(given with ``--shared``; it holds the full data sets and the official-pipeline reference outputs). There is no
default: nothing in the repository points at a folder outside the checkout.
It writes compact subsets (what each one keeps and cuts is in the ``SOURCE.md`` beside it), checks that every
transformation is lossless where the tests need it to be, and rewrites ``MANIFEST.sha256``, which the test suite
checks before it uses any fixture. The ``.npz`` files are written byte-reproducibly (fixed zip timestamps), so a
rebuild from the same sources gives the same hashes.

Needs numpy and SimpleITK (the test environment has both).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# 2-D reference logits are kept in a window around each case's box (the region where the mask boundary is
# decided), not over the whole image: the full float32 logits of the 30 cases would be ~9.5 MB.
LOGIT_MARGIN = 32

# the shared TotalSegmentator `ct` is 112 slices; `ct_sm` is its slices 82..111 (identical voxels). The atlas
# fixture keeps slices 70..111: all of ct_sm plus 12 slices above it.
ATLAS_SLICES = (70, 112)

# (folder, file) -> crop as SimpleITK index (x, y, z) and size (x, y, z)
CROPS = {
    "pyradiomics/brain1_crop.nrrd": ("data/pyradiomics_testcases/brain1_image.nrrd", (128, 72, 10), (96, 96, 8)),
    "sct_spinalcord/t2_crop.nii.gz": ("data/sct_spinalcord/t2/t2.nii.gz", (14, 12, 12), (32, 30, 28)),
    "dcmqi_ct3slice/ct_crop.nrrd": ("data/dcmqi_ct3slice/ct.nrrd", (40, 100, 0), (200, 200, 3)),
}

COPIES = {
    "sct_spinalcord/t1w.nii.gz": "data/sct_spinalcord/t1/t1w.nii.gz",
    "sct_spinalcord/mt1.nii.gz": "data/sct_spinalcord/mt/mt1.nii.gz",
    "sct_spinalcord/LICENSE_MIT.txt": "data/sct_spinalcord/LICENSE_MIT.txt",
    "pyradiomics/LICENSE_BSD-3.txt": "data/pyradiomics_testcases/LICENSE_BSD-3.txt",
    "dcmqi_ct3slice/LICENSE_BSD-3.txt": "data/dcmqi_ct3slice/LICENSE_BSD-3.txt",
    "totalseg_ct/LICENSE_Apache-2.0.txt": "data/totalseg_examples/LICENSE_Apache-2.0.txt",
    "sam_med2d_demo/LICENSE_Apache-2.0_code.txt": "data/sam_med2d_demo/LICENSE_Apache-2.0_code.txt",
    "universeg_reference/random_v1_state.pt": "reference/universeg/random_v1_state.pt",
    "universeg_reference/state_dict_v1.json": "reference/universeg/state_dict_v1.json",
}

# 3-D reference cases -> the volume they share (the four ct_sm organs and the multi-object run use one volume)
VOLUME_OF = {
    "totalseg_ct_sm_liver": "totalseg_ct_sm", "totalseg_ct_sm_spleen": "totalseg_ct_sm",
    "totalseg_ct_sm_kidney_right": "totalseg_ct_sm", "totalseg_ct_sm_kidney_left": "totalseg_ct_sm",
    "totalseg_ct_sm_4organs": "totalseg_ct_sm", "pyradiomics_brain1": "pyradiomics_brain1",
    "pyradiomics_brain2": "pyradiomics_brain2", "dcmqi_ct3slice_liver": "dcmqi_ct3slice", "sct_t1w_cord": "sct_t1w",
}
DROPPED_3D_KEYS = {"mid_slice_logits"}       # 3-D middle-slice logits: no test or tool uses them


def save_npz(path: Path, arrays: dict) -> None:
    """np.savez_compressed with fixed zip timestamps, so the same arrays always give the same bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(value), allow_pickle=False)
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def pack(mask: np.ndarray) -> np.ndarray:
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}, "only 0/1 masks are packed"
    return np.packbits(mask.ravel())


def unpack(bits: np.ndarray, shape) -> np.ndarray:
    return np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape)


def read_png(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def build_sam_med2d(shared: Path, out: Path) -> dict:
    """PNG images and masks as they are; returns {case: image file name} for the 2-D reference."""
    src = shared / "data" / "sam_med2d_demo"
    cases = {}
    for f in sorted((shared / "reference" / "litemedsam" / "2d").glob("*.npz")):
        d = np.load(f)
        cases[str(d["name"])] = Path(str(d["source_image"])).name
    for image in sorted(set(cases.values())):
        (out / "sam_med2d_demo" / "images").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / "images" / image, out / "sam_med2d_demo" / "images" / image)
    for case in sorted(cases):
        (out / "sam_med2d_demo" / "masks").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / "masks" / f"{case}.png", out / "sam_med2d_demo" / "masks" / f"{case}.png")
    return cases


def build_litemedsam_2d(shared: Path, out: Path, images: dict) -> None:
    arrays = {}
    for f in sorted((shared / "reference" / "litemedsam" / "2d").glob("*.npz")):
        d = np.load(f)
        name = str(d["name"])
        image = read_png(out / "sam_med2d_demo" / "images" / images[name])
        assert np.array_equal(image, d["image"]), f"{name}: the PNG is not the image the reference was fed"
        gt = (read_png(out / "sam_med2d_demo" / "masks" / f"{name}.png") > 0).astype(np.uint8)
        assert np.array_equal(gt, d["gt"]), f"{name}: the mask PNG is not the reference's gt"
        H, W = d["ref_mask"].shape
        x0, y0, x1, y1 = (int(v) for v in d["box"])
        assert np.array_equal(d["box"], [x0, y0, x1, y1])
        wy0, wx0 = max(0, y0 - LOGIT_MARGIN), max(0, x0 - LOGIT_MARGIN)
        wy1, wx1 = min(H, y1 + LOGIT_MARGIN + 1), min(W, x1 + LOGIT_MARGIN + 1)
        arrays.update({
            f"{name}/image_file": np.array(images[name]),
            f"{name}/box": np.array([x0, y0, x1, y1], np.int64),
            f"{name}/box256": d["box256"], f"{name}/new_size": d["new_size"],
            f"{name}/ref_mask": pack(d["ref_mask"]),
            f"{name}/ref_logits_window": d["ref_logits"][wy0:wy1, wx0:wx1],
            f"{name}/logits_window_origin": np.array([wy0, wx0], np.int64),
            f"{name}/iou_pred": d["iou_pred"], f"{name}/dice_vs_gt": d["dice_vs_gt"],
        })
    arrays["cases"] = np.array(sorted({k.split("/")[0] for k in arrays}))
    save_npz(out / "litemedsam_reference" / "2d.npz", arrays)


def build_litemedsam_3d(shared: Path, out: Path) -> None:
    ref = shared / "reference" / "litemedsam"
    arrays, volumes, names = {}, {}, []
    files = sorted((ref / "3d").glob("*.npz")) + [ref / "3d_multiobject" / "totalseg_ct_sm_4organs.npz"]
    for f in files:
        d = np.load(f)
        name = str(d["name"])
        names.append(name)
        vname = VOLUME_OF[name]
        if vname in volumes:
            assert np.array_equal(volumes[vname], d["volume_u8"]), f"{name}: volume differs from {vname}"
        volumes[vname] = d["volume_u8"]
        arrays[f"{name}/volume"] = np.array(vname)
        for key in d.files:
            if key == "volume_u8" or key in DROPPED_3D_KEYS:
                continue
            value = d[key]
            if key in ("gt", "ref_mask") and set(np.unique(value)) <= {0, 1}:
                packed = pack(value)
                assert np.array_equal(unpack(packed, value.shape), value)
                arrays[f"{name}/{key}_packed"] = packed
            else:
                arrays[f"{name}/{key}"] = value
    for vname, vol in volumes.items():
        arrays[f"volume/{vname}"] = vol
    arrays["cases_3d"] = np.array(sorted(n for n in names if n != "totalseg_ct_sm_4organs"))
    arrays["cases_3d_multiobject"] = np.array(["totalseg_ct_sm_4organs"])
    save_npz(out / "litemedsam_reference" / "3d.npz", arrays)


def build_universeg(shared: Path, out: Path) -> None:
    d = np.load(shared / "reference" / "universeg" / "reference_io.npz")
    save_npz(out / "universeg_reference" / "reference_io.npz",
             {k: d[k] for k in d.files if not k.endswith("_f64")})


def build_crops(shared: Path, out: Path) -> None:
    for rel, (src, index, size) in CROPS.items():
        img = sitk.ReadImage(str(shared / src))
        crop = sitk.RegionOfInterest(img, size, index)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(crop, str(out / rel), True)
        back = sitk.ReadImage(str(out / rel))
        assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(crop))
        assert back.GetDirection() == img.GetDirection() and np.allclose(back.GetSpacing(), img.GetSpacing())
    # the CT window of the reference is fixed ([-160, 240]) and then min-maxed over the clipped volume: a crop that
    # still reaches both ends of the window is windowed exactly like the whole volume
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "dcmqi_ct3slice" / "ct_crop.nrrd")))
    assert raw.min() <= -160 and raw.max() >= 240, "the dcmqi crop must reach both ends of the CT window"
    src, index, size = CROPS["dcmqi_ct3slice/ct_crop.nrrd"]
    (out / "dcmqi_ct3slice" / "crop.json").write_text(json.dumps(
        {"source": src.split("/", 1)[1], "index_xyz": list(index), "size_xyz": list(size)}, indent=1) + "\n")


def build_atlas(shared: Path, out: Path) -> None:
    """The 112-slice TotalSegmentator CT cut to slices 70..111, its origin set so that the cut sits where ct_sm
    (its slices 82..111) sits: upstream gives both files the same origin, which places them 82 slices apart."""
    src = shared / "data" / "totalseg_examples"
    k0, k1 = ATLAS_SLICES
    ct, lab = (sitk.ReadImage(str(src / "ct" / n)) for n in ("image.nii.gz", "label_total_fast.nii.gz"))
    sm = sitk.ReadImage(str(src / "ct_sm" / "image.nii.gz"))
    full = sitk.GetArrayFromImage(ct)
    assert np.array_equal(full[82:112], sitk.GetArrayFromImage(sm)), "ct_sm is no longer slices 82..111 of ct"
    assert ct.GetOrigin() == sm.GetOrigin() and ct.GetDirection() == sm.GetDirection()
    (out / "totalseg_ct").mkdir(parents=True, exist_ok=True)
    for img, name in ((ct, "ct.nii.gz"), (lab, "labels_fast.nii.gz")):
        cut = sitk.GetImageFromArray(sitk.GetArrayFromImage(img)[k0:k1])
        cut.SetSpacing(img.GetSpacing())
        cut.SetDirection(img.GetDirection())
        cut.SetOrigin(sm.TransformIndexToPhysicalPoint((0, 0, k0 - 82)))
        sitk.WriteImage(cut, str(out / "totalseg_ct" / name), True)


def write_manifest(out: Path) -> None:
    lines = []
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.name not in ("MANIFEST.sha256",) and p.suffix not in (".py", ".pyc", ".md"):
            if "__pycache__" in p.parts:
                continue
            lines.append(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(out).as_posix()}")
    (out / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", required=True, help="the shared data folder (data/ and reference/ inside)")
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args()
    shared, out = Path(args.shared), Path(args.out)
    if not (shared / "reference" / "litemedsam").is_dir():
        raise SystemExit(f"error: no shared data folder at {shared}: pass --shared DIR")
    for rel, src in COPIES.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared / src, out / rel)
    images = build_sam_med2d(shared, out)
    (out / "litemedsam_reference").mkdir(parents=True, exist_ok=True)
    build_litemedsam_2d(shared, out, images)
    build_litemedsam_3d(shared, out)
    build_universeg(shared, out)
    build_crops(shared, out)
    build_atlas(shared, out)
    write_manifest(out)
    print(f"fixtures written to {out}")


if __name__ == "__main__":
    main()
