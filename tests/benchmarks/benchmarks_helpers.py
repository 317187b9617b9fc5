"""Helpers for the benchmark tests: constant-colour images and an injectable reward."""

from __future__ import annotations

from pathlib import Path

import torch

from cogrpo.protocols import RewardOutput

FIXTURES = Path(__file__).parents[1] / "fixtures"


def solid(n: int, levels: list[int] | int, size: int = 8) -> torch.Tensor:
    """``[n, 3, size, size]`` images; image i has every pixel at ``levels[i] / 255`` (exact in 8 bits)."""
    levels = [levels] * n if isinstance(levels, int) else levels
    return torch.stack([torch.full((3, size, size), lv / 255.0) for lv in levels])


class MeanPixelReward:
    """Reward = mean pixel value (a weight-free oracle the tests can compute by hand)."""

    def __init__(self, name: str = "meanpixel", version: str | None = None) -> None:
        self.name = name
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.calls: list[int] = []
        if version is not None:
            self.version = version

    def __call__(self, images, prompts, *, tokens=None, metadata=None) -> RewardOutput:
        assert images.shape[0] == len(prompts)
        self.calls.append(images.shape[0])
        return RewardOutput(scores=images.float().mean(dim=(1, 2, 3)))
