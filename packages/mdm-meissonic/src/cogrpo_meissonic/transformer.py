"""Meissonic's masked-token transformer, written here on diffusers' building blocks.

``MeissonicTransformer2DModel`` loads the released ``MeissonFlow/Meissonic`` ``transformer/``
weights with strict key matching and reproduces the reference forward (checked against
``tests/fixtures/meissonic``). Pipeline:

    token ids [B, H, W]
      -> embed (Embedding -> RMSNorm -> 1x1 conv)                [B, C, H, W]
      -> down_block (RMSNorm, 2x2 stride-2 conv; optional)      [B, C, h, w]
      -> flatten row-major, RMSNorm, Linear                     [B, N, C]      N = h * w
    text [B, L, Dt] -> context_embedder, RMSNorm                [B, L, C]
    temb = timestep MLP(sinusoid(t * 1000)) + MLP(cond_embed([pooled; micro-cond sinusoids]))
      -> 14 joint blocks (text / image streams, Flux-style AdaLN-Zero, 2D RoPE)
      -> 28 single blocks on [text; image]; keep the image part  [B, N, C]    ("features")
      -> RMSNorm, Linear, un-flatten, up_block (RMSNorm, 2x2 transposed conv), conv MLM head
    logits [B, K, H, W]   (K = codebook_size; the input grid, channel-first)

Conventions the released weights depend on (see the fixture README): sinusoids cos-first and
formed in float32, RoPE on adjacent pairs with frequencies in float64, ``[text; image]`` order
everywhere, ``micro_conds = [width, height, crop_0, crop_1, aesthetic]``, and the pipeline's
integer timestep ``t`` multiplied by 1000 inside the forward.

The attention is written here (it is short) instead of reusing diffusers' Flux attention
classes, whose constructor and processor interfaces changed between releases; everything else
is diffusers' own (``RMSNorm``, ``AdaLayerNormZero[Single]``, ``FeedForward``, the timestep
embeddings, ``get_1d_rotary_pos_embed`` / ``apply_rotary_emb``, aMUSEd's conv embed / MLM head,
``Downsample2D`` / ``Upsample2D``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import FeedForward
from diffusers.models.embeddings import (
    CombinedTimestepTextProjEmbeddings,
    TimestepEmbedding,
    apply_rotary_emb,
    get_1d_rotary_pos_embed,
    get_timestep_embedding,
)
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormZero, AdaLayerNormZeroSingle, RMSNorm
from diffusers.models.resnet import Downsample2D, Upsample2D
from diffusers.models.unets.uvit_2d import ConvMlmLayer, UVit2DConvEmbed
from torch import nn
from torch.utils.checkpoint import checkpoint

NORM_EPS = 1e-6
MICRO_COND_SLOTS = 5  # [width, height, crop_0, crop_1, aesthetic]
SINUSOID_WIDTH = 256  # per micro-cond slot and for the timestep
ROPE_THETA = 10000
TIMESTEP_SCALE = 1000.0

Rotary = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each [S, head_dim]


# -------------------------------------------------------------------------------------------------
# Positions
# -------------------------------------------------------------------------------------------------


def image_position_ids(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``[h*w, 3]`` int64 rows ``[0, row, col]`` in row-major order over the *attended* grid."""
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=1)


def rotary_embedding(ids: torch.Tensor, axes_dims: tuple[int, ...]) -> Rotary:
    """Flux-style 2D RoPE tables for ``ids [S, 3]`` -> ``(cos, sin)`` each ``[S, sum(axes_dims)]``.

    Per axis the frequencies are ``theta^(-2k/d)``, formed in float64 (float32 on MPS) and
    repeated pair-interleaved ``(c0, c0, c1, c1, ...)``.
    """
    pos = ids.float()
    freqs_dtype = torch.float32 if ids.device.type == "mps" else torch.float64
    cos, sin = [], []
    for axis, dim in enumerate(axes_dims):
        c, s = get_1d_rotary_pos_embed(
            dim, pos[:, axis], theta=ROPE_THETA, use_real=True, repeat_interleave_real=True, freqs_dtype=freqs_dtype
        )
        cos.append(c)
        sin.append(s)
    return torch.cat(cos, dim=-1).to(ids.device), torch.cat(sin, dim=-1).to(ids.device)


