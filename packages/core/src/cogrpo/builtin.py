"""Built-in plugins: the tiny test backbone and a weight-free test reward (registered like any plugin)."""

from __future__ import annotations

from typing import Any

from cogrpo import hookimpl


def tiny_backbone(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """Tiny random-weight MDM for tests and smoke runs (any grid, a few layers)."""
    import torch

    from cogrpo.testing.tiny import TinyBackbone

    return TinyBackbone(device=device, dtype=dtype or torch.float32, path=path, **options)


def brightness_reward(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """Mean pixel brightness in [0, 1] (weight-free, for tests and smoke runs)."""
    import torch

    from cogrpo.testing.tiny import BrightnessReward

    return BrightnessReward(device=device, dtype=dtype or torch.float32, **options)


def tiny_head(*, feature_dim: int, feature_grid: tuple[int, int], components: tuple[str, ...], **options: Any):
    """Minimal zero-initialised schedule head on pooled features (for tests)."""
    from cogrpo.testing.tiny import TinyScheduleHead

    return TinyScheduleHead(feature_dim, components, **options)


@hookimpl
def cogrpo_register_schedule_policies() -> dict:
    return {"tiny-head": tiny_head}


@hookimpl
def cogrpo_register_backbones() -> dict:
    return {"tiny": tiny_backbone}


@hookimpl
def cogrpo_register_rewards() -> dict:
    return {"brightness": brightness_reward}
