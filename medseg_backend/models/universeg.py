"""UniverSeg v1 (Butoi et al., ICCV 2023), written for this project from the published architecture facts.

Parameter names and shapes match the official checkpoint ``universeg_v1_nf64_ss64_STA.pt`` exactly, so it loads
with ``load_state_dict(strict=True)``.

Architecture (as in the released code): 4 encoder and 3 decoder *CrossBlocks* of 64 channels. A CrossBlock
applies one shared 3x3 convolution (the *CrossConv*) to ``[query features ; support_j features]`` for every
support item ``j`` (no activation), averages the S results into the new query features, then runs a 3x3 conv +
LeakyReLU(0.01) on the query path and, separately, on every support item. 2x2 max-pooling after encoder
blocks 0-2 (skips taken before pooling), bilinear x2 upsampling with ``align_corners=True`` in the decoder,
whose input is ``[upsampled ; skip]`` on each path; a final 1x1 conv (64 -> 1) on the query path gives logits.

This module is that network, tensor for tensor (every query-support pair materialised, float32): the numerical
reference and the benchmark baseline. The product runs the same parameters through the algebraically equal,
~5x cheaper formulation in :mod:`.universeg_fast`.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

UNIVERSEG_V1_PARAMS = 1182785
NF = 64
NEG_SLOPE = 0.01


class _ConvOp(nn.Module):
    """Conv2d (+ optional LeakyReLU); parameters under ``.conv`` as in the official layout."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, activation: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=kernel_size, padding=kernel_size // 2, bias=True)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.leaky_relu(x, NEG_SLOPE) if self.activation else x


class _PerItem(nn.Module):
    """Applies ``vmapped`` to each item of a (B, S, C, H, W) tensor (key prefix ``.vmapped``)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.vmapped = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s = x.shape[:2]
        y = self.vmapped(x.reshape(b * s, *x.shape[2:]))
        return y.reshape(b, s, *y.shape[1:])


class _CrossOp(nn.Module):
    """The shared CrossConv (no activation). Parameters: ``cross_conv.weight`` / ``cross_conv.bias``."""

    def __init__(self, query_ch: int, support_ch: int, out_ch: int) -> None:
        super().__init__()
        self.query_ch = query_ch
        self.support_ch = support_ch
        self.cross_conv = nn.Conv2d(query_ch + support_ch, out_ch, kernel_size=3, padding=1, bias=True)

    def forward(self, query: torch.Tensor, support: torch.Tensor):
        """query (B, 1, Cq, H, W), support (B, S, Cs, H, W) -> interaction (B, S, C, H, W)."""
        b, s = support.shape[:2]
        pairs = torch.cat([query.expand(b, s, *query.shape[2:]), support], dim=2)
        out = self.cross_conv(pairs.reshape(b * s, *pairs.shape[2:]))
        return out.reshape(b, s, *out.shape[1:])


class _CrossBlock(nn.Module):
    def __init__(self, query_ch: int, support_ch: int, features: int = NF) -> None:
        super().__init__()
        self.cross = _CrossOp(query_ch, support_ch, features)
        self.target = _PerItem(_ConvOp(features, features))
        self.support = _PerItem(_ConvOp(features, features))

    def forward(self, query: torch.Tensor, support: torch.Tensor):
        interaction = self.cross(query, support)
        query = interaction.mean(dim=1, keepdim=True)
        return self.target(query), self.support(interaction)


class UniverSeg(nn.Module):
    """UniverSeg v1. ``forward(target_image (B,1,H,W), support_images (B,S,1,H,W), support_labels (B,S,1,H,W))``
    returns logits (B,1,H,W); H = W, a multiple of 8 (trained at 128)."""

    def __init__(self, features: int = NF) -> None:
        super().__init__()
        f = features
        self.enc_blocks = nn.ModuleList([
            _CrossBlock(1, 2, f),
            _CrossBlock(f, f, f),
            _CrossBlock(f, f, f),
            _CrossBlock(f, f, f),
        ])
        self.dec_blocks = nn.ModuleList([_CrossBlock(2 * f, 2 * f, f) for _ in range(3)])
        self.out_conv = _ConvOp(f, 1, kernel_size=1, activation=False)

    # ------------------------------------------------------------------ common
    @staticmethod
    def _check_inputs(target: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> None:
        if target.dim() != 4 or target.shape[1] != 1:
            raise ValueError(f"target_image must be (B,1,H,W), got {tuple(target.shape)}")
        if images.dim() != 5 or images.shape[2] != 1 or labels.shape != images.shape:
            raise ValueError(f"support images/labels must both be (B,S,1,H,W), got {tuple(images.shape)} and "
                             f"{tuple(labels.shape)}")
        if images.shape[0] != target.shape[0] or images.shape[-2:] != target.shape[-2:]:
            raise ValueError(f"support {tuple(images.shape)} does not match target {tuple(target.shape)}")
        h, w = target.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(f"UniverSeg needs H and W divisible by 8, got {h}x{w}")

    def forward(self, target_image: torch.Tensor, support_images: torch.Tensor,
                support_labels: torch.Tensor) -> torch.Tensor:
        return self.forward_reference(target_image, support_images, support_labels)

    def _device(self) -> torch.device:
        return self.out_conv.conv.weight.device

    # --------------------------------------------------------------- reference
    def forward_reference(self, target_image: torch.Tensor, support_images: torch.Tensor,
                          support_labels: torch.Tensor) -> torch.Tensor:
        """Plain formulation, equal to the released implementation (float32, every pair materialised)."""
        self._check_inputs(target_image, support_images, support_labels)
        with strict_fp32(self._device()):
            return self._forward_reference(target_image, support_images, support_labels)

    def _forward_reference(self, target_image, support_images, support_labels) -> torch.Tensor:
        query = target_image.unsqueeze(1)  # (B, 1, 1, H, W)
        support = torch.cat([support_images, support_labels], dim=2)
        skips = []
        n_enc = len(self.enc_blocks)
        for i, block in enumerate(self.enc_blocks):
            query, support = block(query, support)
            if i == n_enc - 1:
                break
            skips.append((query, support))
            query = per_item(lambda t: F.max_pool2d(t, 2), query)
            support = per_item(lambda t: F.max_pool2d(t, 2), support)
        for block in self.dec_blocks:
            q_skip, s_skip = skips.pop()
            query = torch.cat([per_item(up2, query), q_skip], dim=2)
            support = torch.cat([per_item(up2, support), s_skip], dim=2)
            query, support = block(query, support)
        return self.out_conv(query[:, 0])


@contextlib.contextmanager
def strict_fp32(device: torch.device, enable: bool = True):
    """On CUDA, run float32 convolutions / matrix products in true fp32 (torch lets cuDNN use TF32 for
    convolutions by default, a 10-bit mantissa). The flags are global; they are restored afterwards."""
    if not enable or torch.device(device).type != "cuda":
        yield
        return
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, NEG_SLOPE)


def up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


def per_item(fn, x: torch.Tensor) -> torch.Tensor:
    b, s = x.shape[:2]
    y = fn(x.reshape(b * s, *x.shape[2:]))
    return y.reshape(b, s, *y.shape[1:])
