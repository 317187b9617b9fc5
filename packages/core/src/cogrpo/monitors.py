"""Reward-hacking monitors logged beside every reward: saturation, colour entropy, diversity.

Rewards can be gamed by over-saturated, low-entropy or collapsed (identical) images long before
the reward itself looks suspicious; these cheap statistics make that visible in the logs.
"""

from __future__ import annotations

import torch


def saturation(images: torch.Tensor) -> torch.Tensor:
    """HSV saturation ``(max − min) / max`` averaged over pixels: ``[B, 3, H, W] -> [B]`` in [0, 1]."""
    hi = images.amax(dim=1)
    lo = images.amin(dim=1)
    sat = torch.where(hi > 0, (hi - lo) / hi.clamp(min=1e-8), torch.zeros_like(hi))
    return sat.flatten(1).mean(dim=1)


def color_entropy(images: torch.Tensor, bins: int = 8) -> torch.Tensor:
    """Entropy (bits) of the joint RGB histogram with ``bins`` levels per channel: ``[B]``.

    0 for a flat image; at most ``3 · log2(bins)`` (9 bits with 8 bins).
    """
    levels = (images.clamp(0, 1) * (bins - 1)).round().long()  # [B, 3, H, W]
    codes = (levels[:, 0] * bins + levels[:, 1]) * bins + levels[:, 2]  # [B, H, W]
    out = []
    for row in codes.flatten(1):
        p = torch.bincount(row, minlength=bins**3).double()
        p = p[p > 0] / row.numel()
        out.append(-(p * p.log2()).sum())
    return torch.stack(out).float()


def group_diversity(tokens: torch.Tensor, group_size: int) -> torch.Tensor:
    """Mean pairwise Hamming distance (fraction of differing tokens) within each group: ``[B // G]``.

    :param tokens: ``[B, N]`` final token grids, groups contiguous.
    """
    b, n = tokens.shape
    grouped = tokens.view(b // group_size, group_size, n)
    diff = (grouped[:, :, None, :] != grouped[:, None, :, :]).float().mean(dim=-1)  # [P, G, G]
    pairs = group_size * (group_size - 1)
    return diff.sum(dim=(1, 2)) / pairs


def monitor_metrics(images: torch.Tensor, tokens: torch.Tensor, group_size: int) -> dict[str, float]:
    """The three monitors averaged over a batch, under ``monitor/`` keys."""
    return {
        "monitor/saturation": saturation(images).mean().item(),
        "monitor/color_entropy": color_entropy(images).mean().item(),
        "monitor/diversity": group_diversity(tokens, group_size).mean().item(),
    }
