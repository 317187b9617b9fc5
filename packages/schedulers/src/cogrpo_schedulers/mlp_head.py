"""A small MLP schedule-policy head on pooled features: the cheap alternative to the paper head.

::

    features [B, D, Hf, Wf] ─ LayerNorm per token ─ mean over the grid ───────── f [B, D]
    progress [B] ─ sinusoid(E) ──────────────────────────────────────────────── e [B, E]
    [f, e] ─ Linear(D + E, h) ─ SiLU ─ (depth − 1) × (Linear(h, h) ─ SiLU) ─ Linear(h, C)  zero-init

The output layer starts at exactly zero, so a fresh head reproduces the base schedule. Being a
mean over tokens, it ignores the spatial layout (the paper head's convolution does not).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cogrpo_schedulers.paper_head import check_inputs, sinusoidal_embedding, token_layer_norm, validate_head_args


class MLPHead(nn.Module):
    """μ_φ(features, progress) -> ``[B, C]`` from grid-pooled features and a progress sinusoid.

    :param feature_dim: ``D`` of the backbone's features.
    :param feature_grid: ``(Hf, Wf)`` of the backbone's features (the head runs on any grid).
    :param components: trained schedule components (canonical order, at least one).
    :param hidden_dim: width ``h`` of the hidden layers.
    :param depth: number of hidden layers (at least one).
    :param embed_dim: width ``E`` of the sinusoidal progress embedding.
    :param max_frequency: highest angular frequency of that embedding (radians per unit progress).
    """

    def __init__(
        self,
        *,
        feature_dim: int,
        feature_grid: Sequence[int],
        components: Sequence[str],
        hidden_dim: int = 128,
        depth: int = 2,
        embed_dim: int = 64,
        max_frequency: float = 32.0,
    ) -> None:
        super().__init__()
        self.components = validate_head_args(components, feature_dim, feature_grid)
        if hidden_dim <= 0 or depth < 1 or embed_dim < 2 or max_frequency < 1:
            raise ValueError(
                f"invalid mlp-head sizes: hidden_dim={hidden_dim}, depth={depth}, embed_dim={embed_dim}, "
                f"max_frequency={max_frequency} (need > 0, >= 1, >= 2, >= 1)"
            )
        self.feature_dim = int(feature_dim)
        self.feature_grid = (int(feature_grid[0]), int(feature_grid[1]))
        self.embed_dim = int(embed_dim)
        self.max_frequency = float(max_frequency)

        layers: list[nn.Module] = []
        width = feature_dim + embed_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden_dim), nn.SiLU()]
            width = hidden_dim
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(hidden_dim, len(self.components))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: torch.Tensor, progress: torch.Tensor) -> torch.Tensor:
        """``features [B, D, Hf, Wf]``, ``progress [B]`` in [0, 1] -> pre-activation means ``[B, C]``."""
        check_inputs(features, progress, self.feature_dim)
        pooled = token_layer_norm(features).mean(dim=(2, 3))  # [B, D]
        emb = sinusoidal_embedding(progress, self.embed_dim, self.max_frequency).to(pooled.dtype)  # [B, E]
        return self.out(self.mlp(torch.cat([pooled, emb], dim=-1)))  # [B, C]

    def extra_repr(self) -> str:
        return f"components={self.components}, feature_dim={self.feature_dim}, feature_grid={self.feature_grid}"
