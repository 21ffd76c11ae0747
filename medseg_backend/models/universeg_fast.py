"""The fast path of UniverSeg v1: the same function as :mod:`.universeg`'s network, with far fewer operations.

:class:`UniverSegFast` is the reference network (same parameters, same ``state_dict``) plus
:meth:`~UniverSegFast.prepare_support` / :meth:`~UniverSegFast.predict_with_support`; its ``forward`` runs the
fast formulation, ``forward_reference`` the plain one. The savings:

  - the CrossConv is linear in its concatenated input, ``conv(W, [u; v]) = conv(W_u, u) + conv(W_v, v) + b``,
    so the query part is computed once instead of S times;
  - the new query is a *mean* of linear functions of the support items, so
    ``mean_j conv(W_v, v_j) = conv(W_v, mean_j v_j)``; the query path therefore only needs the mean of the
    support features. The last decoder block's support outputs are never used, so that block needs no
    per-item work at all, and the full-resolution encoder skip is only needed as a mean (it feeds that block
    only). This removes ~45 % of the per-item arithmetic on top of the split;
  - block 0's support path is ``lrelu(conv_s(conv_v([image; label]) + conv_q(query) + b) + b_s)``; both
    convolutions are linear, so ``conv_s(conv_v([image; label]))`` is query-independent: computed once per support set
    (:meth:`UniverSegFast.prepare_support`) and every query slice only adds its own (1, 64, H, W) term. This removes
    the largest per-item convolution from the per-query cost;
  - the support items are processed in chunks (``chunk_size``, kept as channels-last chunk lists between
    blocks, no copies) so memory stays bounded for any S;
  - ``compute_dtype`` (``torch.bfloat16`` on CPUs with bf16 units, ``torch.float16`` / ``bfloat16`` on CUDA)
    runs the per-item convolutions in reduced precision; sums and the query path stay in float32. It is off by
    default: it changes a few thresholded pixels on the reference cases (see the tables in BENCHMARKS.md).
  - On CUDA the float32 paths run with TF32 disabled (:func:`strict_fp32`).

Per query at S=64 and 128 x 128 the plain formulation costs ~660 GFLOP, the fast one ~130 GFLOP.

:class:`QueryGraph` is the per-query work as one traceable module (support size a dynamic dimension) for a graph
export; through OpenVINO it reaches the same masks but is no faster (BENCHMARKS.md), so the product runs torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F

from .universeg import NEG_SLOPE, NF, UniverSeg, _CrossBlock, lrelu, strict_fp32, up2


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
    reuse_buffer: bool = True  # False: no in-place work buffer (a graph export traces plain adds)
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


class UniverSegFast(UniverSeg):
    """UniverSeg v1 whose ``forward`` is the fast formulation (``fast=False``: the plain one). ``chunk_size``:
    support items per chunk; ``compute_dtype``: reduced precision for the per-item convolutions (None = fp32)."""

    def __init__(self, features: int = NF, fast: bool = True, chunk_size: int = 16,
                 compute_dtype: Optional[torch.dtype] = None) -> None:
        super().__init__(features)
        self.fast = fast
        self.chunk_size = int(chunk_size)
        self.compute_dtype = compute_dtype

    def forward(self, target_image: torch.Tensor, support_images: torch.Tensor,
                support_labels: torch.Tensor) -> torch.Tensor:
        if self.fast:
            return self.forward_fast(target_image, support_images, support_labels)
        return self.forward_reference(target_image, support_images, support_labels)

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

    def _predict_one(self, target: torch.Tensor, cache: SupportCache, chunk: Optional[int] = None) -> torch.Tensor:
        ws = cache.weights
        n_enc = len(self.enc_blocks)
        dtype = cache.dtype
        dev = cache.level0.device
        cl = torch.channels_last
        target = target.to(dev, torch.float32)
        n, chunk = cache.size, max(1, chunk or self.chunk_size)

        # ---- encoder block 0: per item only an add, LeakyReLU, pooling and a running sum remain
        sw = ws[0]
        q_part = F.conv2d(target, sw.w_q, sw.b, padding=1)                  # query half of the CrossConv + b
        query = lrelu(F.conv2d(q_part + cache.cross0_mean, sw.w_t, sw.b_t, padding=1))
        q_term = F.conv2d(q_part.to(dtype), sw.w_s, sw.b_s, padding=1).contiguous(memory_format=cl)
        h, w = cache.shape
        c = q_term.shape[1]
        skip_sum = torch.zeros((1, c, h, w), device=dev, dtype=torch.float32)
        scratch = cache.scratch(min(chunk, n)) if cache.reuse_buffer else None  # reused: no page faults
        support = []                                 # the support side stays a list of chunks: no copies
        for a in range(0, n, chunk):
            e = min(a + chunk, n)
            sup = ((cache.level0 if e - a == n else cache.level0[a:e]) + q_term if scratch is None
                   else torch.add(cache.level0[a:e], q_term, out=scratch[:e - a]))
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
            query = torch.cat([up2(query), q_skip], dim=1)
            query, support = _block_fast(sw, query, support, s_skip, dtype, n)

        # ---- last decoder block: only its query output is used, so the support side is just a mean
        sw = ws[-1]
        query = torch.cat([up2(query), skip0_q], dim=1)
        s_mean = torch.cat([up2(sum(_item_sum(x) for x in support) / n), skip0_s_mean], dim=1)
        inter = F.conv2d(query, sw.w_q, sw.b, padding=1) + F.conv2d(s_mean, sw.w_v.float(), None, padding=1)
        query = lrelu(F.conv2d(inter, sw.w_t, sw.b_t, padding=1))
        return self.out_conv(query).contiguous()


class QueryGraph(torch.nn.Module):
    """The per-query work of :meth:`UniverSegFast.predict_with_support` as one traceable module (for a graph
    export such as :func:`medseg_backend.runtime.openvino_model`): ``forward(query (1,1,H,W), level0 (S,64,H,W),
    cross0_mean (1,64,H,W))`` -> logits (1,1,H,W), float32, the support set's :class:`SupportCache` fields as
    inputs. All S items form one chunk and no work buffer is reused, so the graph has no loop over S and S can
    stay a dynamic dimension of the export (one export for every support size at a given H x W)."""

    def __init__(self, net: "UniverSegFast") -> None:
        super().__init__()
        self.net = net
        self._weights = [_SplitWeights.of(b, torch.float32) for b in (*net.enc_blocks, *net.dec_blocks)]

    def forward(self, query: torch.Tensor, level0: torch.Tensor, cross0_mean: torch.Tensor) -> torch.Tensor:
        n = level0.shape[0]
        cache = SupportCache(level0=level0, cross0_mean=cross0_mean, size=n, shape=tuple(query.shape[-2:]),
                             dtype=torch.float32, weights=self._weights, reuse_buffer=False)
        return self.net._predict_one(query, cache, chunk=n)


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
            x = torch.cat([up2(x), skip[i]], dim=1)
        v = F.conv2d(x, sw.w_v, None, padding=1)                            # support half, per item
        v_sum += _item_sum(v)
        v += q_term
        out.append(F.leaky_relu_(F.conv2d(v, sw.w_s, sw.b_s, padding=1), NEG_SLOPE))
    new_query = lrelu(F.conv2d(q_part + v_sum / n, sw.w_t, sw.b_t, padding=1))
    return new_query, out


def _item_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the items of a channels-last (n, C, H, W) tensor -> (1, C, H, W) float32, as one GEMM with a
    row of ones (several times faster than ``Tensor.sum(0)`` on channels-last data)."""
    n, c, h, w = x.shape
    flat = x.permute(0, 2, 3, 1).reshape(n, h * w * c)
    total = torch.ones((1, n), dtype=x.dtype, device=x.device) @ flat
    return total.float().view(1, h, w, c).permute(0, 3, 1, 2)


def build_universeg_v1(**kwargs) -> UniverSegFast:
    """UniverSeg v1 (64 features, 1,182,785 parameters), official parameter names, fast path; eval mode, random
    weights (``kwargs``: ``fast``, ``chunk_size``, ``compute_dtype``)."""
    model = UniverSegFast(features=NF, **kwargs)
    return model.eval()
