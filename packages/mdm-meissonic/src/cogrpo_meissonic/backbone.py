"""The ``meissonic`` backbone: Meissonic's transformer + VQ-VAE + CLIP text encoder as a cogrpo
:class:`~cogrpo.protocols.Backbone`.

One step's forward, as Meissonic's pipeline does it (``B`` trajectories, ``h x w`` tokens)::

    tokens [B, N] -> grid [B, h, w]; under CFG the batch is [negative; positive] (2B rows)
    transformer(grid, penultimate CLIP states, CLIP text_embeds, micro_conds, t = T-1-k,
                img_ids of the attended grid)  -> logits [rows, K, h, w], features [rows, C, h', w']
    -> cond / uncond logits [B, N, K] (token-last), features of the conditional rows

``generate`` runs cogrpo's sampler under the default schedule (cosine re-mask ratio, re-mask
temperature 2 -> 0, CFG 9), which is the reference pipeline's sampler draw for draw.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from cogrpo.protocols import BackboneOutput, FixedSchedule, PromptEmbeds
from cogrpo_meissonic.common import (
    ClipPromptEncoder,
    ComponentLoader,
    add_lora,
    autocast_context,
    cfg_batch,
    decode_tokens,
    micro_conditions,
    place,
    vq_scale_factor,
)
from cogrpo_meissonic.transformer import MeissonicTransformer2DModel, image_position_ids

MEISSONIC_REPO = "MeissonFlow/Meissonic"
#: The text encoder the reference ``inference.py`` swaps in "for stable sampling".
REFERENCE_TEXT_ENCODER = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
#: The negative prompt of the reference ``inference.py`` (its default in the pipeline is "").
REFERENCE_NEGATIVE_PROMPT = (
    "worst quality, low quality, low res, blurry, distortion, watermark, logo, signature, text, jpeg artifacts, "
    "signature, sketch, duplicate, ugly, identifying mark"
)
MEISSONIC_LAYOUT = {
    "transformer": "config.json, diffusion_pytorch_model.safetensors",
    "vqvae": "config.json, diffusion_pytorch_model.safetensors",
    "text_encoder": "config.json, model.safetensors",
    "tokenizer": "vocab.json, merges.txt, tokenizer_config.json",
}
#: Attention and MLP projections of the joint and single blocks.
MEISSONIC_LORA_TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "add_q_proj",
    "add_k_proj",
    "add_v_proj",
    "to_add_out",
    "ff.net.0.proj",
    "ff.net.2",
    "ff_context.net.0.proj",
    "ff_context.net.2",
    "proj_mlp",
    "proj_out",
)


class MeissonicBackbone:
    """Meissonic (or any model with its transformer layout) behind the cogrpo backbone protocol.

    :param resolution: image side in pixels (``int`` or ``(height, width)``); the token grid is
        ``resolution / vae_scale_factor`` and must be even for the down-sampling model. The
        reference pipeline only works at 1024 px for the released model (it builds ids for a
        non-downsampled grid otherwise); here the ids always follow the attended grid.
    :param bf16: run the transformer under bf16 autocast (weights stay in ``dtype``).
    :param gradient_checkpointing: recompute the blocks in the backward pass.
    :param lora_rank: > 0 trains LoRA adapters on the attention / MLP projections only.
    """

    name = "meissonic"

    def __init__(
        self,
        transformer: MeissonicTransformer2DModel,
        vqvae: nn.Module,
        text_encoder: nn.Module,
        tokenizer: Any,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        resolution: int | Sequence[int] = 1024,
        negative_prompt: str = "",
        cfg_scale: float = 9.0,
        aesthetic_score: float = 6.0,
        crop: Sequence[int] = (0, 0),
        bf16: bool = False,
        gradient_checkpointing: bool = False,
        lora_rank: int = 0,
        lora_alpha: float | None = None,
        lora_targets: Sequence[str] = MEISSONIC_LORA_TARGETS,
    ) -> None:
        self.device = torch.device(device)
        self.weight_dtype = dtype
        self.autocast = bool(bf16)
        self.dtype = torch.bfloat16 if self.autocast else dtype
        self.model = place(transformer, self.device, dtype).eval()
        self.vqvae = place(vqvae.requires_grad_(False).eval(), self.device, dtype)
        self.text = ClipPromptEncoder(place(text_encoder, self.device, dtype), tokenizer, self.device)
        self.negative_prompt = negative_prompt
        self.cfg_scale = float(cfg_scale)
        self.aesthetic_score = float(aesthetic_score)
        self.crop = (int(crop[0]), int(crop[1]))

        config = transformer.config
        self.codebook_size = int(config.codebook_size)
        self.mask_token_id = int(config.vocab_size) - 1  # 8255 for the released model
        self.vae_scale_factor = vq_scale_factor(vqvae)
        height, width = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        self.image_size = (int(height), int(width))
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"resolution {height}x{width} must be a multiple of the VQ factor {self.vae_scale_factor}")
        self.token_grid = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        factor = transformer.attended_grid_factor
        if self.token_grid[0] % factor or self.token_grid[1] % factor:
            raise ValueError(f"token grid {self.token_grid} must be even for a down-sampling transformer")
        self.feature_grid = (self.token_grid[0] // factor, self.token_grid[1] // factor)
        self.feature_dim = int(transformer.inner_dim)
        self._img_ids = image_position_ids(*self.feature_grid, device=self.device)  # [N', 3]

        if lora_rank > 0:
            add_lora(self.model, lora_rank, lora_alpha, lora_targets)
        self.model.set_gradient_checkpointing(gradient_checkpointing)

    # -- loading ----------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path: str | None = None,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        text_encoder: str | None = None,
        cache_dir: str | None = None,
        local_files_only: bool | None = None,
        **options: Any,
    ) -> MeissonicBackbone:
        """Load from a hub repo id (default ``MeissonFlow/Meissonic``) or a local directory with
        its layout (``transformer/``, ``vqvae/``, ``text_encoder/``, ``tokenizer/``).

        :param text_encoder: another ``CLIPTextModelWithProjection`` (repo id or directory),
            e.g. :data:`REFERENCE_TEXT_ENCODER` as the reference ``inference.py`` uses; default:
            the checkpoint's own ``text_encoder/`` (what the training script uses).
        :param local_files_only: never touch the network (default: ``HF_HUB_OFFLINE``).
        """
        from diffusers import VQModel
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        kw = dict(cache_dir=cache_dir, local_files_only=local_files_only)
        parts = ComponentLoader(
            path or MEISSONIC_REPO, label="Meissonic", default_repo=MEISSONIC_REPO, layout=MEISSONIC_LAYOUT, **kw
        )
        transformer = parts.load(MeissonicTransformer2DModel.from_pretrained, "transformer")
        vqvae = parts.load(VQModel.from_pretrained, "vqvae")
        tokenizer = parts.load(CLIPTokenizer.from_pretrained, "tokenizer", model_max_length=77)
        if text_encoder is None:
            encoder = parts.load(CLIPTextModelWithProjection.from_pretrained, "text_encoder")
        else:
            other = ComponentLoader(
                text_encoder,
                label="CLIP text encoder",
                default_repo=REFERENCE_TEXT_ENCODER,
                layout={".": "config.json, model.safetensors"},
                **kw,
            )
            encoder = other.load(CLIPTextModelWithProjection.from_pretrained, "")
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
        hidden, pooled = cfg_batch(prompt, guidance)  # [rows, 77, Dt], [rows, Dp]
        if guidance:
            grid = torch.cat([grid, grid])
        rows = grid.shape[0]
        height, width = self.image_size
        micro = micro_conditions(
            rows, width, height, self.crop, self.aesthetic_score, device=self.device, dtype=hidden.dtype
        )
        timestep = torch.tensor([num_steps - 1 - step], dtype=torch.long, device=self.device)  # the pipeline's t
        with autocast_context(self.device, self.autocast):
            logits, features = self.model(
                hidden_states=grid,
                encoder_hidden_states=hidden,
                pooled_projections=pooled,
                micro_conds=micro,
                timestep=timestep,
                img_ids=self._img_ids,
                txt_ids=torch.zeros(hidden.shape[1], 3, device=self.device, dtype=hidden.dtype),
                return_features=True,
            )  # [rows, K, h, w], [rows, C, h', w']
        logits = logits.flatten(2).transpose(1, 2)  # [rows, N, K]
        return BackboneOutput.from_batched_cfg(logits, features, b, guidance)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return decode_tokens(self.vqvae, tokens, self.token_grid)

    def default_schedule(self) -> FixedSchedule:
        from cogrpo_schedulers.fixed import CosineSchedule

        return CosineSchedule(cfg_scale=self.cfg_scale)

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    # -- generation -------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        num_steps: int = 64,
        guidance_scale: float | None = None,
        negative_prompt: str | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        return_tokens: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Images ``[B, 3, H, W]`` in [0, 1] with the released schedule (the reference pipeline's
        sampler: one generator gives the pipeline's draws for the same seed)."""
        return generate_with_default_schedule(
            self, prompts, num_steps, guidance_scale, negative_prompt, generator, return_tokens
        )


def generate_with_default_schedule(
    backbone: Any,
    prompts: Sequence[str],
    num_steps: int,
    guidance_scale: float | None,
    negative_prompt: str | None,
    generator: torch.Generator | Sequence[torch.Generator] | None,
    return_tokens: bool,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """cogrpo's sampler under ``backbone.default_schedule()`` (CFG skipped when the scale is <= 1,
    as the pipelines do), then the VQ decoder."""
    from dataclasses import replace

    from cogrpo.sampler import rollout
    from cogrpo.schedule import ScheduleActor

    schedule = backbone.default_schedule()
    if guidance_scale is not None:
        schedule = replace(schedule, cfg_scale=float(guidance_scale))
    prompt = backbone.encode_prompts(list(prompts), negative_prompt=negative_prompt)
    traj = rollout(
        backbone,
        prompt,
        num_steps=num_steps,
        actor=ScheduleActor(schedule),
        action_mode="base",
        generators=generator,
        guidance=schedule.cfg_scale > 1.0,
    )
    images = backbone.decode(traj.tokens)
    return (images, traj.tokens) if return_tokens else images
