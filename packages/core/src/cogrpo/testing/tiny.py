"""A tiny random-weight text-to-image MDM for tests: any grid, a few transformer layers.

It implements :class:`cogrpo.protocols.Backbone` completely (prompt encoding with a null prompt,
CFG branches batched in one forward, final-layer token features, a palette decoder), so every
part of the engine can be exercised in milliseconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cogrpo.protocols import BackboneOutput, FixedSchedule, PromptEmbeds, RewardOutput


class _Block(nn.Module):
    """Pre-norm bidirectional self-attention + MLP (explicit math: identical in train and eval)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, S, D]
        b, s, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, h, S, d/h]
        attn = (q @ k.transpose(-1, -2)) * (d // self.heads) ** -0.5
        y = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, s, d)
        x = x + self.proj(y)
        return x + self.mlp(self.norm2(x))


class TinyMDM(nn.Module):
    """Text prefix + image tokens through a few bidirectional blocks; logits over the codebook."""

    def __init__(
        self,
        codebook_size: int = 16,
        grid: tuple[int, int] = (4, 4),
        dim: int = 32,
        depth: int = 2,
        heads: int = 2,
        text_vocab: int = 64,
        text_len: int = 8,
        logit_scale: float = 4.0,
    ) -> None:
        super().__init__()
        n = grid[0] * grid[1]
        self.token_embed = nn.Embedding(codebook_size + 1, dim)  # last id is the mask
        self.pos_embed = nn.Parameter(torch.randn(n, dim) * 0.1)
        self.text_embed = nn.Embedding(text_vocab, dim)
        self.text_pos = nn.Parameter(torch.randn(text_len, dim) * 0.1)
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, codebook_size)
        self.logit_scale = logit_scale

    def forward(self, tokens: torch.Tensor, text_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # tokens [B, N], text_ids [B, L] -> logits [B, N, K], features [B, N, D]
        text = self.text_embed(text_ids) + self.text_pos
        image = self.token_embed(tokens) + self.pos_embed
        x = torch.cat([text, image], dim=1)
        for block in self.blocks:
            x = block(x)
        features = self.norm(x[:, text_ids.shape[1] :])
        return self.head(features) * self.logit_scale, features


def _palette(num_colors: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(num_colors, 3, generator=g)


class TinyBackbone:
    """The tiny test backbone (random weights unless ``path`` points to a saved state dict)."""

    name = "tiny"

    def __init__(
        self,
        *,
        codebook_size: int = 16,
        grid: tuple[int, int] = (4, 4),
        dim: int = 32,
        depth: int = 2,
        heads: int = 2,
        seed: int = 0,
        cfg_scale: float = 3.0,
        pixel_scale: int = 4,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        path: str | None = None,
    ) -> None:
        torch.manual_seed(seed)
        self.text_len = 8
        self.text_vocab = 64
        self.model = TinyMDM(codebook_size, tuple(grid), dim, depth, heads, self.text_vocab, self.text_len)
        if path is not None:
            from safetensors.torch import load_file

            self.model.load_state_dict(load_file(path), strict=True)
        self.device = torch.device(device)
        self.dtype = dtype
        self.model.to(self.device, self.dtype).eval()
        self.mask_token_id = codebook_size
        self.codebook_size = codebook_size
        self.token_grid = (int(grid[0]), int(grid[1]))
        self.feature_dim = dim
        self.feature_grid = self.token_grid
        self.cfg_scale = cfg_scale
        self.pixel_scale = pixel_scale
        self.palette = _palette(codebook_size)

    # -- Backbone protocol ------------------------------------------------------------------------

    def _tokenize(self, prompt: str) -> list[int]:
        ids = [1 + (b % (self.text_vocab - 1)) for b in prompt.encode("utf-8")][: self.text_len]
        return ids + [0] * (self.text_len - len(ids))

    def encode_prompts(self, prompts: Sequence[str]) -> PromptEmbeds:
        text = torch.tensor([self._tokenize(p) for p in prompts], dtype=torch.long, device=self.device)
        return {"text_ids": text, "null_ids": torch.zeros_like(text)}

    def forward(
        self, tokens: torch.Tensor, prompt: PromptEmbeds, step: int, num_steps: int, guidance: bool
    ) -> BackboneOutput:
        b = tokens.shape[0]
        if guidance:  # [uncond; cond] in one forward, as the Meissonic pipeline orders them
            tokens, text = torch.cat([tokens, tokens]), torch.cat([prompt["null_ids"], prompt["text_ids"]])
        else:
            text = prompt["text_ids"]
        logits, features = self.model(tokens, text)
        out = BackboneOutput.from_batched_cfg(logits, features, b, guidance)
        out.features = self._grid(out.features)  # [B, N, D] -> [B, D, H, W], the conditional rows only
        return out

    def _grid(self, features: torch.Tensor) -> torch.Tensor:
        h, w = self.feature_grid
        return features.transpose(1, 2).reshape(features.shape[0], -1, h, w)  # [B, D, H, W]

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        h, w = self.token_grid
        rgb = self.palette.to(tokens.device)[tokens.clamp(max=self.codebook_size - 1)]  # [B, N, 3]
        img = rgb.view(-1, h, w, 3).permute(0, 3, 1, 2)
        return F.interpolate(img, scale_factor=self.pixel_scale, mode="nearest")

    def default_schedule(self) -> FixedSchedule:
        from cogrpo_schedulers.fixed import CosineSchedule

        return CosineSchedule(cfg_scale=self.cfg_scale)

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


class BrightnessReward:
    """Mean pixel value of each image, in [0, 1] (a weight-free reward for tests)."""

    name = "brightness"

    def __init__(self, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.device = torch.device(device)
        self.dtype = dtype

    @torch.no_grad()
    def __call__(self, images, prompts, *, tokens=None, metadata=None) -> RewardOutput:
        from cogrpo.reward_utils import validate_reward_inputs

        validate_reward_inputs(images, prompts)
        x = images.to(self.device, self.dtype)
        scores = x.mean(dim=(1, 2, 3)).float().cpu()
        return RewardOutput(scores=scores, info={"red": x[:, 0].mean(dim=(1, 2)).float().cpu()})


class TinyScheduleHead(nn.Module):
    """Mean-pooled features and progress -> a zero-initialised linear layer (a minimal schedule head)."""

    def __init__(self, feature_dim: int, components: tuple[str, ...], hidden: int = 16) -> None:
        super().__init__()
        from cogrpo.schedule import canonical_components

        self.components = canonical_components(components)
        self.body = nn.Sequential(nn.Linear(feature_dim + 1, hidden), nn.Tanh())
        self.out = nn.Linear(hidden, len(self.components))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: torch.Tensor, progress: torch.Tensor) -> torch.Tensor:
        pooled = features.mean(dim=(2, 3))  # [B, D]
        return self.out(self.body(torch.cat([pooled, progress[:, None]], dim=1)))  # [B, C]
