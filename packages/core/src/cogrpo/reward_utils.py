"""Helpers every reward implementation uses: input validation and device resolution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def validate_reward_inputs(
    images: torch.Tensor,
    prompts: Sequence[str],
    *,
    tokens: torch.Tensor | None = None,
    metadata: Sequence[dict[str, Any]] | None = None,
) -> None:
    """Raise ``ValueError`` (one line) for an empty batch or mismatched counts/shapes."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a [B, 3, H, W] float tensor in [0, 1], got {shape}")
    if images.shape[0] == 0:
        raise ValueError("empty batch: a reward needs at least one image")
    if len(prompts) != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts; pass one prompt per image")
    if tokens is not None and tokens.shape[0] != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {tokens.shape[0]} token grids")
    if metadata is not None and len(metadata) != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {len(metadata)} metadata entries")


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
