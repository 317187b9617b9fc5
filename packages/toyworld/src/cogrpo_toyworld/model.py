"""The ``toy`` backbone: a ~1M-parameter text-conditioned masked-diffusion transformer.

Two small bidirectional transformers, written out explicitly (pre-norm blocks on
``F.scaled_dot_product_attention``, no dropout, so train and eval mode compute the same numbers
and a replayed step gives its rollout's log-probabilities back):

* ``ToyTextEncoder`` (frozen in RL, like Meissonic's CLIP): word ids of the grammar's vocabulary
  ``[B, L]`` -> states ``[B, L, D]``. The null prompt (classifier-free guidance) is the empty
  string, i.e. all padding; pretraining drops the prompt to it 10% of the time.
* ``ToyMDM`` (θ, the policy network): projected text states and image tokens in one sequence
  ``[B, L + N, D]``; logits ``[B, N, K]`` over the palette and final-layer image features
  ``[B, N, D]`` (the schedule policy's input, no extra forward).

The shipped weights (``weights/toy.safetensors``) hold both networks, with the architecture,
vocabulary and release defaults (CFG scale, number of steps) in the file's metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cogrpo.errors import WeightsNotFoundError
from cogrpo.protocols import BackboneOutput, FixedSchedule, PromptEmbeds
from cogrpo_toyworld.prompts import NUMBERS, PLURALS, RELATIONS
from cogrpo_toyworld.scenes import COLORS, GRID, NUM_TOKENS, PIXEL_SCALE, SHAPE_NAMES, tokens_to_rgb

WEIGHTS_FILE = "toy.safetensors"
WEIGHTS_FORMAT = "cogrpo-toy-v1"
PAD, UNK = "<pad>", "<unk>"

#: Release defaults of the shipped model (measured, see weights/README.md and docs/toyworld.md).
DEFAULT_CFG_SCALE = 2.0
DEFAULT_NUM_STEPS = 12


def grammar_vocabulary() -> list[str]:
    """``<pad>``, ``<unk>``, then every word of the prompt grammar, sorted."""
    words = {"a", "an", "and"} | set(COLORS) | set(SHAPE_NAMES) | set(PLURALS.values()) | set(NUMBERS.values())
    for relation in RELATIONS:
        words |= set(relation.split())
    return [PAD, UNK, *sorted(words)]


@dataclass(frozen=True)
class ToyConfig:
    """Architecture of the toy backbone (stored in the weights file)."""

    grid: tuple[int, int] = GRID
    codebook_size: int = NUM_TOKENS  # K palette entries; the mask id is K
    dim: int = 128
    depth: int = 4  # MDM blocks
    heads: int = 4
    text_depth: int = 1  # text-encoder blocks
    text_len: int = 8
    mlp_ratio: int = 4
    pos_2d: bool = True  # factorised row + column position embeddings instead of one per cell
    vocab: tuple[str, ...] = field(default_factory=lambda: tuple(grammar_vocabulary()))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> ToyConfig:
        raw = json.loads(text)
        raw["grid"] = tuple(raw["grid"])
        raw["vocab"] = tuple(raw["vocab"])
        return ToyConfig(**raw)


# -------------------------------------------------------------------------------------------------
# Networks
# -------------------------------------------------------------------------------------------------


class Block(nn.Module):
    """Pre-norm bidirectional self-attention + GELU MLP on ``[B, S, D]``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # [B, h, S, D/h]
        x = x + self.proj(y.transpose(1, 2).reshape(b, s, d))
        return x + self.mlp(self.norm2(x))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=0.02)


