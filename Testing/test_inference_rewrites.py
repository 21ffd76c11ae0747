"""The engine's inference rewrites (BatchNorm folding, GELU fused into conv / linear, channels-last) keep the
numbers: encoder and decoder outputs of the rewritten model equal the plain model's within 1e-4."""
import copy

import torch

from medseg_backend.medsam import MedSAMEngine
from medseg_backend import load_model
from medseg_backend.models.optimize import ConvGELU, LinearGELU
from medseg_backend.models.sam import build_sam
from sam_reference import randomize_


def _compare(plain, engine, size):
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a = plain.encode(x)
        xin = x.contiguous(memory_format=torch.channels_last) if engine.predictor.channels_last else x
        b = engine.predictor.net.encode(xin)
        box = torch.tensor([[0.2 * size, 0.3 * size, 0.7 * size, 0.8 * size]] * 2)
        la, _ = plain.decode_boxes(a, box)
        lb, _ = engine.predictor.net.decode_boxes(b, box)
    return (a - b).abs().max().item(), (la - lb).abs().max().item()


def test_lite_rewrites_keep_numbers():
    plain = load_model("lite-medsam", device="cpu")
    engine = MedSAMEngine("lite-medsam", device="cpu", module=copy.deepcopy(plain), runtime="torch")
    n_fused = sum(isinstance(m, (ConvGELU, LinearGELU)) for m in engine.predictor.net.modules())
    emb_err, logit_err = _compare(plain, engine, 256)
    assert emb_err < 1e-4 and logit_err < 1e-3, (emb_err, logit_err)
    assert engine.predictor.channels_last and n_fused in (0, 20)  # 0 only where this torch lacks the oneDNN post-ops
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in engine.predictor.net.modules())


def test_vit_rewrites_keep_numbers():
    plain = build_sam("vit_test").eval()
    randomize_(plain)
    engine = MedSAMEngine("medsam-vit-b", device="cpu", module=copy.deepcopy(plain), runtime="torch")
    emb_err, logit_err = _compare(plain, engine, 256)
    assert emb_err < 1e-4 and logit_err < 1e-4, (emb_err, logit_err)
    assert engine.predictor.kind == "vit" and not engine.predictor.channels_last
    n_fused = sum(isinstance(m, LinearGELU) for m in engine.predictor.net.modules())
    assert n_fused in (0, 4)  # one per ViT block (4 in the reduced config); 0 only without oneDNN post-ops
