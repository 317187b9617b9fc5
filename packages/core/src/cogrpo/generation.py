"""Generation for evaluation and ``cogrpo generate``: deterministic per image, batched for speed.

Every image ``j`` of prompt ``i`` gets its own generator seeded from ``(seed, i, j)``, so the
same prompt and seed give the same image whatever the batch size, and a base model and a trained
model see the same noise (paired comparisons).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from cogrpo.build import trajectory_generators
from cogrpo.protocols import Backbone, PromptEmbeds
from cogrpo.sampler import Rollout, rollout
from cogrpo.schedule import ScheduleActor


def index_prompt(embeds: PromptEmbeds, index: torch.Tensor | slice) -> PromptEmbeds:
    """Rows ``index`` of every prompt tensor."""
    return {k: v[index.to(v.device) if isinstance(index, torch.Tensor) else index] for k, v in embeds.items()}


def autocast_context(backbone: Backbone, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=backbone.device.type, dtype=torch.bfloat16)


@torch.no_grad()
def rollout_in_batches(
    backbone: Backbone,
    actor: ScheduleActor,
    prompts: Sequence[str],
    generators: Sequence[torch.Generator],
    *,
    num_steps: int,
    action_mode: str,
    batch_size: int,
    guidance: bool = True,
    keep_features: bool = False,
    bf16: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[Rollout, PromptEmbeds]:
    """Roll out one trajectory per prompt, ``batch_size`` trajectories per backbone forward."""
    embeds = backbone.encode_prompts(list(prompts))
    parts = []
    for start in range(0, len(prompts), batch_size):
        sl = slice(start, start + batch_size)
        with autocast_context(backbone, bf16):
            parts.append(
                rollout(
                    backbone,
                    index_prompt(embeds, sl),
                    num_steps=num_steps,
                    actor=actor,
                    action_mode=action_mode,
                    generators=list(generators[sl]),
                    guidance=guidance,
                    keep_features=keep_features,
                )
            )
        if on_batch is not None:
            on_batch(len(parts[-1].tokens))
    return Rollout.cat(parts), embeds


@torch.no_grad()
def decode_in_batches(backbone: Backbone, tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``[B, N]`` -> ``[B, 3, H, W]`` float32 images in [0, 1] on the CPU."""
    return torch.cat([backbone.decode(tokens[i : i + batch_size]).float().clamp(0, 1).cpu() for i in range(0, len(tokens), batch_size)])


@dataclass
class Generation:
    """Images for a list of prompts (``per_prompt`` each, prompt-major order)."""

    prompts: list[str]
    per_prompt: int
    tokens: torch.Tensor  # [P * per_prompt, N]
    images: torch.Tensor  # [P * per_prompt, 3, H, W]
    schedule: torch.Tensor  # [T, P * per_prompt, 4] applied schedule values


def generate(
    backbone: Backbone,
    actor: ScheduleActor,
    prompts: Sequence[str],
    *,
    num_steps: int,
    seed: int,
    per_prompt: int = 1,
    action_mode: str = "mean",
    batch_size: int = 64,
    guidance: bool = True,
    bf16: bool = False,
    first_index: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> Generation:
    """Generate ``per_prompt`` images for each prompt. ``first_index`` offsets the prompt index in
    the per-image seeds (so chunks of a long prompt list draw the same noise as one call)."""
    flat = [p for p in prompts for _ in range(per_prompt)]
    indices = [(first_index + i) * 1000 + j for i in range(len(prompts)) for j in range(per_prompt)]
    gens = trajectory_generators(seed, 0, indices, backbone.device, salt="generate")
    traj, _ = rollout_in_batches(
        backbone, actor, flat, gens, num_steps=num_steps, action_mode=action_mode, batch_size=batch_size,
        guidance=guidance, bf16=bf16, on_batch=on_batch,
    )
    images = decode_in_batches(backbone, traj.tokens, batch_size)
    return Generation(list(prompts), per_prompt, traj.tokens.cpu(), images, traj.schedule)


def generate_chunks(
    backbone: Backbone,
    actor: ScheduleActor,
    prompts: Sequence[str],
    *,
    chunk_prompts: int,
    **kwargs,
) -> Iterator[tuple[int, Generation]]:
    """:func:`generate` over a long prompt list, ``chunk_prompts`` prompts at a time."""
    for start in range(0, len(prompts), chunk_prompts):
        yield start, generate(backbone, actor, prompts[start : start + chunk_prompts], first_index=start, **kwargs)
