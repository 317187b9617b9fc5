"""The ``toy-geneval`` benchmark: held-out prompts, 4 images each, GenEval's strict verdict.

``evaluate`` writes, under ``out_dir``:

* ``results.jsonl``: one line per image (GenEval's ``results.jsonl`` fields: tag, prompt,
  correct, reason, plus the detected objects);
* ``scores.json`` and ``scores.md``: per-task accuracy and ``overall`` (the unweighted mean of
  the six tasks, :func:`cogrpo.geneval.summarize`);
* ``grid.png``: every image, one row per prompt with its caption, framed green (correct) or red
  (rows in side-by-side blocks of 16).

:func:`generate` is a small generation loop (the same ``cogrpo.sampler.rollout`` the trainer
uses) for measuring a backbone + schedule without the eval runner.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cogrpo.geneval import GENEVAL_TAGS, evaluate, summarize
from cogrpo.protocols import Backbone, EvalItem, GeneratedItem
from cogrpo_toyworld.prompts import eval_prompts, parse_prompt
from cogrpo_toyworld.scenes import GRID, detections, find_objects, rgb_to_tokens


class ToyGenEvalBenchmark:
    """Held-out toy prompts of the six GenEval tasks (:class:`cogrpo.protocols.Benchmark`)."""

    name = "toy-geneval"

    def __init__(
        self, *, images_per_item: int = 4, grid: tuple[int, int] = GRID, tags: Sequence[str] | None = None
    ) -> None:
        unknown = set(tags or ()) - set(GENEVAL_TAGS)
        if unknown:
            raise ValueError(f"unknown GenEval tag(s) {sorted(unknown)}; choose from {', '.join(GENEVAL_TAGS)}")
        self.images_per_item = int(images_per_item)
        self.grid = (int(grid[0]), int(grid[1]))
        self.tags = tuple(tags or GENEVAL_TAGS)

    def items(self) -> list[EvalItem]:
        out = []
        for tag in self.tags:
            for i, prompt in enumerate(eval_prompts(tag)):
                out.append(EvalItem(id=f"{tag}-{i:03d}", prompt=prompt, metadata=parse_prompt(prompt)))
        return out

    def evaluate(self, generated: Iterable[GeneratedItem], out_dir: Path) -> dict[str, float]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = []
        thumbs: list[tuple[str, list[np.ndarray], list[bool]]] = []
        with (out_dir / "results.jsonl").open("w") as f:
            for gen in generated:
                meta = gen.item.metadata or parse_prompt(gen.item.prompt)
                grids = gen.tokens if gen.tokens is not None else rgb_to_tokens(gen.images, self.grid)
                verdicts = []
                for j, grid_tokens in enumerate(grids.reshape(grids.shape[0], -1).cpu()):
                    objects = find_objects(grid_tokens, self.grid)
                    correct, reason = evaluate(meta, detections(objects))
                    verdicts.append(correct)
                    row = {
                        "id": gen.item.id,
                        "image_index": j,
                        "tag": meta["tag"],
                        "prompt": gen.item.prompt,
                        "correct": correct,
                        "reason": reason,
                        "objects": [
                            {"class": o.shape, "color": o.color, "box": list(o.box)} for o in objects if o.shape
                        ],
                        "stray_cells": sum(o.num_pixels for o in objects if o.shape is None),
                        "metadata": meta,
                    }
                    rows.append(row)
                    f.write(json.dumps(row) + "\n")
                images = (gen.images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
                thumbs.append((gen.item.prompt, list(images), verdicts))
        scores = summarize((r["tag"], r["correct"]) for r in rows)
        summary = {"benchmark": self.name, "images": len(rows), "images_per_item": self.images_per_item, "scores": scores}
        (out_dir / "scores.json").write_text(json.dumps(summary, indent=2) + "\n")
        (out_dir / "scores.md").write_text(markdown_table({"score": scores}) + "\n")
        if thumbs:
            image_grid(thumbs).save(out_dir / "grid.png")
        return scores


def markdown_table(columns: dict[str, dict[str, float]]) -> str:
    """``{column name: scores}`` -> a markdown table with one row per task and ``overall`` last."""
    names = list(columns)
    keys = [t for t in GENEVAL_TAGS if any(t in c for c in columns.values())] + ["overall"]
    lines = ["| task | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in keys:
        cells = [f"{columns[n][key]:.3f}" if key in columns[n] else "-" for n in names]
        label = f"**{key}**" if key == "overall" else key
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def image_grid(
    rows: Sequence[tuple[str, Sequence[np.ndarray], Sequence[bool]]], caption_width: int = 260, rows_per_block: int = 16
):
    """One row per prompt: the caption, then each ``[H, W, 3]`` uint8 image framed green (correct)
    or red (wrong); rows are laid out in side-by-side blocks of ``rows_per_block``. Returns a PIL image."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    h, w = rows[0][1][0].shape[:2]
    pad = 4
    n_cols = max(len(images) for _, images, _ in rows)
    block_w = caption_width + n_cols * (w + 2 * pad) + 2 * pad
    n_blocks = math.ceil(len(rows) / rows_per_block)
    height = min(len(rows), rows_per_block) * (h + 2 * pad)
    canvas = Image.new("RGB", (n_blocks * block_w, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (caption, images, verdicts) in enumerate(rows):
        block, row = divmod(r, rows_per_block)
        top, x0 = row * (h + 2 * pad), block * block_w
        draw.text((x0 + 6, top + h // 2), caption, fill=(0, 0, 0), font=font)
        for c, (img, ok) in enumerate(zip(images, verdicts)):
            left = x0 + caption_width + c * (w + 2 * pad)
            frame = (40, 170, 60) if ok else (210, 40, 40)
            draw.rectangle([left, top, left + w + 2 * pad - 1, top + h + 2 * pad - 1], fill=frame)
            canvas.paste(Image.fromarray(img), (left + pad, top + pad))
    return canvas


def generate(
    backbone: Backbone,
    items: Sequence[EvalItem],
    *,
    images_per_item: int = 4,
    num_steps: int | None = None,
    actor: Any = None,
    action_mode: str = "base",
    seed: int = 0,
    batch_size: int = 64,
) -> Iterator[GeneratedItem]:
    """Generate ``images_per_item`` images per item with ``cogrpo.sampler.rollout``.

    Image ``j`` of item ``i`` always uses the generator seeded ``seed * 1_000_003 + i *
    images_per_item + j``, so results do not depend on ``batch_size``. ``actor`` defaults to the
    backbone's default schedule; ``num_steps`` to the backbone's ``num_steps`` (toy: 8).
    """
    from cogrpo.sampler import rollout
    from cogrpo.schedule import ScheduleActor

    actor = actor or ScheduleActor(backbone.default_schedule())
    steps = num_steps or getattr(backbone, "num_steps", 8)
    jobs = [(i, j) for i in range(len(items)) for j in range(images_per_item)]
    done: dict[int, list[torch.Tensor]] = {}
    next_item = 0
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        embeds = backbone.encode_prompts([items[i].prompt for i, _ in chunk])
        gens = [torch.Generator(device=backbone.device).manual_seed(seed * 1_000_003 + i * images_per_item + j) for i, j in chunk]
        traj = rollout(backbone, embeds, num_steps=steps, actor=actor, action_mode=action_mode, generators=gens)
        for (i, _), tokens in zip(chunk, traj.tokens):
            done.setdefault(i, []).append(tokens.cpu())
        while next_item in done and len(done[next_item]) == images_per_item:
            tokens = torch.stack(done.pop(next_item))
            yield GeneratedItem(item=items[next_item], images=backbone.decode(tokens), tokens=tokens)
            next_item += 1
