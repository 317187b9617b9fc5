"""Hand-designed (fixed) inference schedules.

``CosineSchedule`` is Meissonic's / aMUSEd's default (``gamma = 1``) and the cosine-γ family of the
paper's Table 2: ``r_k = cos(π/2 · (k+1)/T) ** γ``. The re-mask temperature is a linspace from
``remask_temperature[0]`` to ``remask_temperature[1]`` over the T steps, as diffusers'
``AmusedScheduler.set_timesteps`` builds it; sampling temperature and CFG scale are constants.

Values are computed with the same float32 torch operations as ``AmusedScheduler.step`` so that the
sampler reproduces the reference token for token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CosineSchedule:
    """Cosine^γ re-mask ratio, linear re-mask temperature, constant τs and CFG scale."""

    gamma: float = 1.0
    remask_temperature: tuple[float, float] = (2.0, 0.0)
    sample_temperature: float = 1.0
    cfg_scale: float = 9.0
    name: str = "cosine"

    def __post_init__(self) -> None:
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")
        if not self.sample_temperature > 0:
            raise ValueError(f"sample_temperature must be > 0, got {self.sample_temperature}")

    def values(self, num_steps: int) -> torch.Tensor:
        """``[T, 4]`` float32 ``(r, tau_r, tau_s, cfg)``."""
        remask_ratio = _reference_cosine(num_steps)
        if self.gamma != 1.0:
            remask_ratio = remask_ratio.clamp(min=0.0) ** self.gamma
        start, end = self.remask_temperature
        remask_temp = torch.linspace(start, end, num_steps)
        sample_temp = torch.full((num_steps,), float(self.sample_temperature))
        cfg = torch.full((num_steps,), float(self.cfg_scale))
        return torch.stack([remask_ratio, remask_temp, sample_temp, cfg], dim=1)


@dataclass(frozen=True)
class LinearSchedule:
    """aMUSEd's alternative ``masking_schedule="linear"``: ``r_k = 1 - (k+1)/T``."""

    remask_temperature: tuple[float, float] = (2.0, 0.0)
    sample_temperature: float = 1.0
    cfg_scale: float = 9.0
    name: str = "linear"

    def values(self, num_steps: int) -> torch.Tensor:
        steps = torch.arange(num_steps)
        remask_ratio = 1 - (steps + 1) / num_steps
        start, end = self.remask_temperature
        remask_temp = torch.linspace(start, end, num_steps)
        sample_temp = torch.full((num_steps,), float(self.sample_temperature))
        cfg = torch.full((num_steps,), float(self.cfg_scale))
        return torch.stack([remask_ratio, remask_temp, sample_temp, cfg], dim=1)


def _reference_cosine(num_steps: int) -> torch.Tensor:
    """cos(π/2 · (k+1)/T) exactly as ``AmusedScheduler.step`` computes it: one step at a time on
    a one-element int64 tensor (a vectorised cos may differ in the last bit, and the floor of
    ``N · r`` would then differ at exact boundaries)."""
    out = torch.empty(num_steps)
    for k in range(num_steps):
        ratio = (torch.tensor([[k]]) + 1) / num_steps
        out[k] = torch.cos(ratio * math.pi / 2)[0, 0]
    return out


def meissonic_default() -> CosineSchedule:
    """Meissonic's released schedule: cosine ratio, τr 2→0, τs = 1, CFG 9 (SPEC §1)."""
    return CosineSchedule()