# -------------------------------------------------------------------------------------------------
# Attention and blocks
# -------------------------------------------------------------------------------------------------


class MeissonicAttention(nn.Module):
    """Multi-head attention with per-head q/k RMSNorm and RoPE; joint (text + image) when
    ``context_dim`` is set, else single-stream without an output projection (the single block's
    ``proj_out`` takes its place). Parameter names follow the released checkpoint."""

    def __init__(self, dim: int, heads: int, head_dim: int, *, joint: bool) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        inner = heads * head_dim
        self.norm_q = RMSNorm(head_dim, eps=NORM_EPS)
        self.norm_k = RMSNorm(head_dim, eps=NORM_EPS)
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.joint = joint
        if joint:
            self.add_k_proj = nn.Linear(dim, inner)
            self.add_v_proj = nn.Linear(dim, inner)
            self.add_q_proj = nn.Linear(dim, inner)
            self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])
            self.to_add_out = nn.Linear(inner, dim)
            self.norm_added_q = RMSNorm(head_dim, eps=NORM_EPS)
            self.norm_added_k = RMSNorm(head_dim, eps=NORM_EPS)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, S, h*d] -> [B, h, S, d]
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def forward(
        self, hidden_states: torch.Tensor, rotary: Rotary, context: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        q = self.norm_q(self._heads(self.to_q(hidden_states)))
        k = self.norm_k(self._heads(self.to_k(hidden_states)))
        v = self._heads(self.to_v(hidden_states))
        if context is not None:  # text first: [B, h, L + N, d]
            q = torch.cat([self.norm_added_q(self._heads(self.add_q_proj(context))), q], dim=2)
            k = torch.cat([self.norm_added_k(self._heads(self.add_k_proj(context))), k], dim=2)
            v = torch.cat([self._heads(self.add_v_proj(context)), v], dim=2)
        q = apply_rotary_emb(q, rotary)
        k = apply_rotary_emb(k, rotary)
        out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype))  # [B, h, S, d]
        out = out.transpose(1, 2).flatten(2).to(q.dtype)  # [B, S, h*d]
        if context is None:
            return out
        text_len = context.shape[1]
        text_out, image_out = out[:, :text_len], out[:, text_len:]
        return self.to_out[0](image_out), self.to_add_out(text_out)


