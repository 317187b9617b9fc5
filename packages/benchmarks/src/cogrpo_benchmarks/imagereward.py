"""The ImageReward benchmark (THUDM/ImageReward ``test-benchmark.py``).

Prompts are bundled (Apache-2.0, see ``data/imagereward/NOTICE.md``): the repository's 100
benchmark prompts (``split="benchmark"``, the official script's default) and the 466 prompts of
its test split (``split="test"``). ``N`` images per prompt are scored with the ``imagereward``
reward; the benchmark score is the mean over prompts of each prompt's mean reward.

Official layout written under ``out_dir``::

    prompts.json                                   the {id, prompt} list used (official format)
    generations/<model>/<id>_<i>.png               the official script's --img_dir/<model> layout
    results/ImageReward-v1.0/ImageReward-v1.0-benchmark-<model>-result.json
    results/ImageReward-v1.0-benchmark-results.json
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from cogrpo.protocols import EvalItem, GeneratedItem
from cogrpo_benchmarks.common import (
    GridCollector,
    RewardHandle,
    quantize,
    save_png,
    score_images,
    write_results,
)
from cogrpo_benchmarks.errors import PATH_FLAG, BenchmarkDataError

SPLITS: dict[str, str] = {"benchmark": "benchmark-prompts.json", "test": "test-prompts.json"}
#: The name the official script gives the ImageReward model's result files.
OFFICIAL_MODEL_NAME = "ImageReward-v1.0"


def mean_of_prompt_means(per_prompt: Sequence[Sequence[float]]) -> float:
    """The ImageReward benchmark score: mean over prompts of each prompt's mean image reward."""
    if not per_prompt:
        raise ValueError("no prompts were scored")
    if any(len(scores) == 0 for scores in per_prompt):
        raise ValueError("every prompt needs at least one scored image")
    return float(sum(sum(s) / len(s) for s in per_prompt) / len(per_prompt))


def load_prompts(split: str = "benchmark", path: str | Path | None = None) -> list[EvalItem]:
    """The benchmark's ``{id, prompt}`` list: a bundled split, or a JSON file at ``path`` in the
    same format (a list of objects with ``id`` and ``prompt``)."""
    if path is None:
        if split not in SPLITS:
            raise BenchmarkDataError(f"unknown ImageReward split '{split}'; choose one of: {', '.join(SPLITS)}")
        text = resources.files("cogrpo_benchmarks").joinpath("data", "imagereward", SPLITS[split]).read_text("utf-8")
        source = f"bundled {SPLITS[split]}"
    else:
        file = Path(path)
        if not file.is_file():
            raise BenchmarkDataError(
                f'ImageReward prompt file not found: {file} (expected a JSON list of {{"id", "prompt"}} '
                f"objects like benchmark/benchmark-prompts.json; pass the file with {PATH_FLAG})"
            )
        text, source = file.read_text("utf-8"), str(file)
    try:
        entries = json.loads(text)
        items = [EvalItem(id=str(e["id"]), prompt=str(e["prompt"]), metadata={}) for e in entries]
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchmarkDataError(
            f'ImageReward prompt file {source} is not a JSON list of {{"id", "prompt"}} objects ({exc!r})'
        ) from exc
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise BenchmarkDataError(f"ImageReward prompt file {source} has duplicate ids; ids name the image files")
    return items


class ImageRewardBenchmark:
    """ImageReward benchmark: N images per prompt, mean of per-prompt mean ImageReward."""

    name = "imagereward"

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        split: str = "benchmark",
        images_per_item: int = 10,
        reward: Any = "imagereward",
        reward_path: str | None = None,
        reward_options: Mapping[str, Any] | None = None,
        device: Any = "cpu",
        dtype: Any = None,
        model_name: str = "cogrpo",
        limit: int | None = None,
        plugin_manager: Any = None,
    ) -> None:
        if int(images_per_item) < 1:
            raise ValueError("images_per_item must be >= 1")
        self.images_per_item = int(images_per_item)
        self.split = split if path is None else "custom"
        self._items = load_prompts(split, path)[: limit if limit else None]
        self.reward = RewardHandle(
            reward, device=device, dtype=dtype, path=reward_path, options=reward_options, plugin_manager=plugin_manager
        )
        self.model_name = model_name

    def items(self) -> list[EvalItem]:
        return list(self._items)

    def evaluate(self, generated: Iterable[GeneratedItem], out_dir: Path) -> dict[str, float]:
        out_dir = Path(out_dir)
        image_dir = out_dir / "generations" / self.model_name
        grid = GridCollector()
        results: list[dict[str, Any]] = []
        for gen in generated:
            images = quantize(gen.images)  # [n, 3, H, W], exactly what the PNGs hold
            if images.shape[0] != self.images_per_item:
                raise ValueError(
                    f"item {gen.item.id}: got {images.shape[0]} images, expected images_per_item={self.images_per_item}"
                )
            for i, image in enumerate(images):
                save_png(image, image_dir / f"{gen.item.id}_{i}.png")
            grid.add(images[0])
            rewards = score_images(self.reward.get(), images, [gen.item.prompt] * len(images))
            results.append(
                {
                    "id": gen.item.id,
                    "prompt": gen.item.prompt,
                    "mean_score": sum(rewards) / len(rewards),
                    "rewards": rewards,
                }
            )
        if not results:
            raise ValueError("evaluate() received no generated items")

        overall = mean_of_prompt_means([r["rewards"] for r in results])
        reward_name = self.reward.name
        bench_type = OFFICIAL_MODEL_NAME if reward_name == "imagereward" else reward_name
        official = out_dir / "results" / bench_type
        official.mkdir(parents=True, exist_ok=True)
        (official / f"{bench_type}-benchmark-{self.model_name}-result.json").write_text(
            json.dumps(results, indent=4, ensure_ascii=False) + "\n"
        )
        (out_dir / "results" / f"{bench_type}-benchmark-results.json").write_text(
            json.dumps({self.model_name: overall}, indent=4) + "\n"
        )
        scored = {r["id"] for r in results}
        (out_dir / "prompts.json").write_text(
            json.dumps(
                [{"id": it.id, "prompt": it.prompt} for it in self._items if it.id in scored],
                indent=4,
                ensure_ascii=False,
            )
            + "\n"
        )
        all_rewards = [s for r in results for s in r["rewards"]]
        metrics = {
            "overall": overall,
            "image_mean": sum(all_rewards) / len(all_rewards),
            "prompts": float(len(results)),
            "images": float(len(all_rewards)),
        }
        settings = {
            "split": self.split,
            "images_per_item": self.images_per_item,
            "reward": reward_name,
            "model_name": self.model_name,
            "aggregation": "mean over prompts of the per-prompt mean reward",
        }
        write_results(out_dir, benchmark=self.name, metrics=metrics, settings=settings, details={"items": results})
        grid.save(out_dir / "grid.png")
        return metrics
