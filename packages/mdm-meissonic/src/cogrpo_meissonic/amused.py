"""The ``amused`` backbone: diffusers' aMUSEd (``UVit2DModel`` + ``VQModel`` + CLIP) for cogrpo.

The forward is ``AmusedPipeline``'s: one ``UVit2DModel`` call on ``[negative; positive]``
(negative first) with the penultimate CLIP states, the projected ``text_embeds`` and
``micro_conds = [width, height, crop_0, crop_1, aesthetic]``; aMUSEd has no timestep input. The
schedule-policy features are the hidden states after the last transformer layer (on the grid
the transformer attends: half the token grid when the model down-samples), read with a hook on
``project_from_hidden_norm``.

Released layouts: ``amused/amused-256`` (16x16 tokens) and ``amused/amused-512`` (32x32); any
directory with the same sub-folders works.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from cogrpo.protocols import BackboneOutput, FixedSchedule, PromptEmbeds
from cogrpo_meissonic.backbone import generate_with_default_schedule
from cogrpo_meissonic.common import (
    ClipPromptEncoder,
    ComponentLoader,
    add_lora,
    autocast_context,
    cfg_batch,
    checkpoint_module_forward,
    decode_tokens,
    micro_conditions,
    place,
    vq_scale_factor,
)

AMUSED_REPOS = {"amused-256": "amused/amused-256", "amused-512": "amused/amused-512"}
AMUSED_LAYOUT = {
    "transformer": "config.json, diffusion_pytorch_model.safetensors",
    "vqvae": "config.json, diffusion_pytorch_model.safetensors",
    "text_encoder": "config.json, model.safetensors",
    "tokenizer": "vocab.json, merges.txt",
    "scheduler": "scheduler_config.json",
}
AMUSED_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
#: ``AmusedPipeline.__call__`` defaults.
AMUSED_GUIDANCE = 10.0
AMUSED_STEPS = 12


def _keep_features(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
    """Forward pre-hook on ``project_from_hidden_norm``: keep its input, the hidden states after the
    last transformer layer (stored on the module, so a deep copy of the model keeps working)."""
    module.cogrpo_features = args[0]


class AmusedBackbone:
    """aMUSEd behind the cogrpo backbone protocol.

    :param mask_token_id: the scheduler's ``mask_token_id`` (``vocab_size - 1`` when omitted).
    :param masking_schedule: the scheduler's ``"cosine"`` (released) or ``"linear"``.
    Other options as :class:`cogrpo_meissonic.backbone.MeissonicBackbone`.
    """

    name = "amused"

    def __init__(
        self,
        transformer: nn.Module,
        vqvae: nn.Module,
        text_encoder: nn.Module,
        tokenizer: Any,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        resolution: int | Sequence[int] | None = None,
        mask_token_id: int | None = None,
        masking_schedule: str = "cosine",
        negative_prompt: str = "",
        cfg_scale: float = AMUSED_GUIDANCE,
        aesthetic_score: float = 6.0,
        crop: Sequence[int] = (0, 0),
        bf16: bool = False,
        gradient_checkpointing: bool = False,
        lora_rank: int = 0,
        lora_alpha: float | None = None,
        lora_targets: Sequence[str] = AMUSED_LORA_TARGETS,
    ) -> None:
        self.device = torch.device(device)
        self.autocast = bool(bf16)
        self.dtype = torch.bfloat16 if self.autocast else dtype
        self.model = place(transformer, self.device, dtype).eval()
        self.vqvae = place(vqvae.requires_grad_(False).eval(), self.device, dtype)
        self.text = ClipPromptEncoder(place(text_encoder, self.device, dtype), tokenizer, self.device)
        self.negative_prompt = negative_prompt
        self.cfg_scale = float(cfg_scale)
        if masking_schedule not in ("cosine", "linear"):
            raise ValueError(f"masking_schedule must be 'cosine' or 'linear', got {masking_schedule!r}")
        self.masking_schedule = masking_schedule
        self.aesthetic_score = float(aesthetic_score)
        self.crop = (int(crop[0]), int(crop[1]))

        config = transformer.config
        self.codebook_size = int(config.codebook_size)
        self.mask_token_id = int(config.vocab_size) - 1 if mask_token_id is None else int(mask_token_id)
        self.vae_scale_factor = vq_scale_factor(vqvae)
        if resolution is None:
            resolution = int(config.sample_size) * self.vae_scale_factor
        height, width = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        self.image_size = (int(height), int(width))
        self.token_grid = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        factor = 2 if config.downsample else 1
        self.feature_grid = (self.token_grid[0] // factor, self.token_grid[1] // factor)
        self.feature_dim = int(config.hidden_size)

        self.model.project_from_hidden_norm.register_forward_pre_hook(_keep_features)
        if lora_rank > 0:
            add_lora(self.model, lora_rank, lora_alpha, lora_targets)
        if gradient_checkpointing:
            # UVit2DModel's own flag wraps its layers in a function that drops keyword arguments,
            # so each transformer layer is checkpointed here instead.
            for layer in self.model.transformer_layers:
                checkpoint_module_forward(layer)

    # -- loading ----------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path: str | None = None,
        *,
        variant: str = "amused-256",
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        cache_dir: str | None = None,
        local_files_only: bool | None = None,
        **options: Any,
    ) -> AmusedBackbone:
        """Load ``amused/amused-256`` / ``amused/amused-512`` (``variant``) or a local directory
        with the same layout (``transformer/``, ``vqvae/``, ``text_encoder/``, ``tokenizer/``,
        ``scheduler/``)."""
        from diffusers import AmusedScheduler, UVit2DModel, VQModel
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        if variant not in AMUSED_REPOS:
            raise ValueError(f"unknown aMUSEd variant {variant!r}; choose from {', '.join(AMUSED_REPOS)}")
        repo = AMUSED_REPOS[variant]
        parts = ComponentLoader(
            path or repo,
            label="aMUSEd",
            default_repo=repo,
            layout=AMUSED_LAYOUT,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
        )
        transformer = parts.load(UVit2DModel.from_pretrained, "transformer")
        vqvae = parts.load(VQModel.from_pretrained, "vqvae")
        encoder = parts.load(CLIPTextModelWithProjection.from_pretrained, "text_encoder")
        tokenizer = parts.load(CLIPTokenizer.from_pretrained, "tokenizer", model_max_length=77)
        scheduler = parts.load(AmusedScheduler.from_pretrained, "scheduler")
        options.setdefault("mask_token_id", scheduler.config.mask_token_id)
        options.setdefault("masking_schedule", scheduler.config.masking_schedule)
        return cls(transformer, vqvae, encoder, tokenizer, device=device, dtype=dtype, **options)

    # -- Backbone protocol ------------------------------------------------------------------------

    def encode_prompts(self, prompts: Sequence[str], negative_prompt: str | None = None) -> PromptEmbeds:
        """CLIP penultimate states and ``text_embeds`` for the prompts and the negative prompt."""
        neg = self.negative_prompt if negative_prompt is None else negative_prompt
        return self.text.encode_with_negative(prompts, neg)

    def forward(
        self, tokens: torch.Tensor, prompt: PromptEmbeds, step: int, num_steps: int, guidance: bool
    ) -> BackboneOutput:
        b = tokens.shape[0]
        grid = tokens.view(b, *self.token_grid)  # [B, h, w]
        hidden, pooled = cfg_batch(prompt, guidance)
        if guidance:
            grid = torch.cat([grid, grid])
        rows = grid.shape[0]
        height, width = self.image_size
        micro = micro_conditions(
            rows, width, height, self.crop, self.aesthetic_score, device=self.device, dtype=hidden.dtype
        )
        with autocast_context(self.device, self.autocast):
            logits = self.model(grid, micro_conds=micro, pooled_text_emb=pooled, encoder_hidden_states=hidden)
        norm = self.model.project_from_hidden_norm  # ``self.model`` may be swapped for a copy (KL reference)
        features, norm.cogrpo_features = norm.cogrpo_features, None  # [rows, N', hidden]
        features = features.transpose(1, 2).reshape(rows, -1, *self.feature_grid)  # [rows, hidden, h', w']
        logits = logits.flatten(2).transpose(1, 2)  # [rows, K, h, w] -> [rows, N, K]
        return BackboneOutput.from_batched_cfg(logits, features, b, guidance)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return decode_tokens(self.vqvae, tokens, self.token_grid)

    def default_schedule(self) -> FixedSchedule:
        from cogrpo_schedulers.fixed import CosineSchedule, LinearSchedule

        if self.masking_schedule == "linear":
            return LinearSchedule(cfg_scale=self.cfg_scale)
        return CosineSchedule(cfg_scale=self.cfg_scale)

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        num_steps: int = AMUSED_STEPS,
        guidance_scale: float | None = None,
        negative_prompt: str | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        return_tokens: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Images ``[B, 3, H, W]`` in [0, 1]; equal to ``AmusedPipeline`` for the same generator."""
        return generate_with_default_schedule(
            self, prompts, num_steps, guidance_scale, negative_prompt, generator, return_tokens
        )
