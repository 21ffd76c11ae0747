"""Our SAM implementation equals Meta's reference (segment-anything 1.0) with the same random weights.

CI runs a reduced ViT (same code paths: windowed blocks with padding, global blocks, relative positions,
neck, prompt encoder, two-way decoder); the real ViT-B configuration runs under ``-m slow``.
"""
import numpy as np
import pytest
import torch

from medseg_backend.models.loader import check_layout
from medseg_backend.models.sam import CONFIGS, build_sam
from sam_reference import build_meta_sam, randomize_


def _pair(config_name: str, seed: int = 0):
    cfg = CONFIGS[config_name]
    ref = build_meta_sam(cfg)
    randomize_(ref, seed=seed)
    ours = build_sam(config_name).eval()
    state = ref.state_dict()
    check_layout(state, config_name)  # the official layout is exactly ours
    ours.load_state_dict(state, strict=True)
    return ref, ours, cfg


def _compare(config_name: str, seed: int = 0):
    torch.manual_seed(seed)
    ref, ours, cfg = _pair(config_name, seed)
    s = cfg.img_size
    images = torch.rand(2, 3, s, s)
    boxes = torch.tensor([[0.1 * s, 0.2 * s, 0.6 * s, 0.7 * s], [0.3 * s, 0.05 * s, 0.9 * s, 0.5 * s]])
    with torch.inference_mode():
        emb_ref = ref.image_encoder(images)
        emb_ours = ours.encode(images)
        lows_ref, ious_ref = [], []
        for i in range(2):
            sp, de = ref.prompt_encoder(points=None, boxes=boxes[i:i + 1, None, :], masks=None)
            low, iou = ref.mask_decoder(image_embeddings=emb_ref[i:i + 1], image_pe=ref.prompt_encoder.get_dense_pe(),
                                        sparse_prompt_embeddings=sp, dense_prompt_embeddings=de,
                                        multimask_output=False)
            lows_ref.append(low)
            ious_ref.append(iou)
        low_ours, iou_ours = ours.decode_boxes(emb_ours, boxes)
    return (emb_ref, emb_ours, torch.cat(lows_ref), low_ours, torch.cat(ious_ref), iou_ours)


def test_reduced_vit_matches_meta_sam():
    emb_r, emb_o, low_r, low_o, iou_r, iou_o = _compare("vit_test")
    assert emb_o.shape == emb_r.shape == (2, 256, 16, 16)
    assert low_o.shape == low_r.shape == (2, 1, 64, 64)
    assert torch.max(torch.abs(emb_o - emb_r)).item() < 1e-4
    assert torch.max(torch.abs(low_o - low_r)).item() < 1e-4
    assert torch.max(torch.abs(iou_o - iou_r)).item() < 1e-4
    # not trivially equal: the decoder output depends on the box
    assert torch.max(torch.abs(low_o[0] - low_o[1])).item() > 1e-2


def test_multimask_and_points_match_meta_sam():
    torch.manual_seed(1)
    ref, ours, cfg = _pair("vit_test", seed=1)
    s = cfg.img_size
    emb = torch.randn(1, 256, 16, 16)
    coords = torch.tensor([[[30.0, 40.0], [100.0, 20.0]]])
    labels = torch.tensor([[1, 0]])
    with torch.inference_mode():
        sp_r, de_r = ref.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        sp_o, de_o = ours.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        assert torch.allclose(sp_r, sp_o, atol=1e-5) and torch.allclose(de_r, de_o)
        low_r, iou_r = ref.mask_decoder(emb, ref.prompt_encoder.get_dense_pe(), sp_r, de_r, multimask_output=True)
        low_o, iou_o = ours.mask_decoder(emb, ours.prompt_encoder.get_dense_pe(), sp_o, de_o, multimask_output=True)
    assert low_o.shape == (1, 3, 64, 64)
    assert torch.max(torch.abs(low_o - low_r)).item() < 1e-4
    assert torch.max(torch.abs(iou_o - iou_r)).item() < 1e-4


@pytest.mark.slow
def test_vit_b_matches_meta_sam():
    emb_r, emb_o, low_r, low_o, iou_r, iou_o = _compare("vit_b")
    assert emb_o.shape == (2, 256, 64, 64)
    err_emb = torch.max(torch.abs(emb_o - emb_r)).item()
    err_low = torch.max(torch.abs(low_o - low_r)).item()
    print(f"ViT-B max |d embedding| = {err_emb:.2e}, max |d low-res logits| = {err_low:.2e}")
    assert err_emb < 1e-4
    assert err_low < 1e-4


def test_vit_b_layout_is_the_official_one():
    """314 tensors with the three official prefixes; pixel_mean / pixel_std are not part of it."""
    from medseg_backend.models.loader import expected_layout

    layout = expected_layout("vit_b")
    assert len(layout) == 314
    assert {k.split(".")[0] for k in layout} == {"image_encoder", "prompt_encoder", "mask_decoder"}
    assert layout["image_encoder.pos_embed"] == (1, 64, 64, 768)
    assert layout["image_encoder.blocks.2.attn.rel_pos_h"] == (127, 64)   # global block
    assert layout["image_encoder.blocks.0.attn.rel_pos_h"] == (27, 64)    # window 14
    lite = expected_layout("lite")
    assert len(lite) == 435
    shared = [k for k in layout if not k.startswith("image_encoder.")]
    assert all(lite[k] == layout[k] for k in shared)
