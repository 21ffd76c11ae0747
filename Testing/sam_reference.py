"""Meta's reference SAM (``segment-anything==1.0``, test-only) built with any of our configurations.

Importing ``segment_anything`` pulls in torchvision for resize / NMS helpers that the model code never uses;
torchvision is not installed (it breaks the CPU torch wheel), so minimal stand-in modules provide those
names. Calling any of them fails loudly.
"""
from __future__ import annotations

import sys
import types
from functools import partial

import torch


def _install_torchvision_standin() -> None:
    if "torchvision" in sys.modules:
        return

    def _unused(*_a, **_k):  # pragma: no cover - only there to satisfy imports
        raise RuntimeError("torchvision stand-in: not available in the test environment")

    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.resize = _unused
    functional.to_pil_image = _unused
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    boxes.batched_nms = _unused
    boxes.box_area = _unused
    ops.boxes = boxes
    transforms.functional = functional
    tv.transforms = transforms
    tv.ops = ops
    for name, mod in {"torchvision": tv, "torchvision.transforms": transforms,
                      "torchvision.transforms.functional": functional, "torchvision.ops": ops,
                      "torchvision.ops.boxes": boxes}.items():
        sys.modules[name] = mod


def build_meta_sam(config):
    """Meta's ``Sam`` with the encoder hyper-parameters of one of our :class:`SamConfig` (ViT only)."""
    _install_torchvision_standin()
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    kw = config.encoder_kwargs
    e = config.img_size // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=kw["depth"], embed_dim=kw["embed_dim"], img_size=config.img_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=kw["num_heads"], patch_size=16,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=tuple(kw["global_attn_indexes"]),
            window_size=kw["window_size"], out_chans=256),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(e, e),
                                     input_image_size=(config.img_size, config.img_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                               num_heads=8),
                                 transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    """Give every parameter and buffer (zero-initialised ones too) random values, in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if not t.dtype.is_floating_point:
                continue
            noise = torch.randn(t.shape, generator=g)
            if name.endswith(".weight") and t.ndim == 1:  # normalisation gains stay around 1
                t.copy_(1.0 + 0.1 * noise)
            elif "gaussian_matrix" in name:
                t.copy_(noise)
            else:
                t.copy_(noise * scale)
