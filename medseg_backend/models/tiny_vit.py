"""TinyViT image encoder as configured in LiteMedSAM ("MedSAM on Laptop").

Architecture facts (MODEL_FACTS.md): a 256x256 input, a patch embedding of two 1x1 stride-1 Conv+BN layers
(3 -> 32 -> 64, GELU between; no downsampling), stage 0 of MBConv blocks, stages 1-3 of TinyViT blocks
(windowed attention with learned per-head offset biases, a depthwise 3x3 Conv+BN, an MLP), patch merging
between stages (stride 2, except into the 320-channel stage: stride 1), stage resolutions 256/128/64/64,
and SAM's neck to 256x64x64. Windowed attention zero-pads the map; padded tokens are not masked.

The attention-bias index table is rebuilt from the window size (it is not stored in checkpoints) and the
gathered biases are never cached, so loading weights after ``.eval()`` is safe.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import neck


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (parameter names ``c`` and ``bn``)."""

    def __init__(self, cin: int, cout: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, ks, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_chans, dim // 2, 1), nn.GELU(), ConvBN(dim // 2, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    def __init__(self, dim: int, expand: float) -> None:
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(dim, hidden, 1)
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = ConvBN(hidden, dim, 1)
        # one activation module per use (no parameters): inference rewrites can fuse act1/act2 into the convs
        self.act1, self.act2, self.act3 = nn.GELU(), nn.GELU(), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        y = self.conv3(y)
        return self.act3(x + y)


class PatchMerging(nn.Module):
    """(N, C, H, W) or tokens -> tokens (N, H'W', C_out)."""

    def __init__(self, resolution: int, dim: int, out_dim: int) -> None:
        super().__init__()
        self.resolution = resolution
        stride = 1 if out_dim in (320, 448, 576) else 2
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)
        self.act1, self.act2 = nn.GELU(), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            n = x.shape[0]
            # tokens (B, H*W, C) seen as an (B, C, H, W) tensor in channels-last layout: a view, no copy
            x = x.reshape(n, self.resolution, self.resolution, -1).permute(0, 3, 1, 2)
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        x = self.conv3(x)
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def _offset_index(window: int) -> torch.Tensor:
    """Index of the bias of each (query, key) pair in a window: offsets (|dy|, |dx|) in first-seen order."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    dy = (ys[:, None] - ys[None, :]).abs()
    dx = (xs[:, None] - xs[None, :]).abs()
    # Enumerating pairs from the first point (0, 0) meets every offset (a, b) in row-major order.
    return dy * window + dx


class WindowAttention(nn.Module):
    def __init__(self, dim: int, key_dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, num_heads * key_dim * 3)
        self.proj = nn.Linear(num_heads * key_dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("bias_index", _offset_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        b, n, _ = x.shape
        x = self.norm(x)
        q, k, v = self.qkv(x).view(b, n, self.num_heads, 3 * self.key_dim).split(self.key_dim, dim=3)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        bias = self.attention_biases[:, self.bias_index].to(q.dtype)  # (heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0), scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.key_dim))


class TokenMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, mlp_ratio: float,
                 local_conv: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = WindowAttention(dim, dim // num_heads, num_heads, window)
        self.mlp = TokenMLP(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, local_conv, 1, local_conv // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # tokens (B, H*W, C)
        h = w = self.resolution
        b, n, c = x.shape
        ws = self.window
        if h == ws and w == ws:
            y = self.attn(x)
        else:
            y = x.view(b, h, w, c)
            ph, pw = (ws - h % ws) % ws, (ws - w % ws) % ws
            if ph or pw:
                y = F.pad(y, (0, 0, 0, pw, 0, ph))
            hp, wp = h + ph, w + pw
            nh, nw = hp // ws, wp // ws
            y = y.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
            y = self.attn(y)
            y = y.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, hp, wp, c)
            y = y[:, :h, :w].reshape(b, n, c)
        x = x + y
        # tokens <-> (B, C, H, W) as channels-last views (no copies around the depthwise conv)
        x = self.local_conv(x.reshape(b, h, w, c).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(b, n, c)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    def __init__(self, dim: int, out_dim: int, resolution: int, depth: int, expand: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand) for _ in range(depth))
        self.downsample = PatchMerging(resolution, dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x)


class AttnStage(nn.Module):
    def __init__(self, dim: int, out_dim: int, resolution: int, depth: int, num_heads: int, window: int,
                 mlp_ratio: float, local_conv: int, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, resolution, num_heads, window, mlp_ratio, local_conv) for _ in range(depth))
        self.downsample = PatchMerging(resolution, dim, out_dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class TinyViTEncoder(nn.Module):
    """(N, 3, 256, 256) -> (N, 256, 64, 64)."""

    def __init__(self, img_size: int = 256, embed_dims: Sequence[int] = (64, 128, 160, 320),
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (2, 4, 5, 10),
                 window_sizes: Sequence[int] = (7, 7, 14, 7), mlp_ratio: float = 4.0, mbconv_expand: float = 4.0,
                 local_conv: int = 3, out_chans: int = 256) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(3, embed_dims[0])
        res = img_size  # no downsampling in this patch embedding
        layers = []
        for i, depth in enumerate(depths):
            stage_res = res // (2 ** (i - 1 if i == 3 else i))
            out_dim = embed_dims[min(i + 1, len(embed_dims) - 1)]
            if i == 0:
                layers.append(ConvStage(embed_dims[0], out_dim, stage_res, depth, mbconv_expand))
            else:
                layers.append(AttnStage(embed_dims[i], out_dim, stage_res, depth, num_heads[i], window_sizes[i],
                                        mlp_ratio, local_conv, downsample=i < len(depths) - 1))
        self.layers = nn.ModuleList(layers)
        self.out_res = img_size // 4
        self.neck = neck(embed_dims[-1], out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        n, _, c = x.shape
        x = x.view(n, self.out_res, self.out_res, c).permute(0, 3, 1, 2)
        return self.neck(x)
