"""The toy world's rewards, both in [0, 1]: ``toy-geneval`` and ``toy-quality``.

Both read the final token grids (``tokens=``) when the trainer passes them and otherwise recover
the grid from the RGB image exactly (:func:`cogrpo_toyworld.scenes.rgb_to_tokens`). The grid is
parsed into objects (connected components per colour, exact template match = a shape class) and
the recognised shapes become GenEval detections (score 1.0, colour label = palette colour).

``toy-geneval`` applies GenEval's rules (:func:`cogrpo.geneval.evaluate`) to the prompt's
metadata (given, or parsed from the prompt text). The strict verdict is 0/1; with
``partial_credit=True`` (the training default) a wrong image scores the fraction of GenEval's
atomic checks it satisfies, so that groups are rarely all-equal:

* every include clause: "the top ``count`` objects of the class exist (and all have the colour)";
* every positioned clause additionally: "...and each lies ``relation`` the referenced objects";
* every exclude clause: "fewer than ``count`` objects of the class".

An image passes all checks exactly when GenEval's verdict is "correct", so the score is 1 only
for correct images.

``toy-quality`` is the fraction of the canvas's foreground cells that belong to a well-formed
shape (a component equal to a template); stray pixels, malformed or merged shapes lower it, an
empty canvas scores 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from cogrpo.geneval import Detection, evaluate
from cogrpo.protocols import RewardOutput
from cogrpo.reward_utils import validate_reward_inputs
from cogrpo_toyworld.prompts import parse_prompt
from cogrpo_toyworld.scenes import GRID, detections, find_objects, rgb_to_tokens


def final_grids(images: torch.Tensor, tokens: torch.Tensor | None, grid: tuple[int, int]) -> torch.Tensor:
    """``[B, H*W]`` palette ids on the CPU: ``tokens`` when given, else decoded from the images."""
    if tokens is not None:
        return tokens.reshape(tokens.shape[0], -1).cpu()
    return rgb_to_tokens(images, grid).cpu()


def _strip_position(clause: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in clause.items() if k != "position"}


def clause_checks(metadata: Mapping[str, Any], found: Sequence[Detection]) -> list[bool]:
    """GenEval's atomic checks for one image (see the module docstring), each decided by the rule
    engine itself on a one-clause (or clause + target) metadata."""
    tag, include = metadata["tag"], metadata["include"]
    checks = []
    for clause in include:
        plain = _strip_position(clause)
        checks.append(evaluate({"tag": tag, "include": [plain]}, found)[0])
        if clause.get("position"):
            relation, target = clause["position"][0], int(clause["position"][1])
            positioned = {"tag": tag, "include": [_strip_position(include[target]), {**plain, "position": [relation, 0]}]}
            checks.append(evaluate(positioned, found)[0])
    for clause in metadata.get("exclude", []) or []:
        checks.append(evaluate({"tag": tag, "include": [], "exclude": [clause]}, found)[0])
    return checks


class ToyGenEvalReward:
    """GenEval's rules on the parsed grid (partial credit per atomic check for training)."""

    name = "toy-geneval"

    def __init__(
        self,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        grid: tuple[int, int] = GRID,
        partial_credit: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.grid = (int(grid[0]), int(grid[1]))
        self.partial_credit = partial_credit

    def score_one(self, grid_tokens: torch.Tensor, metadata: Mapping[str, Any]) -> tuple[float, bool, str]:
        """``(score, strict verdict, reason)`` for one ``[N]`` grid."""
        found = detections(find_objects(grid_tokens, self.grid))
        correct, reason = evaluate(metadata, found)
        if correct or not self.partial_credit:
            return float(correct), correct, reason
        checks = clause_checks(metadata, found)
        return sum(checks) / len(checks), correct, reason

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,
        prompts: Sequence[str],
        *,
        tokens: torch.Tensor | None = None,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> RewardOutput:
        validate_reward_inputs(images, prompts, tokens=tokens, metadata=metadata)
        grids = final_grids(images, tokens, self.grid)
        scores, correct, tags = [], [], []
        for i, prompt in enumerate(prompts):
            meta = metadata[i] if metadata is not None else parse_prompt(prompt)
            score, ok, _ = self.score_one(grids[i], meta)
            scores.append(score)
            correct.append(float(ok))
            tags.append(meta["tag"])
        return RewardOutput(
            scores=torch.tensor(scores, dtype=torch.float32),
            info={"correct": torch.tensor(correct, dtype=torch.float32), "tag": tags},
        )


class ToyQualityReward:
    """Fraction of foreground cells inside well-formed shapes (stray pixels penalised)."""

    name = "toy-quality"

    def __init__(
        self, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, grid: tuple[int, int] = GRID
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.grid = (int(grid[0]), int(grid[1]))

    def score_one(self, grid_tokens: torch.Tensor) -> tuple[float, int, int]:
        """``(score, well-formed shapes, stray cells)`` for one ``[N]`` grid."""
        objects = find_objects(grid_tokens, self.grid)
        foreground = sum(o.num_pixels for o in objects)
        clean = sum(o.num_pixels for o in objects if o.shape is not None)
        score = clean / foreground if foreground else 0.0
        return score, sum(o.shape is not None for o in objects), foreground - clean

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,
        prompts: Sequence[str],
        *,
        tokens: torch.Tensor | None = None,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> RewardOutput:
        validate_reward_inputs(images, prompts, tokens=tokens, metadata=metadata)
        grids = final_grids(images, tokens, self.grid)
        rows = [self.score_one(g) for g in grids]
        return RewardOutput(
            scores=torch.tensor([r[0] for r in rows], dtype=torch.float32),
            info={
                "shapes": torch.tensor([r[1] for r in rows], dtype=torch.float32),
                "stray_cells": torch.tensor([r[2] for r in rows], dtype=torch.float32),
            },
        )
