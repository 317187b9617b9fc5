"""Pretraining of the ``toy`` backbone: BERT-style masked-token prediction on grammar scenes.

Each step draws ``batch_size`` training prompts (a task uniformly, then one of its *training*
prompts), renders a random scene that satisfies each prompt (:func:`sample_scene`), masks a
``cos(π/2 · u)`` fraction of its cells (``u ~ U(0, 1)``, MaskGIT's cosine schedule, at least one
cell), replaces the prompt by the null prompt with probability ``prompt_dropout`` (what makes
classifier-free guidance possible), and minimises the cross-entropy on the masked cells. AdamW,
linear warm-up then a constant learning rate (so the first ``S`` steps of a run are
the ``S``-step run), gradient clipping at 1. Everything is drawn from ``seed``, so
the same command on the same software gives the same weights.

It is deliberately short: the released model draws recognisable shapes most of the time but
gets many prompts wrong, which leaves room for RL.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cogrpo.geneval import GENEVAL_TAGS
from cogrpo_toyworld.model import (
    DEFAULT_CFG_SCALE,
    DEFAULT_NUM_STEPS,
    ToyConfig,
    ToyTextToImage,
    save_weights,
    tokenize,
)
from cogrpo_toyworld.prompts import parse_prompt, train_prompts
from cogrpo_toyworld.scenes import LAYOUT, render_tokens, sample_scene


@dataclass(frozen=True)
class PretrainConfig:
    """The recipe (recorded in the weights file)."""

    steps: int = 1500
    seed: int = 0
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 100
    prompt_dropout: float = 0.1
    grad_clip: float = 1.0
    layout: str = LAYOUT


def sample_batch(
    batch_size: int, rng: random.Random, grid: tuple[int, int], layout: str = LAYOUT
) -> tuple[list[str], torch.Tensor]:
    """``batch_size`` training prompts and scenes for them: ``(prompts, tokens [B, N])``."""
    by_tag = {tag: train_prompts(tag) for tag in GENEVAL_TAGS}
    prompts, grids = [], []
    for _ in range(batch_size):
        prompt = rng.choice(by_tag[rng.choice(GENEVAL_TAGS)])
        prompts.append(prompt)
        grids.append(render_tokens(sample_scene(parse_prompt(prompt), rng, grid, layout=layout)).flatten())
    return prompts, torch.stack(grids)


def cosine_mask(tokens: torch.Tensor, mask_id: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``ceil(cos(π/2 · u) · N)`` random cells per row (at least 1): ``(inputs, masked)``."""
    b, n = tokens.shape
    ratio = torch.cos(math.pi / 2 * torch.rand(b, generator=generator))  # [B]
    count = (ratio * n).ceil().clamp(1, n)
    ranks = torch.rand(b, n, generator=generator).argsort(dim=1).argsort(dim=1)  # a random permutation per row
    masked = ranks < count[:, None]
    return torch.where(masked, mask_id, tokens), masked


def learning_rate(step: int, recipe: PretrainConfig) -> float:
    """Linear warm-up, then constant: the run's first S steps are exactly the S-step run."""
    return recipe.lr * min(1.0, (step + 1) / recipe.warmup)


def pretrain(
    recipe: PretrainConfig = PretrainConfig(),
    config: ToyConfig | None = None,
    on_step: Callable[[int, float, ToyTextToImage], None] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[ToyTextToImage, dict[str, Any]]:
    """Train both networks from scratch (fp32); returns them and a summary. ``on_step(step, loss,
    net)`` is called after every optimiser step."""
    torch.manual_seed(recipe.seed)
    net = ToyTextToImage(config or ToyConfig()).to(device)
    cfg = net.config
    rng = random.Random(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    optimizer = torch.optim.AdamW(net.parameters(), lr=recipe.lr, betas=(0.9, 0.99), weight_decay=recipe.weight_decay)
    pad_id = cfg.vocab.index("<pad>")
    net.train()
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(recipe.steps):
        prompts, tokens = sample_batch(recipe.batch_size, rng, cfg.grid, recipe.layout)
        ids = tokenize(prompts, cfg)  # [B, L]
        dropped = torch.rand(len(prompts), generator=gen) < recipe.prompt_dropout
        ids[dropped] = pad_id  # the null prompt
        inputs, masked = cosine_mask(tokens, cfg.codebook_size, gen)
        tokens, inputs, masked = tokens.to(device), inputs.to(device), masked.to(device)
        logits, _ = net(inputs, ids.to(device))  # [B, N, K]
        loss = F.cross_entropy(logits[masked], tokens[masked])
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, recipe)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), recipe.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1], net)
    net.eval().cpu()
    tail = losses[-min(50, len(losses)) :]
    summary = {
        **asdict(recipe),
        "final_loss": round(sum(tail) / len(tail), 4) if tail else None,
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    return net, summary


def run_pretraining(
    recipe: PretrainConfig,
    out: Path,
    config: ToyConfig | None = None,
    show_progress: bool = True,
    command: str = "",
    save_every: int = 0,
) -> dict[str, Any]:
    """Pretrain with a rich progress bar and write the weights file (recipe, command and release
    defaults in its metadata). ``save_every > 0`` also writes ``<out stem>-step<S>.safetensors``
    every ``save_every`` steps: with the constant learning rate each is exactly the ``S``-step run.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    out = Path(out)
    release = {"cfg_scale": DEFAULT_CFG_SCALE, "num_steps": DEFAULT_NUM_STEPS}
    columns = [
        TextColumn("pretrain toy"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, disable=not show_progress) as progress:
        task = progress.add_task("pretrain", total=recipe.steps, loss=float("nan"))

        def on_step(step: int, loss: float, net: ToyTextToImage) -> None:
            progress.update(task, advance=1, loss=loss)
            done = step + 1
            if save_every > 0 and done % save_every == 0 and done < recipe.steps:
                partial = {**asdict(recipe), "steps": done, "command": command, "torch": torch.__version__}
                path = out.with_name(f"{out.stem}-step{done}{out.suffix}")
                save_weights(net, path, extra={**release, "pretrain": partial})

        net, summary = pretrain(recipe, config, on_step=on_step)
    summary["command"] = command
    save_weights(net, out, extra={**release, "pretrain": summary})
    return summary
