"""UniverSeg v1 network: official layout, reference equivalence of the plain and the fast path.

Oracle (bundled in ``Testing/Data/universeg_reference``): ``random_v1_state.pt`` (random weights in the official
layout) with ``reference_io.npz`` (inputs and outputs of the released implementation for three shapes).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medseg_backend.models.universeg import UNIVERSEG_V1_PARAMS, UniverSeg
from medseg_backend.models.universeg_fast import build_universeg_v1

CASES = ["", "case2_", "case3_"]
ATOL = 1e-4


@pytest.fixture(scope="module")
def model(universeg_state):
    m = build_universeg_v1()
    state = torch.load(universeg_state, map_location="cpu", weights_only=True)
    m.load_state_dict(state, strict=True)
    return m.eval()


@pytest.fixture(scope="module")
def ref_io(universeg_reference):
    return universeg_reference


def _inputs(ref_io, pre):
    return (torch.from_numpy(ref_io[pre + "query"]), torch.from_numpy(ref_io[pre + "support_images"]),
            torch.from_numpy(ref_io[pre + "support_labels"]))


def test_layout_matches_official_state_dict(data_dir):
    m = build_universeg_v1()
    expected = json.loads((data_dir / "universeg_reference" / "state_dict_v1.json").read_text(encoding="utf-8"))
    ours = [(k, list(v.shape)) for k, v in m.state_dict().items()]
    assert sorted(ours) == sorted((k, list(s)) for k, s in expected)
    assert sum(p.numel() for p in m.parameters()) == UNIVERSEG_V1_PARAMS == 1182785


def test_strict_load_rejects_wrong_layout(universeg_state):
    state = torch.load(universeg_state, map_location="cpu", weights_only=True)
    state.pop("out_conv.conv.bias")
    with pytest.raises(RuntimeError, match="out_conv.conv.bias"):
        build_universeg_v1().load_state_dict(state, strict=True)


@pytest.mark.parametrize("pre", CASES[:1])
def test_reference_network_module_alone_loads_and_reproduces_reference(universeg_state, ref_io, pre):
    """models/universeg.py on its own (no fast path): the official checkpoint loads strictly and its forward
    gives the reference outputs."""
    net = UniverSeg().eval()
    net.load_state_dict(torch.load(universeg_state, map_location="cpu", weights_only=True), strict=True)
    assert not hasattr(net, "prepare_support")
    q, si, sl = _inputs(ref_io, pre)
    with torch.inference_mode():
        out = net(q, si, sl).numpy()
    assert np.abs(out - ref_io[pre + "output"]).max() <= ATOL


@pytest.mark.parametrize("pre", CASES)
def test_reference_path_reproduces_reference_outputs(model, ref_io, pre):
    q, si, sl = _inputs(ref_io, pre)
    with torch.inference_mode():
        out = model.forward_reference(q, si, sl).numpy()
    assert out.shape == ref_io[pre + "output"].shape
    assert np.abs(out - ref_io[pre + "output"]).max() <= ATOL


@pytest.mark.parametrize("pre", CASES)
def test_fast_path_fp32_reproduces_reference_outputs(model, ref_io, pre):
    q, si, sl = _inputs(ref_io, pre)
    model.compute_dtype = None
    with torch.inference_mode():
        out = model(q, si, sl).numpy()          # fast=True is the default
    ref = ref_io[pre + "output"]
    assert np.abs(out - ref).max() <= ATOL
    assert np.array_equal(out > 0, ref > 0)


@pytest.mark.parametrize("chunk", [1, 3])
def test_fast_path_chunking_and_shared_support(model, ref_io, chunk):
    """Chunks smaller than S, and one prepared support reused for two different queries, change nothing."""
    q, si, sl = _inputs(ref_io, "")
    q2 = torch.flip(q, dims=[-1])
    old = model.chunk_size
    model.chunk_size = chunk
    try:
        with torch.inference_mode():
            cache = model.prepare_support(si[0], sl[0])
            both = model.predict_with_support(torch.cat([q, q2]), cache).numpy()
            ref2 = model.forward_reference(q2, si, sl).numpy()
    finally:
        model.chunk_size = old
    assert np.abs(both[:1] - ref_io["output"]).max() <= ATOL
    assert np.abs(both[1:] - ref2).max() <= ATOL


def test_batch_with_different_supports(model, ref_io):
    """Case 2 has B=2 with a different support set per batch item."""
    q, si, sl = _inputs(ref_io, "case2_")
    with torch.inference_mode():
        a = model.forward_fast(q, si, sl).numpy()
        b = model.forward_fast(q[1:], si[1:], sl[1:]).numpy()
    assert np.abs(a[1:] - b).max() <= 1e-5
    assert np.abs(a - ref_io["case2_output"]).max() <= ATOL


def test_bf16_stays_close_to_fp32(model, ref_io):
    """Reduced precision is an option, not the default: probabilities within 1e-2 of fp32."""
    q, si, sl = _inputs(ref_io, "")
    model.compute_dtype = torch.bfloat16
    try:
        with torch.inference_mode():
            out = model(q, si, sl).float()
    finally:
        model.compute_dtype = None
    ref = torch.from_numpy(ref_io["output"])
    assert (torch.sigmoid(out) - torch.sigmoid(ref)).abs().max().item() <= 1e-2


def test_bad_shapes_raise(model):
    q = torch.rand(1, 1, 60, 60)
    s = torch.rand(1, 2, 1, 60, 60)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(q, s, s)
    with pytest.raises(ValueError, match="B,S,1,H,W"):
        model(torch.rand(1, 1, 64, 64), torch.rand(1, 2, 2, 64, 64), torch.rand(1, 2, 2, 64, 64))
