"""Strict, checked loading of checkpoints in the official layouts.

Every checkpoint is read with ``torch.load(weights_only=True)`` (no pickled code runs), compared with the
layout of the model it is meant for, and only then loaded with ``strict=True``. A wrong file gets one line
that says which model was expected and what the file looks like instead.
"""
from __future__ import annotations

import os
import zipfile
from pickle import UnpicklingError
from typing import Dict, Mapping, Optional, Tuple

import torch

from ..devices import pick_device
from ..errors import InputError, WeightsError, clip_text

ARCH_TITLES = {
    "lite": "LiteMedSAM",
    "vit_b": "MedSAM (SAM ViT-B)",
    "vit_l": "SAM ViT-L",
    "vit_h": "SAM ViT-H",
    "vit_test": "reduced test ViT",
    "universeg_v1": "UniverSeg v1",
}
MODEL_ARCH = {"lite-medsam": "lite", "medsam-vit-b": "vit_b", "universeg-v1": "universeg_v1"}
ARCH_MODEL = {v: k for k, v in MODEL_ARCH.items()}


def build_arch(arch: str) -> torch.nn.Module:
    if arch == "universeg_v1":
        from .universeg_fast import build_universeg_v1

        return build_universeg_v1()
    from .sam import build_sam

    return build_sam(arch)


def expected_layout(arch: str) -> Dict[str, Tuple[int, ...]]:
    with torch.device("meta"):
        model = build_arch(arch)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def guess_arch(state: Mapping[str, torch.Tensor]) -> Optional[str]:
    """Recognise the family of a state dict from a few characteristic keys."""
    if "enc_blocks.0.cross.cross_conv.weight" in state:
        return "universeg_v1"
    if "image_encoder.layers.0.blocks.0.conv1.c.weight" in state:
        return "lite"
    pe = state.get("image_encoder.patch_embed.proj.weight")
    if pe is not None and hasattr(pe, "shape"):
        return {768: "vit_b", 1024: "vit_l", 1280: "vit_h", 96: "vit_test"}.get(int(pe.shape[0]))
    return None


def _read(path: str) -> Mapping:
    if not os.path.isfile(path):
        raise WeightsError(f"Weights file not found: {path}: check the path, or run `medseg models list` to see "
                           "installed weights.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            IndexError, TypeError, AttributeError, ImportError) as exc:  # a random file: any unpickling error
        reason = clip_text(str(exc).strip().splitlines()[0], 100) if str(exc).strip() else type(exc).__name__
        if isinstance(exc, UnpicklingError) and "Unsupported operand" in str(exc):
            # torch's weights-only reader knows the opcodes of pickle protocol 2 (torch.save's default); a file
            # saved with protocol 4 or 5 is not damaged, it is in a form the safe reader refuses to interpret
            raise WeightsError(f"Cannot read {path} safely: it was saved with a pickle protocol that PyTorch's "
                               "weights-only reader does not support (torch.save(..., pickle_protocol=4 or 5)); "
                               "load it in a Python you trust and save the state dict again with a plain "
                               "torch.save(state_dict, path), then import that file.") from None
        raise WeightsError(f"Cannot read {path} as a PyTorch checkpoint ({reason}): the file is truncated, damaged "
                           "or not a weights file; download it again (`medseg models fetch NAME`) or import the "
                           "original file (`medseg models import NAME FILE`).") from None
    return obj


def _unwrap(obj) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {}
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def check_layout(state: Mapping[str, torch.Tensor], arch: str, source: str = "checkpoint") -> None:
    """Raise :class:`WeightsError` unless ``state`` has exactly the keys and shapes of ``arch``."""
    title = ARCH_TITLES.get(arch, arch)
    if not state:
        raise WeightsError(f"{source} holds no model weights (expected a {title} state dict): import the original "
                           f"{title} checkpoint file.")
    expected = expected_layout(arch)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if not (missing or unexpected or wrong):
        return
    found = guess_arch(state)
    if found is not None and found != arch:
        hint = ARCH_MODEL.get(found)
        use = f"use it as '{hint}'" if hint else "use the matching model"
        raise WeightsError(f"{source} is not a {title} checkpoint: it looks like a {ARCH_TITLES[found]} checkpoint "
                           f"({len(state)} tensors); {use}, or give the {title} weights.")
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} with wrong shapes (e.g. {k}: expected {list(expected[k])}, found "
                     f"{list(state[k].shape)})")
    raise WeightsError(f"{source} does not match the {title} layout ({len(expected)} tensors expected, "
                       f"{len(state)} found: {'; '.join(parts)}): give an original {title} checkpoint.")


def load_state_dict_checked(path_or_state, arch: str) -> Dict[str, torch.Tensor]:
    """Read (if a path) and check a state dict for ``arch``; returns the tensors ready for ``load_state_dict``."""
    if isinstance(path_or_state, (str, os.PathLike)):
        source = str(path_or_state)
        state = _unwrap(_read(source))
    else:
        source = "checkpoint"
        state = _unwrap(path_or_state)
    check_layout(state, arch, source)
    return dict(state)


def resolve_arch(name_or_path: str, weights: Optional[str]) -> Tuple[str, Optional[str]]:
    """(arch, weights path or None). A bare path is recognised from its contents."""
    key = str(name_or_path)
    if key in MODEL_ARCH:
        return MODEL_ARCH[key], weights
    if key in ARCH_TITLES:
        return key, weights
    if os.path.exists(key):
        arch = guess_arch(_unwrap(_read(key)))
        if arch is None:
            raise WeightsError(f"Cannot tell which model {key} holds: give --model lite-medsam, medsam-vit-b or "
                               "universeg-v1 together with --weights FILE.")
        return arch, key
    raise InputError(f"Unknown model '{name_or_path}': use one of {', '.join(MODEL_ARCH)} or a checkpoint path.")


def load_model(name_or_path, weights=None, device="auto", *, random_init: bool = False) -> torch.nn.Module:
    """Build the model named ``name_or_path`` and load the checkpoint file ``weights`` strictly (path -> module).

    The loader knows no weights store: to find installed weights and enforce licences use
    :func:`medseg_backend.load_model` (``weights.open_model``). ``random_init=True`` skips weights (tests,
    benchmarks). Returns an eval-mode module on ``device`` with gradients off.
    """
    arch, wpath = resolve_arch(name_or_path, weights)
    dev = pick_device(device)
    model = build_arch(arch)
    if not random_init:
        if wpath is None:
            raise WeightsError(f"No weights file for {ARCH_TITLES.get(arch, arch)}: give a checkpoint file (the "
                               "installed weights are found by medseg_backend.load_model).")
        state = load_state_dict_checked(str(wpath), arch)
        model.load_state_dict(state, strict=True)
        model.weights_path = str(wpath)
    model.arch = arch
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(dev)
