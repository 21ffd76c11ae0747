"""The OpenVINO encoder runtime (issue 27): chosen by ``auto`` on the CPU when installed, exported once per weights
and kept, checked against torch, a failed export stays on torch with one warning line, and the product works
without OpenVINO. Mask parity on the LiteMedSAM reference cases is in test_litemedsam_parity.py."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg_backend import runtime as rt
from medseg_backend.errors import InputError, MedSegWarning
from medseg_backend.medsam import MedSAMPredictor
from medseg_backend.models.sam import build_sam
from medseg_backend.progress import CancelToken
from medseg_backend.worker.handlers import Handlers
from sam_reference import randomize_

REPO = Path(__file__).resolve().parents[1]
needs_openvino = pytest.mark.skipif(rt.openvino_version() is None, reason="openvino is not installed")


@pytest.fixture(scope="module")
def small_sam():
    """The reduced ViT (same code paths as ViT-B) with random weights in the official layout."""
    net = build_sam("vit_test").eval()
    randomize_(net)
    return net


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """An empty export folder for this test only."""
    folder = tmp_path / "ov"
    monkeypatch.setenv("MEDSEG_OPENVINO_CACHE", str(folder))
    return folder


def _images(n=3, size=256, seed=0):
    """Encoder inputs (3, size, size) in [0, 1] (the reduced ViT takes 256 px, not the ViT-B transform's 1024)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=g).numpy() for _ in range(n)]


def _encode(p, imgs):
    return list(p._encode_batch(imgs))


def _predictor(net, runtime, **kw):
    return MedSAMPredictor("medsam-vit-b", device="cpu", precision="fp32", module=copy.deepcopy(net),
                           runtime=runtime, **kw)


def _max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def test_runtime_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert rt.resolve_runtime("torch", cpu) == "torch"
    assert rt.resolve_runtime("auto", cuda) == "torch"          # the GPU always runs torch
    assert rt.resolve_runtime("auto", cpu) == ("openvino" if rt.openvino_version() else "torch")
    with pytest.raises(InputError, match="CPU only.*--runtime torch"):
        rt.resolve_runtime("openvino", cuda)
    with pytest.raises(InputError, match="Unknown runtime 'onnx'"):
        rt.resolve_runtime("onnx", cpu)


def test_environment_decides_what_auto_means(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("MEDSEG_RUNTIME", "torch")
    assert rt.resolve_runtime("auto", cpu) == "torch"
    assert rt.resolve_runtime("openvino", cpu) == "openvino" if rt.openvino_version() else True
    monkeypatch.setenv("MEDSEG_RUNTIME", "onnx")
    with pytest.raises(InputError, match="MEDSEG_RUNTIME=onnx"):
        rt.resolve_runtime("auto", cpu)


NO_OPENVINO = r"""
import sys, warnings
sys.modules["openvino"] = None          # `import openvino` raises ImportError, as where it is not installed
warnings.simplefilter("error")           # any warning fails the run
from medseg_backend.errors import InputError
from medseg_backend.medsam import MedSAMEngine
engine = MedSAMEngine("lite-medsam", device="cpu")
print("runtime", engine.runtime)
try:
    MedSAMEngine("lite-medsam", device="cpu", runtime="openvino")
except InputError as e:
    print("error", e)
"""


def test_without_openvino_auto_is_torch_quietly_and_asking_for_it_says_how_to_install():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", NO_OPENVINO], capture_output=True, text=True, env=env, cwd=str(REPO),
                         timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "runtime torch"
    assert len(lines) == 2 and lines[1].startswith("error ") and "pip install openvino" in lines[1], lines
    assert out.stderr.strip() == ""


@needs_openvino
def test_export_is_kept_reused_and_matches_torch(small_sam, own_cache, monkeypatch):
    imgs = _images()
    torch_emb = _encode(_predictor(small_sam, "torch"), imgs)
    p = _predictor(small_sam, "openvino")
    assert p.runtime == "openvino" and p.net.image_encoder is None
    assert _max_diff(_encode(p, imgs), torch_emb) < 1e-4
    kept = [d for d in own_cache.iterdir() if d.is_dir()]
    assert len(kept) == 1 and (kept[0] / "model.xml").is_file() and (kept[0] / "model.bin").is_file()
    assert kept[0].name.startswith("medsam-vit-b-")

    def no_export(*a, **k):
        raise AssertionError("exported again although a kept export exists")

    monkeypatch.setattr(rt, "_export", no_export)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MedSegWarning)
        again = _predictor(small_sam, "openvino")
    assert again.runtime == "openvino"
    assert _max_diff(_encode(again, imgs), torch_emb) < 1e-4


@needs_openvino
def test_other_weights_are_a_new_export(small_sam, own_cache):
    _predictor(small_sam, "openvino")
    other = copy.deepcopy(small_sam)
    with torch.no_grad():
        other.image_encoder.neck[0].weight.mul_(1.01)
    _predictor(other, "openvino")
    assert len([d for d in own_cache.iterdir() if d.is_dir()]) == 2


@needs_openvino
def test_damaged_export_is_made_again(small_sam, own_cache):
    imgs = _images(1)
    _predictor(small_sam, "openvino")
    (kept,) = [d for d in own_cache.iterdir() if d.is_dir()]
    with open(kept / "model.bin", "r+b") as f:
        f.truncate(1000)
    p = _predictor(small_sam, "openvino")
    assert p.runtime == "openvino"
    assert (kept / "model.bin").stat().st_size > 1000
    assert _max_diff(_encode(p, imgs), _encode(_predictor(small_sam, "torch"), imgs)) < 1e-4


@needs_openvino
@pytest.mark.parametrize("failure", ["export", "numbers"])
def test_failed_export_stays_on_torch_with_one_warning(small_sam, own_cache, monkeypatch, failure):
    if failure == "export":
        def broken(*a, **k):
            raise RuntimeError("unsupported operation aten::foo")
        monkeypatch.setattr(rt, "_export", broken)
    else:  # an export that does not reproduce torch is never used nor kept
        monkeypatch.setattr(rt, "_check_export", lambda *a, **k: 0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = _predictor(small_sam, "openvino")
    notes = [str(w.message) for w in caught if issubclass(w.category, MedSegWarning)]
    assert len(notes) == 1 and "runs on torch instead" in notes[0] and "\n" not in notes[0], notes
    assert p.runtime == "torch" and p.net.image_encoder is not None
    assert not any(d.is_dir() for d in own_cache.iterdir()) if own_cache.exists() else True
    imgs = _images(1)
    assert _max_diff(_encode(p, imgs), _encode(_predictor(small_sam, "torch"), imgs)) == 0.0


@needs_openvino
def test_processes_starting_together_export_once(small_sam, own_cache, monkeypatch):
    calls = []
    real = rt._export

    def slow_export(*args):
        calls.append(1)
        threading.Event().wait(0.5)    # the other one arrives while this one exports
        return real(*args)

    monkeypatch.setattr(rt, "_export", slow_export)
    results = []
    threads = [threading.Thread(target=lambda: results.append(_predictor(small_sam, "openvino").runtime))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["openvino", "openvino"] and len(calls) == 1
    assert not [p for p in own_cache.iterdir() if p.name.startswith(".")]   # no private folder left behind


@needs_openvino
def test_read_only_cache_exports_in_memory_with_one_warning(small_sam, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MEDSEG_OPENVINO_CACHE", str(blocker / "ov"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = _predictor(small_sam, "openvino")
    notes = [str(w.message) for w in caught if issubclass(w.category, MedSegWarning)]
    assert p.runtime == "openvino" and len(notes) == 1 and "MEDSEG_OPENVINO_CACHE" in notes[0], notes


@needs_openvino
def test_worker_reports_the_runtime(ct_sample):
    _ctx, _volume, labels = ct_sample
    kidney = np.argwhere(labels == 3)
    z = int(np.median(kidney[:, 0]))
    (y0, x0), (y1, x1) = kidney[:, 1:].min(0), kidney[:, 1:].max(0)
    plane = np.ascontiguousarray(labels[z] * 40).astype(np.int16)
    handlers = Handlers()
    got = {}
    for runtime in ("auto", "torch"):
        fields, arrays = handlers.run("segment_box", dict(boxes=[[int(x0), int(y0), int(x1), int(y1)]],
                                                          model="lite-medsam", device="cpu", runtime=runtime,
                                                          intensity="raw"),
                                      {"volume": plane}, lambda f, m: None, CancelToken())
        got[runtime] = (fields["runtime"], arrays["labels"])
    assert got["auto"][0] == "openvino" and got["torch"][0] == "torch"
    assert np.array_equal(got["auto"][1], got["torch"][1])


@pytest.mark.slow
@needs_openvino
def test_vit_b_random_weights_openvino_matches_torch(own_cache):
    """Full-size ViT-B (1024 px) with random weights in the official layout."""
    net = build_sam("vit_b").eval()
    randomize_(net)
    imgs = _images(1, size=1024)
    a = _encode(_predictor(net, "torch"), imgs)
    b = _encode(_predictor(net, "openvino"), imgs)
    rel = _max_diff(a, b) / float(a[0].abs().max())
    assert rel < 1e-4, rel
