"""What the Meissonic and aMUSEd backbones share: CLIP prompt encoding, VQ decoding, micro-
conditions, offline-friendly loading, LoRA and mixed precision.

Both reference pipelines (Meissonic's ``Pipeline`` and diffusers' ``AmusedPipeline``) drive their
transformer the same way around the network itself:

* prompts tokenized to 77 ids (``padding="max_length"``, truncation, no attention mask); the
  text model runs with ``output_hidden_states=True``; ``encoder_hidden_states`` is the
  *penultimate* layer's output ``hidden_states[-2]`` and ``pooled`` the projected ``text_embeds``;
* classifier-free guidance batches ``[negative; positive]`` (negative first), the negative prompt
  defaulting to ``""``;
* ``micro_conds = [width, height, crop_0, crop_1, aesthetic]`` in pixels (width first);
* decoding: ``VQModel.decode(tokens, force_not_quantize=True, shape=(B, h, w, C))`` (a codebook
  lookup), clipped to [0, 1], no scaling factor.
"""

from __future__ import annotations

import contextlib
import os
import re
import types
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cogrpo.errors import WeightsNotFoundError

TEXT_MAX_LENGTH = 77
PATH_FLAG = "--backbone-path"


# -------------------------------------------------------------------------------------------------
# Prompt encoding, micro-conditions, decoding
# -------------------------------------------------------------------------------------------------


class ClipPromptEncoder:
    """Frozen ``CLIPTextModelWithProjection`` + tokenizer, encoding prompts the pipelines' way."""

    def __init__(self, text_encoder: nn.Module, tokenizer: Any, device: torch.device) -> None:
        self.text_encoder = text_encoder.requires_grad_(False).eval().to(device)
        self.tokenizer = tokenizer
        self.device = device
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``prompts`` -> ``(encoder_hidden_states [B, 77, Dt], pooled [B, Dp])``."""
        ids = self.tokenizer(
            list(prompts), return_tensors="pt", padding="max_length", truncation=True, max_length=TEXT_MAX_LENGTH
        ).input_ids.to(self.device)  # [B, 77]
        out = self.text_encoder(ids, return_dict=True, output_hidden_states=True)
        return out.hidden_states[-2], out.text_embeds

    def cached(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One prompt's embeddings ``([1, 77, Dt], [1, Dp])``, encoded once (the negative prompt)."""
        if prompt not in self._cache:
            self._cache[prompt] = self([prompt])
        return self._cache[prompt]

    def encode_with_negative(self, prompts: Sequence[str], negative_prompt: str) -> dict[str, torch.Tensor]:
        """The :data:`cogrpo.protocols.PromptEmbeds` of both backbones (batch ``B`` on every key)."""
        if len(prompts) == 0:
            raise ValueError("encode_prompts needs at least one prompt")
        hidden, pooled = self(prompts)
        neg_hidden, neg_pooled = self.cached(negative_prompt)
        b = len(prompts)
        return {
            "encoder_hidden_states": hidden,  # [B, 77, Dt]
            "pooled": pooled,  # [B, Dp]
            "negative_encoder_hidden_states": neg_hidden.expand(b, -1, -1),
            "negative_pooled": neg_pooled.expand(b, -1),
        }


