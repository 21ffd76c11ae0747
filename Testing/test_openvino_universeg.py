"""UniverSeg's per-query network through the OpenVINO runtime (issue 27 item 3): the multi-input export of
:func:`medseg_backend.runtime.openvino_model` with a dynamic number of support items, one export per image size,
reproduces the released implementation on the reference cases (identical masks). The product keeps UniverSeg on
torch: OpenVINO does not gain there on the CPU (BENCHMARKS.md, "UniverSeg through OpenVINO").

Oracle: ``Testing/Data/universeg_reference`` (random weights in the official layout, the released implementation's
outputs for three shapes: S=8 and S=3 (two support sets) at 128 px, S=1 at 64 px)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg_backend import runtime as rt
from medseg_backend.models.universeg_fast import QueryGraph, build_universeg_v1

CASES = ["", "case2_", "case3_"]
ATOL = 1e-4
needs_openvino = pytest.mark.skipif(rt.openvino_version() is None, reason="openvino is not installed")


@pytest.fixture(scope="module")
def net(universeg_state):
    m = build_universeg_v1()
    m.load_state_dict(torch.load(universeg_state, map_location="cpu", weights_only=True), strict=True)
    return m.eval()


def _inputs(ref, pre):
    return tuple(torch.from_numpy(ref[pre + k]) for k in ("query", "support_images", "support_labels"))


def _per_set(net, graph, q, si, sl):
    """Logits (B,1,H,W): one support set per batch item, its SupportCache fields fed to ``graph``."""
    outs = []
    with torch.inference_mode():
        for b in range(q.shape[0]):
            cache = net.prepare_support(si[b], sl[b])
            outs.append(graph(q[b:b + 1], cache.level0, cache.cross0_mean))
    return torch.cat(outs).numpy()


@pytest.mark.parametrize("pre", CASES)
def test_query_graph_is_the_fast_path(net, universeg_reference, pre):
    """In torch the traceable per-query module gives the fast path's numbers (one chunk, no work buffer)."""
    q, si, sl = _inputs(universeg_reference, pre)
    with torch.inference_mode():
        fast = net(q, si, sl).numpy()
    got = _per_set(net, QueryGraph(net), q, si, sl)
    assert np.abs(got - fast).max() <= 1e-5


@needs_openvino
def test_query_graph_through_openvino_reproduces_reference(net, universeg_reference, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_OPENVINO_CACHE", str(tmp_path / "ov"))
    graph = QueryGraph(net).eval()
    compiled = {}
    for pre in CASES:
        q, si, sl = _inputs(universeg_reference, pre)
        size = q.shape[-1]
        if size not in compiled:   # the example's S fixes nothing: S stays dynamic in the export
            with torch.inference_mode():
                cache = net.prepare_support(si[0], sl[0])
            example = (q[:1], cache.level0, cache.cross0_mean)
            shapes = [[1, 1, size, size], [-1, 64, size, size], [1, 64, size, size]]
            compiled[size] = rt.openvino_model(graph, example, shapes=shapes, name="universeg-test",
                                               what="query network", threads=1)
            assert compiled[size] is not None
        got = _per_set(net, compiled[size], q, si, sl)
        ref = universeg_reference[pre + "output"]
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= ATOL, pre
        assert np.array_equal(got > 0, ref > 0), pre            # identical masks (p > 0.5)
    # one export per image size (S = 8, 3 and 3 ran through the 128 px one), kept for the next process
    assert sorted(compiled) == [64, 128]
    assert len([p for p in (tmp_path / "ov").iterdir() if (p / "model.xml").is_file()]) == 2
