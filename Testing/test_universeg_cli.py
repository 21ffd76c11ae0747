"""`medseg universeg` and `medseg library` through `medseg_backend.cli.main`, on real data.

Deterministic checks use the MeanLabel stand-in network (injected by wrapping the engine); the weights / licence
path runs the real network with the random reference weights in the official layout.
"""
from __future__ import annotations


import numpy as np
import pytest
import SimpleITK as sitk
import torch

import medseg_backend.universeg as useg
from medseg_backend.cli import main

LIVER = 5


class MeanLabel(torch.nn.Module):
    def forward(self, q, si, sl):
        p = sl.mean(1).clamp(1e-4, 1 - 1e-4)
        return torch.log(p / (1 - p))


@pytest.fixture
def standin(monkeypatch):
    """`medseg universeg` with the MeanLabel network instead of the weights."""
    real = useg.UniverSegEngine

    def factory(weights=None, device="auto", precision="auto", **kw):
        return real(model=MeanLabel(), device="cpu", precision=precision)
    monkeypatch.setattr(useg, "UniverSegEngine", factory)


@pytest.fixture(scope="module")
def ct_files(data_dir):
    d = data_dir / "totalseg_ct_sm"
    return d / "ct.nii.gz", d / "labels.nii.gz"


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def sparse_labelmap(ct_files, tmp_path):
    img = sitk.ReadImage(str(ct_files[1]))
    lab = sitk.GetArrayFromImage(img)
    sparse = np.zeros_like(lab)
    sparse[::5] = lab[::5]
    out = sitk.GetImageFromArray(sparse)
    out.CopyInformation(img)
    path = tmp_path / "partial.nrrd"
    sitk.WriteImage(out, str(path))
    return path, lab


def test_few_shot_completion_cli(standin, ct_files, tmp_path, capsys):
    partial, lab = sparse_labelmap(ct_files, tmp_path)
    gt = lab == LIVER
    idx = np.nonzero(gt)
    roi = f"{idx[2].min()},{idx[1].min()},{idx[0].min()},{idx[2].max()},{idx[1].max()},{idx[0].max()}"
    out, prob = tmp_path / "liver.nii.gz", tmp_path / "prob.nrrd"
    rc, stdout, err = run(capsys, "universeg", ct_files[0], "--labelled-slices", partial, "--label", LIVER,
                          "--roi", roi, "-o", out, "--probabilities", prob)
    assert rc == 0, err
    assert "wrote" in stdout and "warning: Only 6 example" in err and "kept as drawn" in err
    src = sitk.ReadImage(str(ct_files[0]))
    res = sitk.ReadImage(str(out))
    assert res.GetSize() == src.GetSize()
    assert np.allclose(res.GetSpacing(), src.GetSpacing()) and np.allclose(res.GetOrigin(), src.GetOrigin())
    assert np.allclose(res.GetDirection(), src.GetDirection())
    arr = sitk.GetArrayFromImage(res)
    assert set(np.unique(arr)) == {0, LIVER}                      # written with the structure's value
    for k in range(0, 30, 5):                                      # the user's slices are kept as drawn
        assert np.array_equal(arr[k] == LIVER, gt[k])
    assert dice(arr == LIVER, gt) > 0.7
    p = sitk.GetArrayFromImage(sitk.ReadImage(str(prob)))
    assert p.dtype == np.float32 and p.shape == arr.shape and 0 <= p.min() and p.max() <= 1


def test_library_export_list_import_and_use(standin, ct_files, tmp_path, capsys):
    lib = tmp_path / "liver-lib"
    rc, stdout, err = run(capsys, "library", "export", lib, "--volume", ct_files[0], "--labelmap", ct_files[1],
                          "--label", LIVER, "--structure", "liver", "--modality", "CT", "--intensity",
                          "ct-abdomen", "--max-slices", 8)
    assert rc == 0, err
    rc, stdout, err = run(capsys, "library", "list", lib)
    assert rc == 0 and "liver (CT), label 5, intensity ct-abdomen, 8 item(s)" in stdout
    rc, stdout, err = run(capsys, "library", "list")
    assert rc == 0 and "no imported libraries" in stdout
    rc, stdout, err = run(capsys, "library", "import", lib, "--name", "liver-ct")
    assert rc == 0 and "imported 'liver-ct'" in stdout, err
    rc, stdout, err = run(capsys, "library", "list")
    assert "liver-ct: liver (CT), label 5" in stdout
    out = tmp_path / "seg.nrrd"
    rc, stdout, err = run(capsys, "universeg", ct_files[0], "--library", "liver-ct", "--roi",
                          "41,25,10,105,86,12", "-o", out)
    assert rc == 0, err
    assert "library 'liver' (CT): 8 item(s), label 5" in err and "ct-abdomen" in err
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert arr[10:13].any() and not arr[:10].any() and not arr[13:].any()
    assert set(np.unique(arr)) == {0, LIVER}


def test_examples_pairs_2d_with_real_network_and_licence(data_dir, universeg_state, tmp_path, capsys):
    from medseg_backend.weights import store

    d = data_dir / "sam_med2d_demo"
    weights = universeg_state
    pair = f"{d / 'images' / 'amos_0004_75.png'}:{d / 'masks' / 'amos_0004_75_liver_000.png'}"
    out = tmp_path / "seg.png"
    args = ["universeg", d / "images" / "amos_0006_90.png", "--examples", pair, "--label", 255, "--roi",
            "250,150,450,350", "--weights", weights, "--device", "cpu", "-o", out]
    rc, stdout, err = run(capsys, *args)
    assert rc == 2 and "error:" in err and "accept" in err and not out.exists()     # licence first
    store.accept_licence("universeg-v1")
    rc, stdout, err = run(capsys, *args)
    assert rc == 0, err
    assert "RGB" in err and "raw" in err and "fp32" in stdout
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert arr.shape == (512, 512) and set(np.unique(arr)) <= {0, 255}
    assert not arr[:150].any() and not arr[:, :250].any()          # nothing outside the ROI


def test_cli_bad_input_writes_nothing(standin, ct_files, tmp_path, capsys):
    out = tmp_path / "seg.nrrd"
    cases = [
        (["--examples", "nocolon"], "IMAGE:LABEL"),
        (["--examples", f"{tmp_path / 'missing.nrrd'}:{ct_files[1]}"], "not found"),
        (["--examples", f"{ct_files[0]}:{ct_files[1]}", "--roi", "1,2,3,4"], "has 4 numbers"),
        (["--examples", f"{ct_files[0]}:{ct_files[1]}", "--label", 200], "values present"),
        (["--library", tmp_path], "No manifest.json"),
        (["--library", "no-such-library"], "not found"),
        (["--examples", f"{ct_files[0]}:{ct_files[1]}", "--roi", "300,0,0,310,10,5"], "outside"),
    ]
    for extra, msg in cases:
        rc, stdout, err = run(capsys, "universeg", ct_files[0], *extra, "-o", out)
        assert rc == 2, (extra, err)
        assert msg in err and err.count("\n") >= 1, (extra, err)
        assert not out.exists()
    rc, stdout, err = run(capsys, "universeg", ct_files[0], "--examples", f"{ct_files[0]}:{ct_files[1]}",
                          "-o", tmp_path / "seg.xyz")
    assert rc == 2 and "format" in err
    rc, stdout, err = run(capsys, "library", "export", tmp_path / "lib", "--volume", ct_files[0],
                          "--structure", "liver")
    assert rc == 2 and "--labelmap" in err and not (tmp_path / "lib").exists()
