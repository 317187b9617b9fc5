"""The scheduling policy π_φ: Gaussian actions, the fixed map onto valid ranges (SPEC §2).

A learned head gives the mean ``μ_φ(features, progress)`` of a pre-activation action ``a`` for
its trainable components; ``a ~ N(μ, σ² I)``. The applied values use the base (fixed) schedule
as a residual, so ``a = 0`` reproduces the base schedule exactly::

    r    = sigmoid(a_r + logit(r_base))
    τr   = softplus(a_τr + softplus⁻¹(τr_base))      (τs and the CFG scale likewise)

Components that are not trained are not sampled and take the base value untouched. The map is
evaluated in float64 and rounded to float32, which returns a float32 base value bit-exactly for
``a = 0`` (base values are clamped to ``[1e-4, 1 - 1e-4]`` / ``>= 1e-4`` first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cogrpo.protocols import SCHEDULE_COMPONENTS, FixedSchedule

BASE_CLAMP = 1e-4
COMPONENT_INDEX = {name: i for i, name in enumerate(SCHEDULE_COMPONENTS)}


def canonical_components(components: Sequence[str]) -> tuple[str, ...]:
    """Validate and order component names canonically (``r, tau_r, tau_s, cfg``)."""
    unknown = [c for c in components if c not in COMPONENT_INDEX]
    if unknown:
        raise ValueError(f"unknown schedule component(s) {unknown}; choose from {', '.join(SCHEDULE_COMPONENTS)}")
    return tuple(c for c in SCHEDULE_COMPONENTS if c in set(components))


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """softplus⁻¹(y) = y + log(1 − exp(−y)), stable for small and large y."""
    return y + torch.log(-torch.expm1(-y))


def map_actions(actions: torch.Tensor, base: torch.Tensor, components: Sequence[str]) -> torch.Tensor:
    """Pre-activation actions -> schedule values.

    :param actions: ``[B, C]`` pre-activation actions for ``components`` (canonical order).
    :param base: ``[B, 4]`` or ``[4]`` float32 base values ``(r, tau_r, tau_s, cfg)``.
    :return: ``[B, 4]`` float32 values; untrained columns are the base values unchanged.
    """
    values = base.to(torch.float32).expand(actions.shape[0], len(SCHEDULE_COMPONENTS)).clone()
    for j, name in enumerate(components):
        col = COMPONENT_INDEX[name]
        a = actions[:, j].to(torch.float64)
        b = values[:, col].to(torch.float64)
        if name == "r":
            b = b.clamp(BASE_CLAMP, 1 - BASE_CLAMP)
            mapped = torch.sigmoid(a + torch.log(b) - torch.log1p(-b))
        else:
            b = b.clamp(min=BASE_CLAMP)
            mapped = F.softplus(a + inverse_softplus(b))
        values[:, col] = mapped.to(torch.float32)
    return values


def gaussian_log_prob(actions: torch.Tensor, mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """log N(actions; mean, σ² I) summed over the last axis: ``[B, C] -> [B]`` (0 when C = 0)."""
    var = sigma**2
    log_density = -((actions - mean) ** 2) / (2 * var) - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    return log_density.sum(dim=-1)


@dataclass
class ScheduleAction:
    """The schedule decision of one step for a batch."""

    actions: torch.Tensor  # [B, C] pre-activation (C = number of sampled components)
    values: torch.Tensor  # [B, 4] applied (r, tau_r, tau_s, cfg), float32
    log_prob: torch.Tensor  # [B] log π_schedule of ``actions`` (zeros when C = 0)


class ScheduleActor:
    """Base schedule + optional learned head + fixed σ: decides ``A_k`` at every step.

    ``mode`` is ``"sample"`` (Gaussian exploration), ``"mean"`` (evaluation: ``a = μ``) or
    ``"base"`` (the fixed base schedule; nothing sampled, as in Naive GRPO).
    """

    def __init__(self, base: FixedSchedule, policy: nn.Module | None = None, sigma: float = 0.1) -> None:
        if policy is not None and not sigma > 0:
            raise ValueError(f"schedule sigma must be > 0, got {sigma}")
        self.base = base
        self.policy = policy
        self.sigma = float(sigma)
        self.components: tuple[str, ...] = canonical_components(policy.components) if policy is not None else ()
        self._base_cache: dict[int, torch.Tensor] = {}

    def base_values(self, num_steps: int) -> torch.Tensor:
        """``[T, 4]`` float32 base schedule (cached per T)."""
        if num_steps not in self._base_cache:
            self._base_cache[num_steps] = self.base.values(num_steps).to(torch.float32)
        return self._base_cache[num_steps]

    def mean(self, features: torch.Tensor, progress: torch.Tensor) -> torch.Tensor:
        """μ_φ: ``features [B, D, Hf, Wf]``, ``progress [B]`` -> ``[B, C]`` (float32)."""
        assert self.policy is not None
        param = next(self.policy.parameters())
        mu = self.policy(features.to(param.device, param.dtype), progress.to(param.device, param.dtype))
        return mu.float()

    def active(self, step: int, num_steps: int) -> torch.Tensor:
        """``[C]`` bool: components that affect step ``k``. At the last step nothing is re-masked, so
        ``r`` and ``τr`` have no effect: they keep the base value and add no log-probability."""
        last = step == num_steps - 1
        return torch.tensor([not (last and c in ("r", "tau_r")) for c in self.components], dtype=torch.bool)

    def act(
        self,
        features: torch.Tensor | None,
        step: int,
        num_steps: int,
        *,
        mode: str,
        generators: torch.Generator | Sequence[torch.Generator] | None,
        batch_size: int,
    ) -> ScheduleAction:
        base = self.base_values(num_steps)[step]  # [4]
        if self.policy is None or mode == "base" or not self.components:
            empty = torch.zeros(batch_size, 0)
            return ScheduleAction(empty, base.expand(batch_size, 4).clone(), torch.zeros(batch_size))
        assert features is not None, "a learned schedule policy needs the backbone's features"
        progress = torch.full((batch_size,), step / num_steps)
        mu = self.mean(features, progress).cpu()  # [B, C]
        if mode == "mean":
            actions = mu
        elif mode == "sample":
            noise = standard_normal((batch_size, len(self.components)), generators)
            actions = mu + self.sigma * noise
        else:
            raise ValueError(f"unknown schedule action mode '{mode}' (sample, mean or base)")
        active = self.active(step, num_steps)
        used = [c for c, a in zip(self.components, active.tolist()) if a]
        values = map_actions(actions[:, active], base, used)
        return ScheduleAction(actions, values, gaussian_log_prob(actions[:, active], mu[:, active], self.sigma))

    def log_prob(self, features: torch.Tensor, step: int, num_steps: int, actions: torch.Tensor) -> torch.Tensor:
        """log π_φ(actions | features, progress) with gradient into φ: ``[B]`` (on the CPU)."""
        progress = torch.full((actions.shape[0],), step / num_steps)
        mu = self.mean(features, progress)
        active = self.active(step, num_steps).to(mu.device)
        return gaussian_log_prob(actions.to(mu.device)[:, active], mu[:, active], self.sigma)


def standard_normal(shape: tuple[int, int], generators: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
    """``[B, C]`` N(0, 1) draws (returned on the CPU); a list of generators draws row ``b`` from
    ``generators[b]``, so a trajectory's noise does not depend on the batch it is rolled out in."""
    if generators is None or isinstance(generators, torch.Generator):
        device = generators.device if generators is not None else "cpu"
        return torch.randn(shape, generator=generators, device=device).cpu()
    return torch.stack([torch.randn(shape[1], generator=g, device=g.device).cpu() for g in generators])