class MeissonicJointBlock(nn.Module):
    """Dual-stream block: separate AdaLN-Zero / MLP per stream, one joint attention."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.norm1 = AdaLayerNormZero(dim)
        self.norm1_context = AdaLayerNormZero(dim)
        self.attn = MeissonicAttention(dim, heads, head_dim, joint=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=NORM_EPS)
        self.ff = FeedForward(dim=dim, dim_out=dim, activation_fn="gelu-approximate")
        self.norm2_context = nn.LayerNorm(dim, elementwise_affine=False, eps=NORM_EPS)
        self.ff_context = FeedForward(dim=dim, dim_out=dim, activation_fn="gelu-approximate")

    def forward(
        self, hidden_states: torch.Tensor, context: torch.Tensor, temb: torch.Tensor, rotary: Rotary
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # hidden_states [B, N, C], context [B, L, C], temb [B, C]
        x, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(hidden_states, emb=temb)
        c, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(context, emb=temb)
        attn_out, context_attn_out = self.attn(x, rotary, context=c)

        hidden_states = hidden_states + gate_msa.unsqueeze(1) * attn_out
        x = self.norm2(hidden_states) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        hidden_states = hidden_states + gate_mlp.unsqueeze(1) * self.ff(x)

        context = context + c_gate_msa.unsqueeze(1) * context_attn_out
        c = self.norm2_context(context) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None]
        context = context + c_gate_mlp.unsqueeze(1) * self.ff_context(c)
        if context.dtype == torch.float16:
            context = context.clip(-65504, 65504)
        return hidden_states, context


class MeissonicSingleBlock(nn.Module):
    """Single-stream block on ``[text; image]``: parallel attention and MLP, one ``proj_out``."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        mlp_dim = int(dim * mlp_ratio)
        self.norm = AdaLayerNormZeroSingle(dim)
        self.proj_mlp = nn.Linear(dim, mlp_dim)
        self.act_mlp = nn.GELU(approximate="tanh")
        self.proj_out = nn.Linear(dim + mlp_dim, dim)
        self.attn = MeissonicAttention(dim, heads, head_dim, joint=False)

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor, rotary: Rotary) -> torch.Tensor:
        # hidden_states [B, L + N, C]
        x, gate = self.norm(hidden_states, emb=temb)
        mlp = self.act_mlp(self.proj_mlp(x))
        attn = self.attn(x, rotary)
        hidden_states = hidden_states + gate.unsqueeze(1) * self.proj_out(torch.cat([attn, mlp], dim=2))
        if hidden_states.dtype == torch.float16:
            hidden_states = hidden_states.clip(-65504, 65504)
        return hidden_states


class _Resample(nn.Module):
    """Holds aMUSEd's 2x down- or up-sampling stage under the checkpoint's names
    (``down_block.downsample.*`` / ``up_block.upsample.*``)."""

    def __init__(self, channels: int, *, down: bool) -> None:
        super().__init__()
        common = dict(kernel_size=2, padding=0, norm_type="rms_norm", eps=NORM_EPS, elementwise_affine=True, bias=False)
        if down:  # zero-pads one row/column at the far end first (no effect on even grids)
            self.downsample = Downsample2D(channels, use_conv=True, name="Conv2d_0", **common)
        else:  # ConvTranspose2d weight layout [in, out, kh, kw]
            self.upsample = Upsample2D(channels, use_conv_transpose=True, name="conv", interpolate=False, **common)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W]
        return self.downsample(x) if hasattr(self, "downsample") else self.upsample(x)


# -------------------------------------------------------------------------------------------------
# The model
# -------------------------------------------------------------------------------------------------


