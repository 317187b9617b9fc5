"""HPSv2: chunked style means, pooled average, prompt discovery, the official layout read back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from benchmarks_helpers import MeanPixelReward, solid
from PIL import Image

from cogrpo import hookimpl
from cogrpo.plugins import get_plugin_manager
from cogrpo.protocols import GeneratedItem
from cogrpo_benchmarks.errors import BenchmarkDataError
from cogrpo_benchmarks.hpsv2 import HPS_STYLES, HPSv2Benchmark, find_prompt_files, hps_average, hps_style_score


def test_style_score_is_the_mean_of_chunk_means() -> None:
    # chunk 2: [1, 3] -> 2, [5] -> 5; mean of chunk means 3.5 (the plain mean is 3); population std 1.5
    assert hps_style_score([1.0, 3.0, 5.0], chunk=2) == pytest.approx((3.5, 1.5))
    # 800 prompts in 10 equal chunks: mean of chunk means = plain mean; chunk means 0..9 -> std sqrt(8.25)
    scores = [float(i // 80) for i in range(800)]
    assert hps_style_score(scores) == pytest.approx((4.5, 8.25**0.5))
    with pytest.raises(ValueError):
        hps_style_score([])


def test_average_pools_all_images() -> None:
    # pooled mean of [1, 2, 3] is 2 (the mean of the style means would be 2.25)
    assert hps_average({"anime": [1.0, 2.0], "photo": [3.0]}) == pytest.approx(2.0)


def _write_styles(folder, n=3, styles=HPS_STYLES):
    folder.mkdir(parents=True, exist_ok=True)
    for s in styles:
        (folder / f"{s}.json").write_text(json.dumps([f"{s} prompt {i}" for i in range(n)]))
    return folder


@pytest.fixture
def no_default_dirs(tmp_path, monkeypatch):
    """Point HOME, HPS_ROOT and the Hugging Face cache at empty folders."""
    import huggingface_hub.constants

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HPS_ROOT", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def test_prompt_files_are_found_in_every_supported_place(no_default_dirs, monkeypatch) -> None:
    tmp = no_default_dirs
    direct = _write_styles(tmp / "direct")
    assert find_prompt_files(direct)["photo"] == direct / "photo.json"
    nested = _write_styles(tmp / "nested" / "benchmark")
    assert find_prompt_files(tmp / "nested")["anime"] == nested / "anime.json"
    root = _write_styles(tmp / "hpsroot" / "datasets" / "benchmark")
    monkeypatch.setenv("HPS_ROOT", str(tmp / "hpsroot"))
    assert find_prompt_files()["paintings"] == root / "paintings.json"
    monkeypatch.delenv("HPS_ROOT")
    # the Hugging Face cache layout of the dataset zhwang/HPDv2
    repo = tmp / "hf" / "datasets--zhwang--HPDv2"
    _write_styles(repo / "snapshots" / "abc123" / "benchmark")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    found = find_prompt_files()
    assert found["concept-art"] == repo / "snapshots" / "abc123" / "benchmark" / "concept-art.json"


def test_missing_prompts_give_one_line_with_the_expected_layout(no_default_dirs) -> None:
    with pytest.raises(BenchmarkDataError) as info:
        find_prompt_files()
    message = str(info.value)
    assert "\n" not in message
    for needed in (
        "anime.json",
        "concept-art.json",
        "paintings.json",
        "photo.json",
        "zhwang/HPDv2",
        "--bench-opt path=DIR",
    ):
        assert needed in message
    _write_styles(no_default_dirs / "partial", styles=("anime",))
    with pytest.raises(BenchmarkDataError, match="photo.json"):
        find_prompt_files(no_default_dirs / "partial")
    with pytest.raises(BenchmarkDataError, match="unknown HPSv2 style"):
        find_prompt_files(no_default_dirs / "partial", styles=("cartoon",))


def test_evaluate_layout_scores_x100_and_version(no_default_dirs) -> None:
    data = _write_styles(no_default_dirs / "data", n=3)
    reward = MeanPixelReward(name="hpsv2", version="v2.0")
    bench = HPSv2Benchmark(path=data, styles=("anime", "photo"), reward=reward, batch_size=4)
    items = bench.items()
    assert [i.id for i in items] == [f"{s}/{k:05d}" for s in ("anime", "photo") for k in range(3)]
    levels = {"anime": [51, 102, 153], "photo": [204, 255, 0]}
    gens = [GeneratedItem(it, solid(1, levels[it.metadata["style"]][it.metadata["index"]], size=16)) for it in items]
    out = no_default_dirs / "out"
    metrics = bench.evaluate(gens, out)

    read_back = {}
    for style in ("anime", "photo"):
        for k in range(3):  # hpsv2's BenchmarkDataset reads <root>/<style>/<idx:05d>.jpg
            pixels = np.asarray(Image.open(out / "images" / "cogrpo" / style / f"{k:05d}.jpg"), dtype=np.float64)
            assert abs(pixels.mean() - levels[style][k]) <= 1.0
            read_back.setdefault(style, []).append(100.0 * pixels.mean() / 255.0)
    # the scores are of the JPEGs as written, x100
    assert metrics["anime"] == pytest.approx(sum(read_back["anime"]) / 3, abs=1e-4)
    assert metrics["photo"] == pytest.approx(sum(read_back["photo"]) / 3, abs=1e-4)
    assert metrics["overall"] == pytest.approx(sum(read_back["anime"] + read_back["photo"]) / 6, abs=1e-4)
    assert metrics["overall"] == pytest.approx(100 * (51 + 102 + 153 + 204 + 255 + 0) / 6 / 255, abs=0.5)
    assert reward.calls == [4, 2]  # batched across items
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["hps_version"] == "v2.0"  # what the reward reports, not the default
    assert results["scores"]["photo"] == pytest.approx(read_back["photo"], abs=1e-4)
    assert (out / "grid.png").is_file() and (out / "results.md").is_file()


def test_reward_by_name_gets_the_hps_version(no_default_dirs) -> None:
    seen = {}

    class Plugin:
        @staticmethod
        @hookimpl
        def cogrpo_register_rewards():
            def factory(*, device, dtype, path, **options):
                seen.update(options, path=path)
                return MeanPixelReward(name="hpsv2")

            return {"hpsv2": factory}

    data = _write_styles(no_default_dirs / "data", n=1)
    pm = get_plugin_manager(plugins=[Plugin()], autoload=False)
    bench = HPSv2Benchmark(
        path=data, styles="anime", reward="hpsv2", hps_version="v2.0", reward_path="/ckpt.pt", plugin_manager=pm
    )
    bench.evaluate([GeneratedItem(bench.items()[0], solid(1, 255))], no_default_dirs / "out")
    assert seen == {"version": "v2.0", "path": "/ckpt.pt"}
    results = json.loads((no_default_dirs / "out" / "results.json").read_text())
    assert results["settings"]["hps_version"] == "v2.0"


def test_several_images_per_prompt_get_their_own_official_trees(no_default_dirs) -> None:
    data = _write_styles(no_default_dirs / "data", n=1)
    bench = HPSv2Benchmark(path=data, styles="photo", images_per_item=2, reward=MeanPixelReward())
    metrics = bench.evaluate([GeneratedItem(bench.items()[0], solid(2, [0, 255]))], no_default_dirs / "out")
    assert (no_default_dirs / "out" / "images" / "cogrpo" / "photo" / "00000.jpg").is_file()
    assert (no_default_dirs / "out" / "images" / "cogrpo-1" / "photo" / "00000.jpg").is_file()
    assert metrics["photo"] == pytest.approx(50.0, abs=0.5)  # the prompt's mean over its two images