class ToyTextEncoder(nn.Module):
    """Word ids ``[B, L]`` -> text states ``[B, L, D]``."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(config.vocab), config.dim)
        self.pos = nn.Parameter(torch.zeros(config.text_len, config.dim))
        self.blocks = nn.ModuleList(Block(config.dim, config.heads, config.mlp_ratio) for _ in range(config.text_depth))
        self.norm = nn.LayerNorm(config.dim)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.pos  # [B, L, D]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class ToyMDM(nn.Module):
    """Text states + image tokens -> palette logits and image features (one joint sequence)."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        n = config.grid[0] * config.grid[1]
        self.text_proj = nn.Linear(config.dim, config.dim)
        self.token_embed = nn.Embedding(config.codebook_size + 1, config.dim)  # last id = mask
        self.grid = tuple(config.grid)
        self.pos_2d = config.pos_2d
        if config.pos_2d:
            self.row_pos = nn.Parameter(torch.zeros(config.grid[0], config.dim))
            self.col_pos = nn.Parameter(torch.zeros(config.grid[1], config.dim))
        else:
            self.pos = nn.Parameter(torch.zeros(n, config.dim))
        self.blocks = nn.ModuleList(Block(config.dim, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.codebook_size)
        self.apply(_init_weights)
        for p in (self.row_pos, self.col_pos) if config.pos_2d else (self.pos,):
            nn.init.trunc_normal_(p, std=0.02)

    def positions(self) -> torch.Tensor:
        """``[N, D]`` position embeddings of the image cells (row-major)."""
        if not self.pos_2d:
            return self.pos
        return (self.row_pos[:, None, :] + self.col_pos[None, :, :]).flatten(0, 1)

    def forward(self, tokens: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # tokens [B, N] int64 (mask id = K), text [B, L, D] -> logits [B, N, K], features [B, N, D]
        length = text.shape[1]
        x = torch.cat([self.text_proj(text), self.token_embed(tokens) + self.positions()], dim=1)  # [B, L+N, D]
        for block in self.blocks:
            x = block(x)
        features = self.norm(x[:, length:])
        return self.head(features), features


class ToyTextToImage(nn.Module):
    """Both networks under one module (what pretraining optimises and the weights file holds)."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.text_encoder = ToyTextEncoder(config)
        self.model = ToyMDM(config)

    def forward(self, tokens: torch.Tensor, text_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(tokens, self.text_encoder(text_ids))


def tokenize(prompts: Sequence[str], config: ToyConfig) -> torch.Tensor:
    """Whitespace word ids ``[B, L]`` (lower-cased; unknown words -> ``<unk>``, padded / cut to L)."""
    index = {w: i for i, w in enumerate(config.vocab)}
    rows = []
    for prompt in prompts:
        ids = [index.get(word, index[UNK]) for word in prompt.lower().split()][: config.text_len]
        rows.append(ids + [index[PAD]] * (config.text_len - len(ids)))
    return torch.tensor(rows, dtype=torch.long).view(len(rows), config.text_len)


# -------------------------------------------------------------------------------------------------
# Weights
# -------------------------------------------------------------------------------------------------


def packaged_weights() -> Path:
    """Path of the weights shipped inside the package."""
    return Path(str(resources.files("cogrpo_toyworld") / "weights" / WEIGHTS_FILE))


def save_weights(net: ToyTextToImage, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Both networks as fp32 safetensors, with the config and ``extra`` (JSON) as metadata."""
    from safetensors.torch import save_file

    metadata = {"format": WEIGHTS_FORMAT, "config": net.config.to_json()}
    metadata.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in net.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)


def load_weights(path: str | Path) -> tuple[ToyTextToImage, dict[str, Any]]:
    """Build the networks from a weights file (or a directory holding ``toy.safetensors``); returns
    them and the decoded metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise WeightsNotFoundError(
            f"toy backbone weights not found at {path}; expected a safetensors file from "
            f"`cogrpo pretrain --backbone toy --out FILE` (pass it with --backbone-path FILE)"
        )
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    if raw.get("format") != WEIGHTS_FORMAT:
        raise WeightsNotFoundError(
            f"{path} is not a toy backbone weights file (format {raw.get('format')!r}, expected {WEIGHTS_FORMAT}); "
            f"write one with `cogrpo pretrain --backbone toy --out FILE`"
        )
    config = ToyConfig.from_json(raw["config"])
    net = ToyTextToImage(config)
    net.load_state_dict(load_file(str(path)), strict=True)
    meta = {k: json.loads(v) for k, v in raw.items() if k not in ("format", "config")}
    return net, meta


# -------------------------------------------------------------------------------------------------
# The Backbone
# -------------------------------------------------------------------------------------------------


class ToyBackbone:
    """The ``toy`` backbone (:class:`cogrpo.protocols.Backbone`).

    :param path: a weights file; ``None`` loads the shipped pretrained weights.
    :param random_weights: build a seeded random-weight model from ``config`` instead (tests).
    :param network: use these networks as they are (e.g. straight from pretraining).
    """

    name = "toy"

    def __init__(
        self,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        path: str | Path | None = None,
        random_weights: bool = False,
        config: ToyConfig | None = None,
        seed: int = 0,
        cfg_scale: float | None = None,
        num_steps: int | None = None,
        network: ToyTextToImage | None = None,
    ) -> None:
        release: dict[str, Any] = {}
        if network is not None:
            net = network
        elif random_weights:
            torch.manual_seed(seed)
            net = ToyTextToImage(config or ToyConfig())
        else:
            if config is not None:
                raise ValueError("config applies to random_weights=True only; a weights file carries its own")
            net, release = load_weights(path if path is not None else packaged_weights())
        self.config = net.config
        self.device = torch.device(device)
        self.dtype = dtype
        self.text_encoder = net.text_encoder.to(self.device, dtype).eval().requires_grad_(False)
        self.model = net.model.to(self.device, dtype).eval()
        self.mask_token_id = self.config.codebook_size
        self.codebook_size = self.config.codebook_size
        self.token_grid = tuple(self.config.grid)
        self.feature_dim = self.config.dim
        self.feature_grid = self.token_grid
        self.cfg_scale = float(cfg_scale if cfg_scale is not None else release.get("cfg_scale", DEFAULT_CFG_SCALE))
        self.num_steps = int(num_steps if num_steps is not None else release.get("num_steps", DEFAULT_NUM_STEPS))
        self.release = release
        self.pixel_scale = PIXEL_SCALE

    def num_parameters(self) -> dict[str, int]:
        return {
            "model": sum(p.numel() for p in self.model.parameters()),
            "text_encoder": sum(p.numel() for p in self.text_encoder.parameters()),
        }

    # -- Backbone protocol ------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> PromptEmbeds:
        ids = tokenize(list(prompts) + [""], self.config).to(self.device)
        states = self.text_encoder(ids)  # [B+1, L, D]
        text, null = states[:-1], states[-1:].expand(len(prompts), -1, -1)
        return {"text": text.contiguous(), "null_text": null.contiguous()}

    def forward(
        self, tokens: torch.Tensor, prompt: PromptEmbeds, step: int, num_steps: int, guidance: bool
    ) -> BackboneOutput:
        b = tokens.shape[0]
        if guidance:  # [uncond; cond] batched in one forward
            tokens, text = torch.cat([tokens, tokens]), torch.cat([prompt["null_text"], prompt["text"]])
        else:
            text = prompt["text"]
        logits, features = self.model(tokens, text)
        out = BackboneOutput.from_batched_cfg(logits, features, b, guidance)
        out.features = self._grid(out.features)  # [B, N, D] -> [B, D, H, W], the conditional rows only
        return out

    def _grid(self, features: torch.Tensor) -> torch.Tensor:
        h, w = self.feature_grid
        return features.transpose(1, 2).reshape(features.shape[0], -1, h, w)  # [B, D, H, W]

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` -> ``[B, 3, 8H, 8W]`` RGB in [0, 1] (palette colours, nearest upscaling)."""
        return tokens_to_rgb(tokens, self.token_grid, self.pixel_scale)

    def default_schedule(self) -> FixedSchedule:
        """Cosine re-mask ratio, re-mask temperature 2 -> 0, τs 1, the release CFG scale."""
        from cogrpo_schedulers.fixed import CosineSchedule

        return CosineSchedule(cfg_scale=self.cfg_scale)

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]
