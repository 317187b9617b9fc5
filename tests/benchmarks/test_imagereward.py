"""ImageReward benchmark: mean of per-prompt means, the official layout read back, reward by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
from benchmarks_helpers import MeanPixelReward, solid
from PIL import Image

from cogrpo.errors import CogrpoError
from cogrpo.plugins import get_plugin_manager
from cogrpo.protocols import GeneratedItem
from cogrpo_benchmarks.errors import BenchmarkDataError
from cogrpo_benchmarks.imagereward import ImageRewardBenchmark, load_prompts, mean_of_prompt_means


def test_mean_of_prompt_means_hand_computed() -> None:
    # prompt means 2 and 10 -> 6 (the pooled image mean would be 4)
    assert mean_of_prompt_means([[1.0, 2.0, 3.0], [10.0]]) == pytest.approx(6.0)
    assert mean_of_prompt_means([[0.5, -0.5], [1.0, 2.0]]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        mean_of_prompt_means([])
    with pytest.raises(ValueError):
        mean_of_prompt_means([[1.0], []])


def _run(tmp_path, reward, levels_per_item, **options):
    bench = ImageRewardBenchmark(
        images_per_item=len(levels_per_item[0]), reward=reward, limit=len(levels_per_item), **options
    )
    gens = [GeneratedItem(item, solid(len(lv), lv)) for item, lv in zip(bench.items(), levels_per_item, strict=True)]
    return bench, bench.evaluate(gens, tmp_path)


def test_evaluate_writes_official_layout_and_scores(tmp_path) -> None:
    levels = [[51, 102], [255, 0], [204, 204]]  # prompt means 0.3, 0.5, 0.8
    reward = MeanPixelReward(name="imagereward")
    bench, metrics = _run(tmp_path, reward, levels)
    assert metrics["overall"] == pytest.approx((0.3 + 0.5 + 0.8) / 3)
    assert metrics["prompts"] == 3 and metrics["images"] == 6
    assert reward.calls == [2, 2, 2]  # one batch per prompt

    items = bench.items()
    for item, lv in zip(items, levels, strict=True):
        for i, level in enumerate(lv):  # test-benchmark.py's <img_dir>/<model>/<id>_<i>.png
            pixels = np.asarray(Image.open(tmp_path / "generations" / "cogrpo" / f"{item.id}_{i}.png"))
            assert pixels.shape == (8, 8, 3) and (pixels == level).all()
    per_prompt = json.loads(
        (tmp_path / "results" / "ImageReward-v1.0" / "ImageReward-v1.0-benchmark-cogrpo-result.json").read_text()
    )
    assert [r["id"] for r in per_prompt] == [i.id for i in items]
    assert set(per_prompt[0]) == {"id", "prompt", "mean_score", "rewards"}
    assert per_prompt[1]["rewards"] == pytest.approx([1.0, 0.0]) and per_prompt[1]["mean_score"] == pytest.approx(0.5)
    summary = json.loads((tmp_path / "results" / "ImageReward-v1.0-benchmark-results.json").read_text())
    assert summary == {"cogrpo": pytest.approx(metrics["overall"])}
    prompts = json.loads((tmp_path / "prompts.json").read_text())  # the official --prompts_path format
    assert prompts == [{"id": i.id, "prompt": i.prompt} for i in items]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["metrics"]["overall"] == pytest.approx(metrics["overall"]) and len(results["items"]) == 3
    assert "| overall |" in (tmp_path / "results.md").read_text()
    assert Image.open(tmp_path / "grid.png").size[0] > 8


def test_reward_is_created_by_name_through_the_plugin_manager(tmp_path) -> None:
    pm = get_plugin_manager(autoload=False)  # built-ins: the weight-free "brightness" reward
    bench, metrics = _run(tmp_path, "brightness", [[51], [153]], plugin_manager=pm)
    assert metrics["overall"] == pytest.approx((0.2 + 0.6) / 2)
    # result files are named after the reward when it is not ImageReward
    assert (tmp_path / "results" / "brightness" / "brightness-benchmark-cogrpo-result.json").is_file()


def test_unknown_reward_name_is_a_one_line_error(tmp_path) -> None:
    bench = ImageRewardBenchmark(
        images_per_item=1, reward="no-such-reward", limit=1, plugin_manager=get_plugin_manager(autoload=False)
    )
    with pytest.raises(CogrpoError, match="no-such-reward"):
        bench.evaluate([GeneratedItem(bench.items()[0], solid(1, 0))], tmp_path)


def test_wrong_image_count_is_rejected(tmp_path) -> None:
    bench = ImageRewardBenchmark(images_per_item=2, reward=MeanPixelReward(), limit=1)
    with pytest.raises(ValueError, match="images_per_item=2"):
        bench.evaluate([GeneratedItem(bench.items()[0], solid(3, 0))], tmp_path)


def test_custom_prompt_file_and_errors(tmp_path) -> None:
    good = tmp_path / "p.json"
    good.write_text(json.dumps([{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}]))
    assert [i.id for i in load_prompts(path=good)] == ["a", "b"]
    for bad_text in ("not json", json.dumps([{"prompt": "no id"}]), json.dumps([{"id": "a", "prompt": "x"}] * 2)):
        bad = tmp_path / "bad.json"
        bad.write_text(bad_text)
        with pytest.raises(BenchmarkDataError) as info:
            load_prompts(path=bad)
        assert "\n" not in str(info.value)
    with pytest.raises(BenchmarkDataError, match="--bench-opt path=DIR"):
        load_prompts(path=tmp_path / "missing.json")
    with pytest.raises(BenchmarkDataError, match="benchmark, test"):
        load_prompts("nope")
