"""Inference-time rewrites that keep the numbers (within float rounding) and save time."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .tiny_vit import ConvBN


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


def optimize_for_inference_(model: nn.Module, device: torch.device) -> nn.Module:
    """Fold BatchNorms into convolutions and, on the CPU, use channels-last tensors for the conv stages."""
    fuse_conv_bn_(model)
    if device.type == "cpu" and any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules()):
        model.to(memory_format=torch.channels_last)
        model.channels_last = True
    return model
