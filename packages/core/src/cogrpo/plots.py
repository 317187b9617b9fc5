"""Plots people would rather look at than read: the learned schedule, reward curves, sample grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cogrpo.protocols import SCHEDULE_COMPONENTS

LABELS = {"r": "re-mask ratio r", "tau_r": "re-mask temperature τr", "tau_s": "sampling temperature τs", "cfg": "CFG scale s"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_schedule(default: torch.Tensor, learned: torch.Tensor, learned_std: torch.Tensor | None, path: Path, title: str = "") -> Path:
    """Each component vs progress k/T: the learned schedule (mean ± std over trajectories) against
    the default. ``default``/``learned``/``learned_std`` are ``[T, 4]``."""
    plt = _pyplot()
    num_steps = default.shape[0]
    progress = torch.arange(num_steps) / num_steps
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    for c, (ax, name) in enumerate(zip(axes, SCHEDULE_COMPONENTS)):
        last = num_steps - 1 if name in ("r", "tau_r") else num_steps  # unused at the last step
        ax.plot(progress[:last], default[:last, c], "k--", label="default")
        ax.plot(progress[:last], learned[:last, c], "C0-o", ms=3, label="learned")
        if learned_std is not None:
            lo, hi = learned[:last, c] - learned_std[:last, c], learned[:last, c] + learned_std[:last, c]
            ax.fill_between(progress[:last], lo, hi, color="C0", alpha=0.2)
        ax.set_title(LABELS[name])
        ax.set_xlabel("progress k/T")
        ax.grid(alpha=0.3)
    axes[0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_rewards(rows: Sequence[dict[str, Any]], reward_names: Sequence[str], path: Path) -> Path:
    """Reward means per iteration, with the phases shaded (model: white, schedule: blue, joint: green)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    its = [r["iteration"] for r in rows]
    for i, name in enumerate([*reward_names, "mixed"]):
        key = f"reward/{name}/mean"
        values = [r.get(key) for r in rows]
        if any(v is not None for v in values):
            ax.plot(its, values, color=f"C{i}", label=name, lw=1.8 if name == "mixed" else 1.2)
    colors = {"schedule": "tab:blue", "joint": "tab:green"}
    for r in rows:
        if r.get("phase") in colors:
            ax.axvspan(r["iteration"] - 0.5, r["iteration"] + 0.5, color=colors[r["phase"]], alpha=0.08, lw=0)
    ax.set_xlabel("iteration (shaded: schedule phase)")
    ax.set_ylabel("reward (batch mean)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def captioned_grid(columns: Sequence[torch.Tensor], column_labels: Sequence[str], captions: Sequence[str], path: Path, cell: int = 128) -> Path:
    """A grid with one row per caption and one column per image set (e.g. base | trained).

    :param columns: each ``[R, 3, H, W]`` in [0, 1] (same R as ``captions``).
    """
    from PIL import Image, ImageDraw

    rows = len(captions)
    caption_w, header_h = 340, 22
    grid = Image.new("RGB", (caption_w + cell * len(columns), header_h + cell * rows), "white")
    draw = ImageDraw.Draw(grid)
    for j, label in enumerate(column_labels):
        draw.text((caption_w + j * cell + 4, 4), label, fill="black")
    for i, caption in enumerate(captions):
        y = header_h + i * cell
        for line_no, line in enumerate(_wrap(caption, 52)[:6]):
            draw.text((4, y + 4 + 14 * line_no), line, fill="black")
        for j, images in enumerate(columns):
            img = (images[i].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            grid.paste(Image.fromarray(img).resize((cell - 4, cell - 4), Image.NEAREST), (caption_w + j * cell + 2, y + 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def image_grid(images: torch.Tensor, path: Path, ncol: int = 8) -> Path:
    """Plain grid of ``[B, 3, H, W]`` images in [0, 1] (white 2-pixel gaps)."""
    from PIL import Image

    b, _, h, w = images.shape
    nrow = (b + ncol - 1) // ncol
    grid = Image.new("RGB", (ncol * (w + 2) + 2, nrow * (h + 2) + 2), "white")
    for i in range(b):
        img = (images[i].float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        grid.paste(Image.fromarray(img), (2 + (i % ncol) * (w + 2), 2 + (i // ncol) * (h + 2)))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line] if line else lines
