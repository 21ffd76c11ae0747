"""Inference-time rewrites that keep the numbers (within float rounding) and save time."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .common import MLPBlock
from .tiny_vit import ConvBN, MBConv, PatchMerging, TokenMLP


def fuse_conv_bn_(module: nn.Module) -> int:
    """Replace every eval-mode Conv2d+BatchNorm2d pair (``ConvBN``) by one Conv2d with the BatchNorm folded
    into its weights and bias, in place. Returns how many were fused. Only for inference: the fused model can
    no longer load the official state dict, so fuse after loading."""
    n = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ConvBN):
                child.eval()
                fused = fuse_conv_bn_eval(child.c, child.bn)
                fused.requires_grad_(False)
                setattr(parent, name, fused)
                n += 1
    return n


def _pointwise_ops_work() -> bool:
    """oneDNN's fused conv/linear + GELU (what torch.compile uses on CPUs); checked once against the plain ops."""
    try:
        conv = nn.Conv2d(4, 8, 1).eval()
        lin = nn.Linear(4, 8).eval()
        x = torch.rand(1, 4, 3, 3).contiguous(memory_format=torch.channels_last)
        t = torch.rand(5, 4)
        with torch.inference_mode():
            a = torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, conv.padding, conv.stride,
                                                        conv.dilation, conv.groups, "gelu", [], "none")
            b = torch.ops.mkldnn._linear_pointwise(t, lin.weight, lin.bias, "gelu", [], "none")
            return bool(torch.allclose(a, F.gelu(conv(x)), atol=1e-5) and torch.allclose(b, F.gelu(lin(t)), atol=1e-5))
    except Exception:  # older torch, no oneDNN, another platform: keep the plain ops
        return False


class ConvGELU(nn.Module):
    """``gelu(conv(x))`` in one oneDNN call on the CPU (exact erf GELU as a post-op)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if x.device.type != "cpu":
            return F.gelu(c(x))
        return torch.ops.mkldnn._convolution_pointwise(x, c.weight, c.bias, c.padding, c.stride, c.dilation,
                                                       c.groups, "gelu", [], "none")


class LinearGELU(nn.Module):
    """``gelu(linear(x))`` in one oneDNN call on the CPU."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return F.gelu(self.linear(x))
        return torch.ops.mkldnn._linear_pointwise(x, self.linear.weight, self.linear.bias, "gelu", [], "none")


def fuse_gelu_(model: nn.Module) -> int:
    """After :func:`fuse_conv_bn_`: fold each GELU that follows a conv / linear of TinyViT into it."""
    n = 0
    for m in model.modules():
        if isinstance(m, (MBConv, PatchMerging)) and isinstance(m.conv1, nn.Conv2d):
            m.conv1, m.act1 = ConvGELU(m.conv1), nn.Identity()
            m.conv2, m.act2 = ConvGELU(m.conv2), nn.Identity()
            n += 2
        elif isinstance(m, TokenMLP):
            m.fc1, m.act = LinearGELU(m.fc1), nn.Identity()
            n += 1
        elif isinstance(m, MLPBlock) and isinstance(m.act, nn.GELU) and isinstance(m.lin1, nn.Linear):
            m.lin1, m.act = LinearGELU(m.lin1), nn.Identity()  # ViT blocks (the decoder's MLPs use ReLU)
            n += 1
    return n


def optimize_for_inference_(model: nn.Module, device: torch.device) -> nn.Module:
    """Fold BatchNorms into convolutions; on the CPU, use channels-last tensors for depthwise-conv models
    (TinyViT) and fuse GELUs into the preceding conv / linear (oneDNN post-ops) where this torch build has them.
    Rewrites the module in place: it can no longer load official state dicts afterwards."""
    fuse_conv_bn_(model)
    if device.type != "cpu":
        return model
    if any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules()):
        model.to(memory_format=torch.channels_last)
        model.channels_last = True
    if _pointwise_ops_work():
        model.fused_gelu = fuse_gelu_(model)
    return model
