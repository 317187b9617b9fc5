"""The small protocols that plugins implement: backbones, rewards, schedules, benchmarks.

A plugin package implements one of these in one self-contained file and registers a factory for
it through a ``cogrpo_register_*`` hook (see :mod:`cogrpo.hookspecs`). Nothing here imports a
heavy dependency; the core only talks to plugins through these shapes.

Tensor conventions used everywhere in cogrpo:

* ``B`` batch (trajectories), ``N = H * W`` image tokens, ``K`` codebook size (real token ids
  ``0..K-1``), ``D`` feature width, ``T`` sampling steps, ``C`` number of sampled schedule
  components.
* Token grids are flattened row-major to ``[B, N]``; logits are token-last ``[B, N, K]``.
* Images are float ``[B, 3, H_img, W_img]`` in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

#: The four schedule components, in the canonical column order of every schedule tensor:
#: re-mask ratio ``r``, re-mask temperature ``tau_r``, sampling temperature ``tau_s``, CFG scale.
SCHEDULE_COMPONENTS: tuple[str, ...] = ("r", "tau_r", "tau_s", "cfg")

#: Prompt embeddings as the backbone wants them: tensors with a leading batch axis ``B``. The core
#: only ever indexes them along that axis (``{k: v[idx] for k, v in embeds.items()}``).
PromptEmbeds = dict[str, torch.Tensor]


@dataclass
class BackboneOutput:
    """One backbone forward over the conditional and (when guidance is on) null prompts.

    ``cond_logits`` / ``uncond_logits``: ``[B, N, K]`` in any float dtype (the sampler upcasts).
    ``features``: ``[B, D, Hf, Wf]`` final-layer token features of the conditional branch, on
    the backbone's ``feature_grid``; the input of the schedule policy.
    """

    cond_logits: torch.Tensor
    uncond_logits: torch.Tensor | None
    features: torch.Tensor

    @classmethod
    def from_batched_cfg(cls, logits: torch.Tensor, features: torch.Tensor, batch: int, guidance: bool) -> BackboneOutput:
        """Split one forward over the rows ``[uncond; cond]`` (``guidance``) or ``[cond]``.

        ``logits``: ``[rows, N, K]``; ``features``: ``[rows, D, Hf, Wf]``; ``rows`` = 2·batch or batch.
        """
        if guidance:
            return cls(cond_logits=logits[batch:], uncond_logits=logits[:batch], features=features[batch:])
        return cls(cond_logits=logits, uncond_logits=None, features=features)


@runtime_checkable
class FixedSchedule(Protocol):
    """A hand-designed inference schedule (no parameters)."""

    name: str

    def values(self, num_steps: int) -> torch.Tensor:
        """Return ``[T, 4]`` float32 values ``(r, tau_r, tau_s, cfg)`` for steps ``k = 0..T-1``."""
        ...


@runtime_checkable
class Backbone(Protocol):
    """A masked (discrete) diffusion model behind a text encoder and an image decoder.

    ``model`` is the trainable policy network (θ); everything else (text encoder, VQ decoder) is
    frozen. Implementations must be deterministic in eval mode and must not use dropout in
    ``forward`` (the replay of a rollout has to reproduce its log-probabilities).
    """

    name: str
    model: nn.Module
    mask_token_id: int
    codebook_size: int  # K: ids 0..K-1 can be predicted
    token_grid: tuple[int, int]  # (H, W), N = H * W
    feature_dim: int  # D
    feature_grid: tuple[int, int]  # (Hf, Wf) of ``BackboneOutput.features``
    device: torch.device
    dtype: torch.dtype  # compute dtype of ``model``

    def encode_prompts(self, prompts: Sequence[str]) -> PromptEmbeds:
        """Encode prompts (and the backbone's null / negative prompt) -> tensors with batch ``B``."""
        ...

    def forward(
        self,
        tokens: torch.Tensor,  # [B, N] int64, mask id where masked
        prompt: PromptEmbeds,  # batch B
        step: int,  # k = 0..T-1
        num_steps: int,  # T
        guidance: bool,  # run the null-prompt branch too (batched in one forward)
    ) -> BackboneOutput:
        """One forward of ``model`` on the current token state."""
        ...

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` token ids -> ``[B, 3, H_img, W_img]`` float images in ``[0, 1]``."""
        ...

    def default_schedule(self) -> FixedSchedule:
        """The schedule the backbone was released with (Meissonic: cosine, 2->0, 1, 9)."""
        ...

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """Parameters the model phase optimises (all of ``model``, or LoRA adapters only)."""
        ...


@dataclass
class RewardOutput:
    """Scores for a batch: ``scores`` is ``[B]`` float32 on the CPU; ``info`` holds per-sample
    extras (tensors of length ``B`` or lists of length ``B``) for logging."""

    scores: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Reward(Protocol):
    """A reward model: loaded once, explicit device and dtype, scores a whole batch per call.

    Called under ``torch.no_grad``. ``tokens`` ([B, N] final token grids) and ``metadata``
    (one dict per sample, e.g. a benchmark's prompt metadata) are optional extras that rewards
    may use; image rewards ignore them.
    """

    name: str
    device: torch.device
    dtype: torch.dtype

    def __call__(
        self,
        images: torch.Tensor,  # [B, 3, H, W] float in [0, 1]
        prompts: Sequence[str],
        *,
        tokens: torch.Tensor | None = None,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> RewardOutput: ...


@runtime_checkable
class SchedulePolicy(Protocol):
    """The learned scheduling policy's mean network μ_φ (an ``nn.Module``).

    ``forward(features [B, D, Hf, Wf], progress [B]) -> [B, C]`` pre-activation means for the
    trainable ``components`` (a subset of :data:`SCHEDULE_COMPONENTS`, canonical order). The
    core adds Gaussian noise and maps the result onto valid ranges with the base schedule as a
    residual (:mod:`cogrpo.schedule`); a zero output therefore reproduces the base schedule.
    """

    components: tuple[str, ...]

    def __call__(self, features: torch.Tensor, progress: torch.Tensor) -> torch.Tensor: ...

    def parameters(self, recurse: bool = True) -> Iterable[nn.Parameter]: ...


@dataclass
class EvalItem:
    """One benchmark prompt: a stable id, the prompt text, and the metadata the scorer needs."""

    id: str
    prompt: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class GeneratedItem:
    """The images generated for one :class:`EvalItem`: ``images`` ``[n, 3, H, W]`` in ``[0, 1]``
    and the final ``tokens`` ``[n, N]`` (``n = images_per_item``)."""

    item: EvalItem
    images: torch.Tensor
    tokens: torch.Tensor | None = None


@runtime_checkable
class Benchmark(Protocol):
    """An evaluation benchmark for ``cogrpo eval``.

    The eval runner generates ``images_per_item`` images for every item and streams them to
    ``evaluate`` one item at a time (so thousands of 1024 px images never sit in memory);
    ``evaluate`` writes the benchmark's official layout under ``out_dir`` and returns flat
    metrics, where ``"overall"`` is the headline number.
    """

    name: str
    images_per_item: int

    def items(self) -> list[EvalItem]: ...

    def evaluate(self, generated: Iterable[GeneratedItem], out_dir: Path) -> dict[str, float]: ...
