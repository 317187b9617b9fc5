"""The paper's schedule-policy head (Co-GRPO appendix A; SPEC §2).

A depthwise + pointwise convolution over the grid of final-layer token features, a mean over the
grid, and an MLP whose LayerNorms are modulated by an embedding of the sampling progress
``k / T`` (DiT-style adaLN-Zero)::

    progress [B] ─ sinusoid(E) ─ Linear(E, h) ─ SiLU ─ Linear(h, h) ─────────────────────── c [B, h]
    features [B, D, Hf, Wf] ─ LayerNorm per token ─ depthwise Conv k×k ─ pointwise Conv D→h
                            ─ GELU ─ mean over the grid ──────────────────────────────────── x [B, h]
    depth × ( x = x + g · MLP(LN(x) · (1 + s) + t) )      (t, s, g) = Linear(SiLU(c))   zero-init
    μ = Linear(LN(x) · (1 + s) + t)                        (t, s)    = Linear(SiLU(c))   zero-init
                                                           output Linear (h → C)         zero-init

The output layer and every modulation start at exactly zero, so a fresh head outputs exactly 0
and the policy reproduces its base schedule (:mod:`cogrpo.schedule`). The head sees progress,
not the step index, so a head trained at one ``T`` runs at any other. With ``h = D`` (the
default) it has about 9 h² parameters: 9.5M for Meissonic (D = 1024), about 1% of the backbone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cogrpo.schedule import canonical_components


def sinusoidal_embedding(progress: torch.Tensor, dim: int, max_frequency: float) -> torch.Tensor:
    """``[B]`` progress in [0, 1] -> ``[B, dim]`` float32 ``(cos(ω p), sin(ω p))``.

    The angular frequencies ω are geometric from 1 to ``max_frequency`` (radians per unit of
    progress). Keeping ``max_frequency`` below the Nyquist limit ``π · T`` of the training step
    grid (32 < π · 11) makes the embedding smooth between the grid points a head was trained on,
    which is what lets a schedule learned at one ``T`` be read at another.
    """
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(max_frequency), half, device=progress.device))  # [half]
    angles = progress.float()[:, None] * freqs[None]  # [B, half]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def token_layer_norm(features: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of every token (no affine): ``[B, D, Hf, Wf]`` -> same.

    Makes the head insensitive to the scale of the backbone's final-layer features."""
    x = features.permute(0, 2, 3, 1)  # [B, Hf, Wf, D]
    return F.layer_norm(x, x.shape[-1:], eps=1e-6).permute(0, 3, 1, 2)


def check_inputs(features: torch.Tensor, progress: torch.Tensor, feature_dim: int) -> None:
    """One-line ``ValueError`` for features that are not ``[B, D, Hf, Wf]`` or progress not ``[B]``."""
    if features.ndim != 4 or features.shape[1] != feature_dim:
        raise ValueError(
            f"schedule head expects features [B, {feature_dim}, Hf, Wf], got {list(features.shape)}; "
            "build the head with the backbone's feature_dim"
        )
    if progress.shape != features.shape[:1]:
        raise ValueError(f"progress must be [B] = [{features.shape[0]}], got {list(progress.shape)}")


def validate_head_args(components: Sequence[str], feature_dim: int, feature_grid: Sequence[int]) -> tuple[str, ...]:
    """Canonical components (at least one), a positive width and a 2-D grid, or ``ValueError``."""
    comps = canonical_components(components)
    if not comps:
        raise ValueError("a learned schedule head needs at least one component (r, tau_r, tau_s, cfg)")
    if not feature_dim > 0:
        raise ValueError(f"feature_dim must be > 0, got {feature_dim}")
    if len(feature_grid) != 2 or not all(int(s) > 0 for s in feature_grid):
        raise ValueError(f"feature_grid must be (Hf, Wf) with positive sizes, got {tuple(feature_grid)}")
    return comps


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class ProgressEmbedding(nn.Module):
    """Sinusoid of the progress ``k / T`` followed by a two-layer MLP: ``[B] -> [B, width]``."""

    def __init__(self, embed_dim: int, width: int, max_frequency: float) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.max_frequency = max_frequency
        self.mlp = nn.Sequential(nn.Linear(embed_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, progress: torch.Tensor) -> torch.Tensor:
        emb = sinusoidal_embedding(progress, self.embed_dim, self.max_frequency)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class AdaLNBlock(nn.Module):
    """Residual MLP block with adaLN-Zero: ``x + g · MLP(LN(x) · (1 + s) + t)``; identity at init."""

    def __init__(self, width: int, mlp_width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_width), nn.GELU(), nn.Linear(mlp_width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # [B, h], [B, h]
        shift, scale, gate = self.modulation(c).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.norm(x), shift, scale))


