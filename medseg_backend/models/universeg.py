"""UniverSeg v1 (Butoi et al., ICCV 2023), written for this project from the published architecture facts.

Parameter names and shapes match the official checkpoint ``universeg_v1_nf64_ss64_STA.pt`` exactly, so it loads
with ``load_state_dict(strict=True)``.

Architecture (as in the released code): 4 encoder and 3 decoder *CrossBlocks* of 64 channels. A CrossBlock
applies one shared 3x3 convolution (the *CrossConv*) to ``[query features ; support_j features]`` for every
support item ``j`` (no activation), averages the S results into the new query features, then runs a 3x3 conv +
LeakyReLU(0.01) on the query path and, separately, on every support item. 2x2 max-pooling after encoder
blocks 0-2 (skips taken before pooling), bilinear x2 upsampling with ``align_corners=True`` in the decoder,
whose input is ``[upsampled ; skip]`` on each path; a final 1x1 conv (64 -> 1) on the query path gives logits.

Two execution paths share the same parameters:

* :meth:`UniverSeg.forward_reference` (``fast=False``): the plain formulation above, tensor for tensor. Used
  as the numerical reference and as the benchmark baseline.
* :meth:`UniverSeg.forward_fast` (default): the same function, computed with far fewer operations:

  - the CrossConv is linear in its concatenated input, ``conv(W, [u; v]) = conv(W_u, u) + conv(W_v, v) + b``,
    so the query part is computed once instead of S times;
  - the new query is a *mean* of linear functions of the support items, so
    ``mean_j conv(W_v, v_j) = conv(W_v, mean_j v_j)``; the query path therefore only needs the mean of the
    support features. The last decoder block's support outputs are never used, so that block needs no
    per-item work at all, and the full-resolution encoder skip is only needed as a mean (it feeds that block
    only). This removes ~45 % of the per-item arithmetic on top of the split;
  - block 0's support path is ``lrelu(conv_s(conv_v([image; label]) + conv_q(query) + b) + b_s)``; both
    convolutions are linear, so ``conv_s(conv_v([image; label]))`` is query-independent: computed once per support set
    (:meth:`UniverSeg.prepare_support`) and every query slice only adds its own (1, 64, H, W) term. This removes
    the largest per-item convolution from the per-query cost;
  - the support items are processed in chunks (``chunk_size``, kept as channels-last chunk lists between
    blocks, no copies) so memory stays bounded for any S;
  - ``compute_dtype`` (``torch.bfloat16`` on CPUs with bf16 units, ``torch.float16`` / ``bfloat16`` on CUDA)
    runs the per-item convolutions in reduced precision; sums and the query path stay in float32. It is off by
    default: it changes a few thresholded pixels on the reference cases (see the README's benchmark table).
  - On CUDA the float32 paths run with TF32 disabled (:func:`strict_fp32`).

Per query at S=64 and 128 x 128 the plain formulation costs ~660 GFLOP, the fast one ~130 GFLOP.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import List, Optional

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


@dataclass
class _SplitWeights:
    """One CrossBlock's weights, split for the fast path: CrossConv query half ``w_q`` + bias ``b`` (float32),
    support half ``w_v`` and the support conv ``w_s``/``b_s`` (compute dtype), target conv ``w_t``/``b_t``."""

    cq: int
    w_q: torch.Tensor
    b: torch.Tensor
    w_v: torch.Tensor
    w_s: torch.Tensor
    b_s: torch.Tensor
    w_t: torch.Tensor
    b_t: torch.Tensor

    @staticmethod
    def of(blk: "_CrossBlock", dtype: torch.dtype) -> "_SplitWeights":
        wc = blk.cross.cross_conv.weight.detach()
        cq = blk.cross.query_ch
        s, t = blk.support.vmapped.conv, blk.target.vmapped.conv
        return _SplitWeights(cq, wc[:, :cq].contiguous(), blk.cross.cross_conv.bias.detach(),
                             wc[:, cq:].to(dtype).contiguous(), s.weight.detach().to(dtype),
                             s.bias.detach().to(dtype), t.weight.detach(), t.bias.detach())


@dataclass
class SupportCache:
    """Query-independent work on one support set, reused for every query slice.

    Block 0 of the support path is ``lrelu(conv_s(conv_v([image; label]) + conv_q(query) + b) + b_s)``. Both
    convolutions are linear, so ``conv_s(conv_v([image; label]))`` does not depend on the query: it is stored
    per item in ``level0`` (S, 64, H, W; compute dtype, channels-last) and only a per-query (1, 64, H, W) term is
    added later. ``cross0_mean`` is the mean over items of ``conv_v([image; label])`` (1, 64, H, W; float32),
    which is all the query path of block 0 needs.
    """

    level0: torch.Tensor
    cross0_mean: torch.Tensor
    size: int
    shape: tuple
    dtype: torch.dtype
    weights: list  # per block: _SplitWeights, prepared once per support set
    _scratch: Optional[torch.Tensor] = None

    def scratch(self, n: int) -> torch.Tensor:
        """A reusable (n, C, H, W) work buffer like ``level0`` (allocated once per support set)."""
        if self._scratch is None or self._scratch.shape[0] < n:
            self._scratch = torch.empty((n,) + tuple(self.level0.shape[1:]), device=self.level0.device,
                                        dtype=self.level0.dtype, memory_format=torch.channels_last)
        return self._scratch

    @property
    def nbytes(self) -> int:
        return self.level0.numel() * self.level0.element_size() + self.cross0_mean.numel() * 4


class UniverSeg(nn.Module):
    """UniverSeg v1. ``forward(target_image (B,1,H,W), support_images (B,S,1,H,W), support_labels (B,S,1,H,W))``
    returns logits (B,1,H,W); H = W, a multiple of 8 (trained at 128)."""

    def __init__(self, features: int = NF, fast: bool = True, chunk_size: int = 16,
                 compute_dtype: Optional[torch.dtype] = None) -> None:
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
        self.fast = fast
        self.chunk_size = int(chunk_size)
        self.compute_dtype = compute_dtype

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
        if self.fast:
            return self.forward_fast(target_image, support_images, support_labels)
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
            query = _per_item(lambda t: F.max_pool2d(t, 2), query)
            support = _per_item(lambda t: F.max_pool2d(t, 2), support)
        for block in self.dec_blocks:
            q_skip, s_skip = skips.pop()
            query = torch.cat([_per_item(_up2, query), q_skip], dim=2)
            support = torch.cat([_per_item(_up2, support), s_skip], dim=2)
            query, support = block(query, support)
        return self.out_conv(query[:, 0])

    # -------------------------------------------------------------------- fast
    def _dtype(self) -> torch.dtype:
        return self.compute_dtype or torch.float32

    @torch.no_grad()
    def prepare_support(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> SupportCache:
        """Precompute the query-independent work for one support set: (S,1,H,W) or (1,S,1,H,W) tensors."""
        if support_images.dim() == 5:
            if support_images.shape[0] != 1 or support_labels.dim() != 5:
                raise ValueError("prepare_support takes one support set: (S,1,H,W) or (1,S,1,H,W)")
            support_images, support_labels = support_images[0], support_labels[0]
        if (support_images.dim() != 4 or support_images.shape[1] != 1
                or support_labels.shape != support_images.shape or support_images.shape[0] < 1):
            raise ValueError(f"support must be (S,1,H,W) with S >= 1, got {tuple(support_images.shape)} / "
                             f"{tuple(support_labels.shape)}")
        h, w = support_images.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(f"UniverSeg needs H and W divisible by 8, got {h}x{w}")
        dtype = self._dtype()
        with strict_fp32(self._device(), dtype == torch.float32):
            return self._prepare_support(support_images, support_labels, dtype)

    def _prepare_support(self, support_images, support_labels, dtype) -> SupportCache:
        h, w = support_images.shape[-2:]
        weights = [_SplitWeights.of(b, dtype) for b in (*self.enc_blocks, *self.dec_blocks)]
        sw = weights[0]
        dev = sw.w_q.device
        n, c = support_images.shape[0], sw.w_q.shape[0]
        level0 = torch.empty((n, c, h, w), device=dev, dtype=dtype, memory_format=torch.channels_last)
        total = torch.zeros((1, c, h, w), device=dev, dtype=torch.float32)
        w_v32 = sw.w_v.float()
        for a in range(0, n, self.chunk_size):
            e = min(a + self.chunk_size, n)
            x = torch.cat([support_images[a:e], support_labels[a:e]], dim=1).to(dev, torch.float32)
            v = F.conv2d(x.contiguous(memory_format=torch.channels_last), w_v32, None, padding=1)
            total += _item_sum(v)                                              # CrossConv, support half
            level0[a:e] = F.conv2d(v.to(dtype), sw.w_s, None, padding=1)       # support conv, linear part
        return SupportCache(level0=level0, cross0_mean=total / n, size=n, shape=(h, w), dtype=dtype,
                            weights=weights)

    def forward_fast(self, target_image: torch.Tensor, support_images: torch.Tensor,
                     support_labels: torch.Tensor) -> torch.Tensor:
        """Same function as :meth:`forward_reference`, computed with the savings in the module docstring."""
        self._check_inputs(target_image, support_images, support_labels)
        outs = []
        for b in range(target_image.shape[0]):
            cache = self.prepare_support(support_images[b], support_labels[b])
            outs.append(self.predict_with_support(target_image[b:b + 1], cache))
        return torch.cat(outs, 0)

    @torch.no_grad()
    def predict_with_support(self, target_image: torch.Tensor, cache: SupportCache) -> torch.Tensor:
        """Logits (B,1,H,W) float32 for queries (B,1,H,W) that share the support set in ``cache``."""
        if target_image.dim() != 4 or target_image.shape[1] != 1:
            raise ValueError(f"target_image must be (B,1,H,W), got {tuple(target_image.shape)}")
        if tuple(target_image.shape[-2:]) != cache.shape:
            raise ValueError(f"query size {tuple(target_image.shape[-2:])} does not match the support {cache.shape}")
        with strict_fp32(cache.level0.device, cache.dtype == torch.float32):
            return torch.cat([self._predict_one(target_image[b:b + 1], cache)
                              for b in range(target_image.shape[0])], 0)

    def _predict_one(self, target: torch.Tensor, cache: SupportCache) -> torch.Tensor:
        ws = cache.weights
        n_enc = len(self.enc_blocks)
        dtype = cache.dtype
        dev = cache.level0.device
        cl = torch.channels_last
        target = target.to(dev, torch.float32)
        n, chunk = cache.size, max(1, self.chunk_size)

        # ---- encoder block 0: per item only an add, LeakyReLU, pooling and a running sum remain
        sw = ws[0]
        q_part = F.conv2d(target, sw.w_q, sw.b, padding=1)                  # query half of the CrossConv + b
        query = _lrelu(F.conv2d(q_part + cache.cross0_mean, sw.w_t, sw.b_t, padding=1))
        q_term = F.conv2d(q_part.to(dtype), sw.w_s, sw.b_s, padding=1).contiguous(memory_format=cl)
        h, w = cache.shape
        c = q_term.shape[1]
        skip_sum = torch.zeros((1, c, h, w), device=dev, dtype=torch.float32)
        scratch = cache.scratch(min(chunk, n))       # reused across chunks and queries (no page faults)
        support = []                                 # the support side stays a list of chunks: no copies
        for a in range(0, n, chunk):
            e = min(a + chunk, n)
            sup = torch.add(cache.level0[a:e], q_term, out=scratch[:e - a])
            F.leaky_relu_(sup, NEG_SLOPE)
            skip_sum += _item_sum(sup)
            support.append(F.max_pool2d(sup, 2))
        skip0_q, skip0_s_mean = query, skip_sum / n   # the level-0 support skip is only ever used as a mean
        query = F.max_pool2d(query, 2)

        # ---- encoder blocks 1..3
        skips = []
        for i in range(1, n_enc):
            query, support = _block_fast(ws[i], query, support, None, dtype, n)
            if i < n_enc - 1:
                skips.append((query, support))
                query = F.max_pool2d(query, 2)
                support = [F.max_pool2d(x, 2) for x in support]

        # ---- decoder blocks 0..1 (their per-item support outputs feed the next block)
        for sw in ws[n_enc:-1]:
            q_skip, s_skip = skips.pop()
            query = torch.cat([_up2(query), q_skip], dim=1)
            query, support = _block_fast(sw, query, support, s_skip, dtype, n)

        # ---- last decoder block: only its query output is used, so the support side is just a mean
        sw = ws[-1]
        query = torch.cat([_up2(query), skip0_q], dim=1)
        s_mean = torch.cat([_up2(sum(_item_sum(x) for x in support) / n), skip0_s_mean], dim=1)
        inter = F.conv2d(query, sw.w_q, sw.b, padding=1) + F.conv2d(s_mean, sw.w_v.float(), None, padding=1)
        query = _lrelu(F.conv2d(inter, sw.w_t, sw.b_t, padding=1))
        return self.out_conv(query).contiguous()


def _block_fast(sw: _SplitWeights, query: torch.Tensor, support: List[torch.Tensor],
                skip: Optional[List[torch.Tensor]], dtype: torch.dtype, n: int):
    """One CrossBlock with the split CrossConv. ``query`` (1,Cq,h,w) float32; ``support`` chunks (s,C,h',w') in
    ``dtype``, channels-last, ``n`` items in all; with ``skip`` (decoder) the support input is
    ``[upsample(support); skip]``. Returns the new query and the support output chunks."""
    q_part = F.conv2d(query, sw.w_q, sw.b, padding=1)                       # query half + bias, once
    q_term = q_part.to(dtype).contiguous(memory_format=torch.channels_last)
    h, w = q_part.shape[-2:]
    v_sum = torch.zeros((1, sw.w_v.shape[0], h, w), device=q_part.device, dtype=torch.float32)
    out = []
    for i, x in enumerate(support):
        if skip is not None:
            x = torch.cat([_up2(x), skip[i]], dim=1)
        v = F.conv2d(x, sw.w_v, None, padding=1)                            # support half, per item
        v_sum += _item_sum(v)
        v += q_term
        out.append(F.leaky_relu_(F.conv2d(v, sw.w_s, sw.b_s, padding=1), NEG_SLOPE))
    new_query = _lrelu(F.conv2d(q_part + v_sum / n, sw.w_t, sw.b_t, padding=1))
    return new_query, out


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


def _item_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the items of a channels-last (n, C, H, W) tensor -> (1, C, H, W) float32, as one GEMM with a
    row of ones (several times faster than ``Tensor.sum(0)`` on channels-last data)."""
    n, c, h, w = x.shape
    flat = x.permute(0, 2, 3, 1).reshape(n, h * w * c)
    total = torch.ones((1, n), dtype=x.dtype, device=x.device) @ flat
    return total.float().view(1, h, w, c).permute(0, 3, 1, 2)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, NEG_SLOPE)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


def _per_item(fn, x: torch.Tensor) -> torch.Tensor:
    b, s = x.shape[:2]
    y = fn(x.reshape(b * s, *x.shape[2:]))
    return y.reshape(b, s, *y.shape[1:])


def build_universeg_v1(**kwargs) -> UniverSeg:
    """UniverSeg v1 (64 features, 1,182,785 parameters), official parameter names; eval mode, random weights."""
    model = UniverSeg(features=NF, **kwargs)
    return model.eval()
