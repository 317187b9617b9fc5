"""The ``toy-geneval`` benchmark: items, scoring, the files it writes, and generation."""

from __future__ import annotations

import json
import random

import torch

from cogrpo.geneval import GENEVAL_TAGS
from cogrpo.protocols import Benchmark, GeneratedItem
from cogrpo_toyworld.benchmark import ToyGenEvalBenchmark, generate, markdown_table
from cogrpo_toyworld.model import ToyBackbone, ToyConfig
from cogrpo_toyworld.prompts import eval_prompts, train_prompts
from cogrpo_toyworld.scenes import GRID, Scene, SceneObject, render_tokens, sample_scene, tokens_to_rgb


def test_items_are_the_held_out_prompts() -> None:
    bench = ToyGenEvalBenchmark()
    assert isinstance(bench, Benchmark) and bench.images_per_item == 4
    items = bench.items()
    assert [it.prompt for it in items] == eval_prompts()
    assert len({it.id for it in items}) == len(items)
    assert {it.metadata["tag"] for it in items} == set(GENEVAL_TAGS)
    assert not {it.prompt for it in items} & set(train_prompts())
    assert all(it.metadata["prompt"] == it.prompt for it in items)


def _generated(bench: ToyGenEvalBenchmark, correct_for: set[str]) -> list[GeneratedItem]:
    """Perfect scenes for items whose tag is in ``correct_for``; for the others, image 0 is perfect and
    images 1-3 are empty canvases (so that task scores 1/4)."""
    rng = random.Random(0)
    out = []
    for item in bench.items():
        grids = [render_tokens(sample_scene(item.metadata, rng)).flatten() for _ in range(bench.images_per_item)]
        if item.metadata["tag"] not in correct_for:
            grids[1:] = [torch.zeros(GRID[0] * GRID[1], dtype=torch.long)] * (len(grids) - 1)
        tokens = torch.stack(grids)
        out.append(GeneratedItem(item=item, images=tokens_to_rgb(tokens), tokens=tokens))
    return out


def test_evaluate_scores_and_files(tmp_path) -> None:
    bench = ToyGenEvalBenchmark()
    scores = bench.evaluate(iter(_generated(bench, {"single_object", "counting", "position"})), tmp_path)
    expected = {"single_object": 1.0, "two_object": 0.25, "counting": 1.0, "colors": 0.25, "position": 1.0,
                "color_attr": 0.25}
    assert {k: scores[k] for k in GENEVAL_TAGS} == expected
    assert scores["overall"] == sum(expected.values()) / 6  # the unweighted mean of the six tasks
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4 * len(bench.items())
    first = json.loads(lines[0])
    assert first["correct"] is True and first["tag"] == "single_object" and first["objects"]
    summary = json.loads((tmp_path / "scores.json").read_text())
    assert summary["scores"] == scores and summary["images"] == len(lines)
    table = (tmp_path / "scores.md").read_text()
    assert "| **overall** |" in table and "| counting | 1.000 |" in table
    from PIL import Image

    grid = Image.open(tmp_path / "grid.png")
    assert grid.height == 16 * (56 + 8)  # 52 prompts in 4 blocks of at most 16 rows
    assert grid.width == 4 * (260 + 4 * (56 + 8) + 8)


def test_evaluate_reads_images_when_tokens_are_missing(tmp_path) -> None:
    bench = ToyGenEvalBenchmark(tags=["colors"], images_per_item=2)
    item = bench.items()[0]  # "a yellow triangle"
    right = render_tokens(Scene((SceneObject("triangle", "yellow", 0, 0),))).flatten()
    wrong = render_tokens(Scene((SceneObject("triangle", "blue", 0, 0),))).flatten()
    images = tokens_to_rgb(torch.stack([right, wrong]))
    scores = bench.evaluate([GeneratedItem(item=item, images=images, tokens=None)], tmp_path)
    assert item.prompt == "a yellow triangle" and scores == {"colors": 0.5, "overall": 0.5}


def test_markdown_table_two_columns() -> None:
    table = markdown_table({"base": {"colors": 0.25, "overall": 0.25}, "trained": {"colors": 0.5, "overall": 0.5}})
    assert table.splitlines() == [
        "| task | base | trained |",
        "|---|---|---|",
        "| colors | 0.250 | 0.500 |",
        "| **overall** | 0.250 | 0.500 |",
    ]


def test_generate_is_independent_of_batching() -> None:
    bb = ToyBackbone(random_weights=True, config=ToyConfig(dim=32, depth=1, heads=2), seed=0)
    items = ToyGenEvalBenchmark().items()[:3]
    a = list(generate(bb, items, images_per_item=2, num_steps=4, seed=5, batch_size=6))
    b = list(generate(bb, items, images_per_item=2, num_steps=4, seed=5, batch_size=4))
    assert [g.item.id for g in a] == [it.id for it in items]
    for x, y in zip(a, b):
        assert torch.equal(x.tokens, y.tokens) and x.images.shape == (2, 3, 56, 56)
    c = list(generate(bb, items, images_per_item=2, num_steps=4, seed=6, batch_size=6))
    assert any(not torch.equal(x.tokens, z.tokens) for x, z in zip(a, c))