class PaperHead(nn.Module):
    """Co-GRPO's scheduling-policy network μ_φ(features, progress) -> ``[B, C]`` (see module doc).

    :param feature_dim: ``D`` of the backbone's features.
    :param feature_grid: ``(Hf, Wf)`` of the backbone's features; the head itself is grid-agnostic
        (convolution + mean), so it also runs on other resolutions.
    :param components: trained schedule components (canonical order, at least one).
    :param hidden_dim: width ``h`` after the pointwise convolution (default ``D``).
    :param depth: number of adaLN-Zero MLP blocks.
    :param mlp_ratio: hidden width of each block's MLP, as a multiple of ``h``.
    :param kernel_size: odd size of the depthwise convolution.
    :param embed_dim: width ``E`` of the sinusoidal progress embedding.
    :param max_frequency: highest angular frequency of that embedding (radians per unit progress).
    """

    def __init__(
        self,
        *,
        feature_dim: int,
        feature_grid: Sequence[int],
        components: Sequence[str],
        hidden_dim: int | None = None,
        depth: int = 1,
        mlp_ratio: float = 1.0,
        kernel_size: int = 3,
        embed_dim: int = 64,
        max_frequency: float = 32.0,
    ) -> None:
        super().__init__()
        self.components = validate_head_args(components, feature_dim, feature_grid)
        hidden = int(hidden_dim) if hidden_dim is not None else int(feature_dim)
        if hidden <= 0 or depth < 0 or mlp_ratio <= 0 or embed_dim < 2 or max_frequency < 1:
            raise ValueError(
                f"invalid paper-head sizes: hidden_dim={hidden}, depth={depth}, mlp_ratio={mlp_ratio}, "
                f"embed_dim={embed_dim}, max_frequency={max_frequency} (need > 0, >= 0, > 0, >= 2, >= 1)"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.feature_dim = int(feature_dim)
        self.feature_grid = (int(feature_grid[0]), int(feature_grid[1]))
        self.hidden_dim = hidden

        self.progress_embed = ProgressEmbedding(embed_dim, hidden, max_frequency)
        self.depthwise = nn.Conv2d(feature_dim, feature_dim, kernel_size, padding=kernel_size // 2, groups=feature_dim)
        self.pointwise = nn.Conv2d(feature_dim, hidden, kernel_size=1)
        self.blocks = nn.ModuleList(AdaLNBlock(hidden, max(1, round(mlp_ratio * hidden))) for _ in range(depth))
        self.final_norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.out = nn.Linear(hidden, len(self.components))
        for layer in (self.final_modulation[1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor, progress: torch.Tensor) -> torch.Tensor:
        """``features [B, D, Hf, Wf]``, ``progress [B]`` in [0, 1] -> pre-activation means ``[B, C]``."""
        check_inputs(features, progress, self.feature_dim)
        x = self.pointwise(self.depthwise(token_layer_norm(features)))  # [B, h, Hf, Wf]
        x = F.gelu(x).mean(dim=(2, 3))  # [B, h]
        c = self.progress_embed(progress)  # [B, h]
        for block in self.blocks:
            x = block(x, c)
        shift, scale = self.final_modulation(c).chunk(2, dim=-1)
        return self.out(modulate(self.final_norm(x), shift, scale))  # [B, C]

    def extra_repr(self) -> str:
        return f"components={self.components}, feature_dim={self.feature_dim}, feature_grid={self.feature_grid}"
