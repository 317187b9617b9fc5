"""``toy-geneval`` and ``toy-quality``: the reward contract, the image path, hand-computed scores."""

from __future__ import annotations

import random

import pytest
import torch

from cogrpo.testing import RewardContract
from cogrpo_toyworld.prompts import eval_prompts, parse_prompt
from cogrpo_toyworld.rewards import ToyGenEvalReward, ToyQualityReward
from cogrpo_toyworld.scenes import GRID, Scene, SceneObject, render_tokens, sample_scene, tokens_to_rgb


def toy_batch(n: int, seed: int = 0, with_tokens: bool = True) -> dict:
    """Scenes for eval prompts, every other one rendered for a different prompt (so scores differ)."""
    rng = random.Random(seed)
    prompts = eval_prompts()
    chosen = [prompts[(7 * i + seed) % len(prompts)] for i in range(n)]
    grids = []
    for i, prompt in enumerate(chosen):
        source = prompt if i % 2 == 0 else prompts[(7 * i + seed + 11) % len(prompts)]
        grids.append(render_tokens(sample_scene(parse_prompt(source), rng)).flatten())
    tokens = torch.stack(grids)
    batch = {"images": tokens_to_rgb(tokens), "prompts": chosen}
    if with_tokens:
        batch["tokens"] = tokens
    return batch


class TestToyGenEvalContract(RewardContract):
    batch_size = 4

    def make_reward(self):
        return ToyGenEvalReward()

    def make_batch(self, n: int) -> dict:
        return toy_batch(n)


class TestToyGenEvalFromImagesContract(RewardContract):
    batch_size = 4

    def make_reward(self):
        return ToyGenEvalReward()

    def make_batch(self, n: int) -> dict:
        return toy_batch(n, with_tokens=False)


class TestToyQualityContract(RewardContract):
    batch_size = 4

    def make_reward(self):
        return ToyQualityReward()

    def make_batch(self, n: int) -> dict:
        return toy_batch(n, seed=1)


def test_images_and_tokens_give_the_same_scores() -> None:
    batch = toy_batch(12, seed=3)
    for reward in (ToyGenEvalReward(), ToyQualityReward()):
        with_tokens = reward(batch["images"], batch["prompts"], tokens=batch["tokens"]).scores
        from_images = reward(batch["images"], batch["prompts"]).scores
        assert torch.equal(with_tokens, from_images)
    geneval = ToyGenEvalReward()(batch["images"], batch["prompts"])
    assert set(geneval.scores[::2].tolist()) == {1.0}, "a scene sampled for its own prompt is correct"
    assert geneval.scores[1::2].min() < 1.0
    assert torch.equal(geneval.info["correct"], (geneval.scores == 1.0).float())


def test_quality_hand_computed() -> None:
    quality = ToyQualityReward()
    clean = render_tokens(Scene((SceneObject("square", "red", 0, 0), SceneObject("cross", "blue", 4, 4)))).flatten()
    stray = clean.clone().view(*GRID)
    stray[6, 0] = 3  # one detached yellow cell
    broken = clean.clone().view(*GRID)
    broken[1, 1] = 0  # the red square gets a hole: it is a ring now, still well formed
    merged = clean.clone().view(*GRID)
    merged[3, 3] = 1  # a red cell touching the square's corner: the square is malformed
    empty = torch.zeros(GRID[0] * GRID[1], dtype=torch.long)
    tokens = torch.stack([clean, stray.flatten(), broken.flatten(), merged.flatten(), empty])
    out = quality(tokens_to_rgb(tokens), ["a square"] * 5, tokens=tokens)
    expected = [1.0, 14 / 15, 1.0, 5 / 15, 0.0]  # clean cells / coloured cells: 9+5 clean; +1 stray; 10 merged
    torch.testing.assert_close(out.scores, torch.tensor(expected))
    assert out.info["shapes"].tolist() == [2, 2, 2, 1, 0]
    assert out.info["stray_cells"].tolist() == [0, 1, 0, 10, 0]


def test_unknown_prompt_is_a_clear_error() -> None:
    batch = toy_batch(1)
    with pytest.raises(ValueError, match="not a toy-world prompt"):
        ToyGenEvalReward()(batch["images"], ["a photo of a cat"], tokens=batch["tokens"])


def test_scores_lie_in_unit_interval_on_random_grids() -> None:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 7, (16, GRID[0] * GRID[1]), generator=g)
    tokens[tokens > 2] = 0  # sparse random colour blobs
    prompts = (eval_prompts() * 2)[:16]
    for reward in (ToyGenEvalReward(), ToyQualityReward()):
        scores = reward(tokens_to_rgb(tokens), prompts, tokens=tokens).scores
        assert ((scores >= 0) & (scores <= 1)).all()
