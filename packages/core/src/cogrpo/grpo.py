"""The GRPO math of Co-GRPO as pure, typed functions (SPEC §3).

Trajectories are laid out with groups contiguous: trajectory ``b`` belongs to group ``b // G``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ADV_EPS = 1e-4  # A_j = (R_j - mean) / (std + ADV_EPS)


@dataclass
class Advantages:
    """Group-relative advantages of a batch."""

    advantages: torch.Tensor  # [B] mixed advantage Σ_j w_j A_j
    per_reward: torch.Tensor  # [B, J] normalised advantage of each reward
    zero_std_groups: torch.Tensor  # [B // G] bool: every reward is constant within the group

    @property
    def zero_std_ratio(self) -> float:
        return self.zero_std_groups.float().mean().item()


def group_advantages(rewards: torch.Tensor, weights: torch.Tensor, group_size: int) -> Advantages:
    """Normalise each reward within its group, then mix with ``weights``.

    ``A_j = (R_j − mean_g R_j) / (std_g R_j + 1e-4)`` (population std over the ``G`` members);
    a group in which reward ``j`` is constant gets ``A_j = 0`` exactly.

    :param rewards: ``[B, J]`` raw rewards, ``B = num_groups · G``.
    :param weights: ``[J]`` mixing weights (the paper: 0.5 ImageReward + 0.5 HPSv2).
    :param group_size: ``G`` (>= 2).
    """
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be [B, J], got shape {tuple(rewards.shape)}")
    b, j = rewards.shape
    if group_size < 2 or b % group_size:
        raise ValueError(f"batch of {b} trajectories is not a whole number of groups of {group_size} (G >= 2)")
    if weights.shape != (j,):
        raise ValueError(f"{j} rewards but {weights.numel()} weights")
    grouped = rewards.double().view(b // group_size, group_size, j)  # [P, G, J]
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, unbiased=False, keepdim=True)
    constant = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)  # [P, 1, J]
    normalised = torch.where(constant, 0.0, (grouped - mean) / (std + ADV_EPS))
    per_reward = normalised.view(b, j).float()
    mixed = (normalised * weights.double()).sum(dim=-1).view(b).float()
    return Advantages(mixed, per_reward, constant.all(dim=-1).squeeze(1))


def clipped_surrogate(
    logratio: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped objective as a loss, per element.

    ``pg = −min(ratio · A, clip(ratio, 1 − ε_low, 1 + ε_high) · A)`` with ``ratio = exp(logratio)``.

    :return: ``(pg_loss, clipped)`` both shaped like ``logratio``; ``clipped`` is a bool mask of
        the elements where the clipped branch was taken (for ``ratio/clipfrac``).
    """
    ratio = torch.exp(logratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    pg_loss = -torch.minimum(unclipped, clipped)
    return pg_loss, (clipped < unclipped).detach()


def kl_k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(π || π_ref) from samples of π: ``e^{ref−p} − (ref − p) − 1``."""
    log_ref_ratio = logp_ref - logp
    return torch.exp(log_ref_ratio) - log_ref_ratio - 1


def categorical_kl(logits: torch.Tensor, logits_ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Exact KL(π || π_ref) of the per-position token distributions, summed over ``mask``.

    :param logits: ``[B, N, K]`` (guided, temperature-scaled) logits of the current policy.
    :param logits_ref: ``[B, N, K]`` the same for the reference policy.
    :param mask: ``[B, N]`` positions to count (the filled set ``I_k``).
    :return: ``[B]``.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    logp_ref = torch.log_softmax(logits_ref.float(), dim=-1)
    kl = (logp.exp() * (logp - logp_ref)).sum(dim=-1)  # [B, N]
    return (kl * mask).sum(dim=-1)


def gaussian_kl(mean: torch.Tensor, mean_ref: torch.Tensor, sigma: float) -> torch.Tensor:
    """Exact KL between two isotropic Gaussians of equal σ: ``||μ − μ_ref||² / (2σ²)``, ``[B, C] -> [B]``."""
    return ((mean - mean_ref) ** 2).sum(dim=-1) / (2 * sigma**2)


def approx_kl(logratio: torch.Tensor) -> torch.Tensor:
    """The ``ratio/approx_kl`` diagnostic (k3 of old vs new on the rollout's samples), a scalar."""
    return ((torch.exp(logratio) - 1) - logratio).mean()