def cfg_batch(prompt: dict[str, torch.Tensor], guidance: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(encoder_hidden_states, pooled)`` for one forward: ``[negative; positive]`` under CFG."""
    if not guidance:
        return prompt["encoder_hidden_states"], prompt["pooled"]
    hidden = torch.cat([prompt["negative_encoder_hidden_states"], prompt["encoder_hidden_states"]])
    pooled = torch.cat([prompt["negative_pooled"], prompt["pooled"]])
    return hidden, pooled


def micro_conditions(
    rows: int, width: int, height: int, crop: tuple[int, int], aesthetic: float, *, device, dtype
) -> torch.Tensor:
    """``[rows, 5]`` ``[width, height, crop_0, crop_1, aesthetic]`` in pixels (width first, as both
    pipelines build it), in the text embeddings' dtype."""
    row = torch.tensor([width, height, crop[0], crop[1], aesthetic], device=device, dtype=dtype)
    return row.unsqueeze(0).expand(rows, -1)


def vq_scale_factor(vqvae: nn.Module) -> int:
    """Pixels per token side: ``2 ** (len(block_out_channels) - 1)`` (16 for Meissonic / aMUSEd)."""
    return 2 ** (len(vqvae.config.block_out_channels) - 1)


@torch.no_grad()
def decode_tokens(vqvae: nn.Module, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[B, N]`` codebook ids -> ``[B, 3, H_img, W_img]`` float32 images in [0, 1]."""
    b = tokens.shape[0]
    h, w = grid
    upcast = vqvae.dtype == torch.float16 and getattr(vqvae.config, "force_upcast", False)
    model = vqvae.float() if upcast else vqvae
    images = model.decode(
        tokens.reshape(b, h, w), force_not_quantize=True, shape=(b, h, w, vqvae.config.latent_channels)
    ).sample
    if upcast:
        vqvae.half()
    return images.clip(0, 1).float()


# -------------------------------------------------------------------------------------------------
# Placement, mixed precision, LoRA
# -------------------------------------------------------------------------------------------------


def place(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Move ``module`` to ``device`` and cast it to ``dtype`` only when needed (diffusers warns on
    every dtype cast through ``.to``)."""
    module.to(device)
    if any(p.dtype != dtype for p in module.parameters() if p.is_floating_point()):
        module.to(dtype)
    return module


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` (weights stay fp32; the sampler upcasts logits to fp32)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def add_lora(model: nn.Module, rank: int, alpha: float | None, target_modules: Sequence[str]) -> None:
    """Inject LoRA adapters (``peft``) into ``model`` and freeze everything else.

    The adapters' ``lora_B`` starts at zero, so the model's outputs are unchanged until trained.
    """
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, target_modules=list(target_modules))
    inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)


def _checkpointed_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    from torch.utils.checkpoint import checkpoint

    plain = type(self).forward.__get__(self)
    if torch.is_grad_enabled():
        return checkpoint(plain, *args, use_reentrant=False, **kwargs)
    return plain(*args, **kwargs)


def checkpoint_module_forward(module: nn.Module) -> None:
    """Make ``module`` recompute its activations in the backward pass (non-reentrant, so keyword
    arguments and autocast state are kept); a no-op without grad. Bound as a method, so a deep
    copy of the model (a KL reference) checkpoints its own weights."""
    module.forward = types.MethodType(_checkpointed_forward, module)


# -------------------------------------------------------------------------------------------------
# Offline-friendly loading
# -------------------------------------------------------------------------------------------------


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` read at call time (huggingface_hub reads it once at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_repo_id(source: str) -> bool:
    """``owner/name`` (anything else that is not an existing directory is taken as a path)."""
    return bool(_REPO_ID.match(source))


class ComponentLoader:
    """Loads a pipeline's parts from a hub repo id or a local directory, turning every "not
    there" into one :class:`WeightsNotFoundError` line that names the repo, the files expected
    and the flag for a local path."""

    def __init__(
        self,
        source: str,
        *,
        label: str,
        default_repo: str,
        layout: dict[str, str],
        cache_dir: str | None = None,
        local_files_only: bool | None = None,
    ) -> None:
        """:param layout: ``{subfolder: files expected there}``, used in the messages."""
        self.source = str(source)
        self.label = label
        self.default_repo = default_repo
        self.layout = layout
        self.cache_dir = cache_dir
        self.local_files_only = hub_offline() if local_files_only is None else bool(local_files_only)
        expanded = Path(self.source).expanduser()
        self.is_local = expanded.is_dir()
        if self.is_local:
            self.source = str(expanded)
        elif expanded.exists() or not looks_like_repo_id(self.source):
            raise WeightsNotFoundError(
                f"{label} weights: directory '{self.source}' does not exist; pass a local copy of "
                f"{default_repo} ({self._expected()}) with {PATH_FLAG} DIR"
            )

    def _expected(self) -> str:
        return ", ".join(f"{sub}/{{{files}}}" for sub, files in self.layout.items())

    def _missing(self, subfolder: str, reason: str) -> WeightsNotFoundError:
        where = f"local directory '{self.source}'" if self.is_local else f"repo '{self.source}'"
        hub = "" if self.is_local else " (not in the Hugging Face cache and the hub was not reachable or is offline)"
        part = f"'{subfolder}/'" if subfolder else "model files"
        return WeightsNotFoundError(
            f"{self.label} weights not found: {where} has no usable {part}{hub}: {reason}; "
            f"expected {self._expected()}; download them (`hf download {self.default_repo}`) or pass a local "
            f"directory with {PATH_FLAG} DIR"
        )

    def load(self, loader: Callable[..., Any], subfolder: str, **kwargs: Any) -> Any:
        """``loader(source, subfolder=subfolder, ...)`` with the cache / offline options."""
        if self.is_local and not (Path(self.source) / subfolder).is_dir():
            raise self._missing(subfolder, "no such folder")
        try:
            with warnings.catch_warnings():  # diffusers passes a deprecated hub argument
                warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
                return loader(
                    self.source,
                    subfolder=subfolder,
                    cache_dir=self.cache_dir,
                    local_files_only=self.local_files_only,
                    **kwargs,
                )
        except OSError as exc:  # hub / file-system "not found" (EnvironmentError and the hub's errors)
            reason = " ".join(str(exc).split())[:200]
            raise self._missing(subfolder, reason) from exc
