"""Assembled SAM-family models (MedSAM ViT-B, LiteMedSAM) and their configurations."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

import torch
from torch import nn

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .tiny_vit import TinyViTEncoder
from .vit_encoder import ViTImageEncoder


@dataclass(frozen=True)
class SamConfig:
    """``encoder`` is ``vit`` or ``tiny_vit``; ``img_size`` is the encoder input (1024 ViT, 256 Lite)."""

    name: str
    encoder: str
    img_size: int
    encoder_kwargs: Dict = field(default_factory=dict)

    @property
    def embedding_size(self) -> int:
        return 64 if self.encoder == "tiny_vit" else self.img_size // 16


CONFIGS: Dict[str, SamConfig] = {
    "vit_b": SamConfig("vit_b", "vit", 1024, dict(embed_dim=768, depth=12, num_heads=12,
                                                  global_attn_indexes=(2, 5, 8, 11), window_size=14)),
    "vit_l": SamConfig("vit_l", "vit", 1024, dict(embed_dim=1024, depth=24, num_heads=16,
                                                  global_attn_indexes=(5, 11, 17, 23), window_size=14)),
    "vit_h": SamConfig("vit_h", "vit", 1024, dict(embed_dim=1280, depth=32, num_heads=16,
                                                  global_attn_indexes=(7, 15, 23, 31), window_size=14)),
    "lite": SamConfig("lite", "tiny_vit", 256, dict(embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2),
                                                    num_heads=(2, 4, 5, 10), window_sizes=(7, 7, 14, 7))),
    # Reduced ViT for fast equivalence tests in CI: same code paths (windows with padding, global blocks,
    # relative positions), smaller width / depth / input.
    "vit_test": SamConfig("vit_test", "vit", 256, dict(embed_dim=96, depth=4, num_heads=4,
                                                       global_attn_indexes=(1, 3), window_size=6)),
}


class SamModel(nn.Module):
    """image_encoder + prompt_encoder + mask_decoder, as in the official state dicts."""

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        self.config = config
        if config.encoder == "vit":
            self.image_encoder = ViTImageEncoder(img_size=config.img_size, **config.encoder_kwargs)
        elif config.encoder == "tiny_vit":
            self.image_encoder = TinyViTEncoder(img_size=config.img_size, **config.encoder_kwargs)
        else:
            raise ValueError(f"unknown encoder {config.encoder}")
        e = config.embedding_size
        self.prompt_encoder = PromptEncoder(256, (e, e), (config.img_size, config.img_size), 16)
        self.mask_decoder = MaskDecoder(256)

    @property
    def img_size(self) -> int:
        return self.config.img_size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) float in [0, 1] (already normalised as the official pipelines do) -> (N, 256, e, e)."""
        return self.image_encoder(images)

    def decode_boxes(self, embeddings: torch.Tensor, boxes: torch.Tensor,
                     multimask_output: bool = False, all_outputs: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Boxes (B, 4) in encoder-input pixels; embeddings (1 or B, 256, e, e) -> low-res logits, IoU
        (``all_outputs``: the single-mask output first, then the three multimask outputs)."""
        sparse, dense = self.prompt_encoder(boxes=boxes)
        dense = dense.to(embeddings.dtype)
        sparse = sparse.to(embeddings.dtype)
        pe = self.prompt_encoder.get_dense_pe().to(embeddings.dtype)
        return self.mask_decoder(embeddings, pe, sparse, dense, multimask_output=multimask_output,
                                 all_outputs=all_outputs)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.decode_boxes(self.encode(images), boxes)


def build_sam(config_name: str) -> SamModel:
    if config_name not in CONFIGS:
        raise ValueError(f"unknown SAM config '{config_name}' (known: {', '.join(CONFIGS)})")
    return SamModel(CONFIGS[config_name])