class MeissonicTransformer2DModel(ModelMixin, ConfigMixin):
    """Meissonic's transformer (config and state-dict layout of ``MeissonFlow/Meissonic``).

    The defaults are the released config (14 joint + 28 single blocks, 8 heads of 128, 2D RoPE
    axes 16/56/56, 2x down/up-sampling, vocabulary 8256 with mask id 8255, codebook 8192).
    ``patch_size``, ``in_channels`` and ``guidance_embeds`` are kept for config compatibility and
    change nothing.
    """

    config_name = "config.json"
    _supports_gradient_checkpointing = True
    _no_split_modules = ["MeissonicJointBlock", "MeissonicSingleBlock"]

    @register_to_config
    def __init__(
        self,
        patch_size: int = 1,
        in_channels: int = 64,
        num_layers: int = 14,
        num_single_layers: int = 28,
        attention_head_dim: int = 128,
        num_attention_heads: int = 8,
        joint_attention_dim: int = 1024,
        pooled_projection_dim: int = 1024,
        guidance_embeds: bool = False,
        axes_dims_rope: tuple[int, ...] = (16, 56, 56),
        vocab_size: int = 8256,
        codebook_size: int = 8192,
        downsample: bool = True,
        upsample: bool = True,
    ) -> None:
        super().__init__()
        dim = num_attention_heads * attention_head_dim
        if pooled_projection_dim != dim:
            raise ValueError(
                f"pooled_projection_dim ({pooled_projection_dim}) must equal num_attention_heads * attention_head_dim "
                f"({dim}): the conditioning MLP's output feeds the pooled-text embedder"
            )
        if sum(axes_dims_rope) != attention_head_dim or any(d % 2 for d in axes_dims_rope) or len(axes_dims_rope) != 3:
            raise ValueError(
                f"axes_dims_rope {list(axes_dims_rope)} must be 3 even sizes summing to {attention_head_dim}"
            )
        if downsample != upsample:
            raise ValueError("downsample and upsample must be set together (the logits must cover the input grid)")
        if guidance_embeds:
            raise ValueError("guidance_embeds=True is not supported: no released Meissonic model uses it")

        self.inner_dim = dim
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(embedding_dim=dim, pooled_projection_dim=dim)
        self.context_embedder = nn.Linear(joint_attention_dim, dim)
        self.transformer_blocks = nn.ModuleList(
            MeissonicJointBlock(dim, num_attention_heads, attention_head_dim) for _ in range(num_layers)
        )
        self.single_transformer_blocks = nn.ModuleList(
            MeissonicSingleBlock(dim, num_attention_heads, attention_head_dim) for _ in range(num_single_layers)
        )
        self.embed = UVit2DConvEmbed(dim, dim, vocab_size, True, NORM_EPS, False)
        self.mlm_layer = ConvMlmLayer(dim, dim, False, True, NORM_EPS, codebook_size)
        self.cond_embed = TimestepEmbedding(
            pooled_projection_dim + MICRO_COND_SLOTS * SINUSOID_WIDTH, dim, sample_proj_bias=False
        )
        self.encoder_proj_layer_norm = RMSNorm(dim, NORM_EPS, True)
        self.project_to_hidden_norm = RMSNorm(dim, NORM_EPS, True)
        self.project_to_hidden = nn.Linear(dim, dim, bias=False)
        self.project_from_hidden_norm = RMSNorm(dim, NORM_EPS, True)
        self.project_from_hidden = nn.Linear(dim, dim, bias=False)
        self.down_block = _Resample(dim, down=True) if downsample else None
        self.up_block = _Resample(dim, down=False) if upsample else None
        self.gradient_checkpointing = False

    # -- loading ----------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained`` with strict key matching: any missing, unexpected or
        mis-shaped tensor is an error (a wrong config would otherwise load half a model)."""
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, output_loading_info=True, **kwargs)
        problems = {k: info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)}
        if problems:
            detail = "; ".join(f"{k}: {list(v)[:5]}{' ...' if len(v) > 5 else ''}" for k, v in problems.items())
            raise ValueError(f"{pretrained_model_name_or_path}: checkpoint does not match the config ({detail})")
        return (model, info) if want_info else model

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute every joint / single block in the backward pass (activation memory ~1 block)."""
        self.gradient_checkpointing = bool(enabled)

    # -- forward ----------------------------------------------------------------------------------

    @property
    def attended_grid_factor(self) -> int:
        """How much the token grid shrinks before attention (2 with down-sampling, else 1)."""
        return 2 if self.config.downsample else 1

    def conditioning(
        self, pooled_projections: torch.Tensor, micro_conds: torch.Tensor, timestep: torch.Tensor
    ) -> torch.Tensor:
        """``temb [B, C]`` from ``pooled [B, Dp]``, ``micro_conds [B, 5]`` and ``timestep [1] or [B]``."""
        b = pooled_projections.shape[0]
        if micro_conds.shape != (b, MICRO_COND_SLOTS):
            raise ValueError(f"micro_conds must be [B, {MICRO_COND_SLOTS}], got {tuple(micro_conds.shape)}")
        # Sinusoids formed in float32 (large arguments: sizes 1024, t * 1000 = 63000), cos half first.
        micro = get_timestep_embedding(
            micro_conds.flatten(), SINUSOID_WIDTH, flip_sin_to_cos=True, downscale_freq_shift=0
        )
        cond = torch.cat([pooled_projections, micro.reshape(b, -1).to(pooled_projections.dtype)], dim=1)
        cond = self.cond_embed(cond.to(self.cond_embed.linear_1.weight.dtype))  # [B, C]
        t = timestep.reshape(-1).to(torch.float32) * TIMESTEP_SCALE
        return self.time_text_embed(t, cond)  # [B, C] (a [1] timestep broadcasts)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        pooled_projections: torch.Tensor,
        micro_conds: torch.Tensor,
        timestep: torch.Tensor,
        img_ids: torch.Tensor | None = None,
        txt_ids: torch.Tensor | None = None,
        return_features: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits over the codebook for every input token.

        :param hidden_states: ``[B, H, W]`` int64 token ids (mask id = ``vocab_size - 1``).
        :param encoder_hidden_states: ``[B, L, joint_attention_dim]`` penultimate CLIP states.
        :param pooled_projections: ``[B, pooled_projection_dim]`` CLIP ``text_embeds``.
        :param micro_conds: ``[B, 5]`` ``[width, height, crop_0, crop_1, aesthetic]``.
        :param timestep: ``[1]`` or ``[B]`` the pipeline's integer step value ``t`` (``T-1 .. 0``).
        :param img_ids: ``[N, 3]`` ids of the attended grid (built from the grid when omitted).
        :param txt_ids: ``[L, 3]`` text ids (zeros when omitted).
        :param return_features: also return the final-layer image-token states ``[B, C, h, w]``.
        :return: logits ``[B, codebook_size, H, W]`` (and the features).
        """
        b, height, width = hidden_states.shape
        if self.config.downsample and (height % 2 or width % 2):
            raise ValueError(f"the token grid must be even with down-sampling, got {height}x{width}")
        temb = self.conditioning(pooled_projections, micro_conds, timestep)

        x = self.embed(hidden_states)  # [B, C, H, W]
        if self.down_block is not None:
            x = self.down_block(x)  # [B, C, h, w]
        h, w = x.shape[-2:]
        x = x.permute(0, 2, 3, 1).reshape(b, h * w, -1)  # [B, N, C] row-major
        x = self.project_to_hidden(self.project_to_hidden_norm(x))
        context = self.encoder_proj_layer_norm(self.context_embedder(encoder_hidden_states))  # [B, L, C]
        text_len = context.shape[1]

        if img_ids is None:
            img_ids = image_position_ids(h, w, device=x.device)
        if txt_ids is None:
            txt_ids = torch.zeros(text_len, 3, device=x.device)
        img_ids = img_ids[0] if img_ids.ndim == 3 else img_ids
        txt_ids = txt_ids[0] if txt_ids.ndim == 3 else txt_ids
        if img_ids.shape[0] != h * w or txt_ids.shape[0] != text_len:
            raise ValueError(
                f"need one id row per attended token: img_ids {tuple(img_ids.shape)} for a {h}x{w} grid, "
                f"txt_ids {tuple(txt_ids.shape)} for {text_len} text tokens"
            )
        rotary = rotary_embedding(
            torch.cat([txt_ids.to(img_ids.dtype), img_ids], dim=0), tuple(self.config.axes_dims_rope)
        )

        for block in self.transformer_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x, context = checkpoint(block, x, context, temb, rotary, use_reentrant=False)
            else:
                x, context = block(x, context, temb, rotary)
        x = torch.cat([context, x], dim=1)  # [B, L + N, C]
        for block in self.single_transformer_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = checkpoint(block, x, temb, rotary, use_reentrant=False)
            else:
                x = block(x, temb, rotary)
        x = x[:, text_len:]  # [B, N, C]
        features = x

        x = self.project_from_hidden(self.project_from_hidden_norm(x))
        x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2)  # [B, C, h, w]
        if self.up_block is not None:
            x = self.up_block(x)  # [B, C, H, W]
        logits = self.mlm_layer(x)  # [B, K, H, W]
        if return_features:
            return logits, features.transpose(1, 2).reshape(b, -1, h, w)
        return logits
