"""The HPSv2 benchmark (tgxs002/HPSv2 ``hpsv2/evaluation.py``, mode ``benchmark``).

Four styles of 800 prompts each (``anime``, ``concept-art``, ``paintings``, ``photo``). The
prompt files cannot be bundled; they are read from a local directory or from where the
``hpsv2`` package and the Hugging Face cache keep them (dataset ``zhwang/HPDv2``, folder
``benchmark/``, one JSON list of prompt strings per style).

Scoring as the official evaluation does it: each image gets the HPS score ×100 (cosine of the
image and text embeddings, ×100); a style's score is the mean of its 80-prompt chunk means
(``range(0, len, 80)``; the std of the chunk means is reported beside it); the "Average" is the
mean over all scored images of all styles. The HPS version (v2.0 / v2.1) is recorded.

Official layout written under ``out_dir`` (``hpsv2.evaluate(mode="benchmark",
root_dir=out_dir/"images"/<model>)`` or ``mode="benchmark_all", root_dir=out_dir/"images"``)::

    images/<model>/<style>/<idx:05d>.jpg          sample 0 of each prompt
    images/<model>-<k>/<style>/<idx:05d>.jpg      sample k > 0 (only when images_per_item > 1)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cogrpo.protocols import EvalItem, GeneratedItem
from cogrpo_benchmarks.common import (
    BatchScorer,
    GridCollector,
    RewardHandle,
    load_image,
    quantize,
    save_jpeg,
    write_results,
)
from cogrpo_benchmarks.errors import PATH_FLAG, BenchmarkDataError

HPS_STYLES: tuple[str, ...] = ("anime", "concept-art", "paintings", "photo")
HF_DATASET = "zhwang/HPDv2"
CHUNK = 80  # prompts per chunk in the official aggregation


def hps_style_score(scores: Sequence[float], chunk: int = CHUNK) -> tuple[float, float]:
    """One style's HPS: the mean of the chunk means over ``scores[i:i + chunk]`` (the last chunk
    may be shorter) and the population std of those chunk means, as the official evaluation."""
    if not scores:
        raise ValueError("no scores for this style")
    means = [sum(scores[i : i + chunk]) / len(scores[i : i + chunk]) for i in range(0, len(scores), chunk)]
    avg = sum(means) / len(means)
    std = math.sqrt(sum((m - avg) ** 2 for m in means) / len(means))
    return avg, std


def hps_average(per_style: Mapping[str, Sequence[float]]) -> float:
    """The official "Average": the mean over every scored image of every style (pooled)."""
    pooled = [s for scores in per_style.values() for s in scores]
    if not pooled:
        raise ValueError("no scores")
    return sum(pooled) / len(pooled)


def _candidate_dirs(path: str | Path | None) -> list[Path]:
    if path is not None:
        p = Path(path).expanduser()
        return [p, p / "benchmark", p / "datasets" / "benchmark"]
    root = os.environ.get("HPS_ROOT")
    dirs = [Path(root) / "datasets" / "benchmark"] if root else []
    dirs.append(Path("~/.cache/hpsv2/datasets/benchmark").expanduser())
    return dirs


def _from_hf_cache(style: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with cogrpo's rewards
        return None
    found = try_to_load_from_cache(HF_DATASET, f"benchmark/{style}.json", repo_type="dataset")
    return Path(found) if isinstance(found, str) else None


def find_prompt_files(path: str | Path | None = None, styles: Sequence[str] = HPS_STYLES) -> dict[str, Path]:
    """Locate ``<style>.json`` for every style: in ``path`` (or its ``benchmark/``), else in
    ``$HPS_ROOT/datasets/benchmark`` / ``~/.cache/hpsv2/datasets/benchmark``, else in the
    Hugging Face cache of ``zhwang/HPDv2``. Never downloads."""
    unknown = [s for s in styles if s not in HPS_STYLES]
    if unknown:
        raise BenchmarkDataError(f"unknown HPSv2 style(s) {unknown}; choose from {', '.join(HPS_STYLES)}")
    for directory in _candidate_dirs(path):
        if all((directory / f"{s}.json").is_file() for s in styles):
            return {s: directory / f"{s}.json" for s in styles}
    if path is None:
        cached = {s: _from_hf_cache(s) for s in styles}
        if all(cached.values()):
            return cached  # type: ignore[return-value]
    where = (
        f"in {Path(path)} or its benchmark/ folder"
        if path is not None
        else (
            f"in a directory passed as {PATH_FLAG}, in $HPS_ROOT/datasets/benchmark, "
            f"~/.cache/hpsv2/datasets/benchmark or the Hugging Face cache"
        )
    )
    files = ", ".join(f"{s}.json" for s in styles)
    raise BenchmarkDataError(
        f"HPSv2 benchmark prompts not found: expected {files} (JSON lists of 800 prompts, folder benchmark/ "
        f"of the Hugging Face dataset {HF_DATASET}) {where}"
    )


def load_style_prompts(file: Path) -> list[str]:
    try:
        prompts = json.loads(Path(file).read_text("utf-8"))
    except ValueError as exc:
        raise BenchmarkDataError(f"HPSv2 prompt file {file} is not valid JSON ({exc})") from exc
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise BenchmarkDataError(f"HPSv2 prompt file {file} must be a JSON list of prompt strings")
    return prompts


class HPSv2Benchmark:
    """HPSv2 benchmark: four styles × 800 prompts, per-style chunked means ×100 and their average."""

    name = "hpsv2"

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        styles: Sequence[str] = HPS_STYLES,
        images_per_item: int = 1,
        reward: Any = "hpsv2",
        reward_path: str | None = None,
        reward_options: Mapping[str, Any] | None = None,
        hps_version: str = "v2.1",
        device: Any = "cpu",
        dtype: Any = None,
        scale: float = 100.0,
        model_name: str = "cogrpo",
        jpeg_quality: int = 95,
        batch_size: int = 16,
        limit: int | None = None,
        plugin_manager: Any = None,
    ) -> None:
        if int(images_per_item) < 1:
            raise ValueError("images_per_item must be >= 1")
        styles = (styles,) if isinstance(styles, str) else tuple(styles)
        self.files = find_prompt_files(path, styles)
        self.styles = styles
        self._items: list[EvalItem] = []
        for style in styles:
            for idx, prompt in enumerate(load_style_prompts(self.files[style])[: limit if limit else None]):
                self._items.append(
                    EvalItem(id=f"{style}/{idx:05d}", prompt=prompt, metadata={"style": style, "index": idx})
                )
        self.images_per_item = int(images_per_item)
        options = dict(reward_options or {})
        if isinstance(reward, str):
            options.setdefault("version", hps_version)
        self.reward = RewardHandle(
            reward, device=device, dtype=dtype, path=reward_path, options=options, plugin_manager=plugin_manager
        )
        self.hps_version = hps_version
        self.scale = float(scale)
        self.model_name = model_name
        self.jpeg_quality = int(jpeg_quality)
        self.batch_size = int(batch_size)

    def items(self) -> list[EvalItem]:
        return list(self._items)

    def image_path(self, out_dir: Path, style: str, index: int, sample: int = 0) -> Path:
        model = self.model_name if sample == 0 else f"{self.model_name}-{sample}"
        return Path(out_dir) / "images" / model / style / f"{index:05d}.jpg"

    def evaluate(self, generated: Iterable[GeneratedItem], out_dir: Path) -> dict[str, float]:
        out_dir = Path(out_dir)
        scorer = BatchScorer(self.reward.get, self.batch_size)
        grid = GridCollector()
        order: list[tuple[str, int, int]] = []  # (style, index, samples)
        for gen in generated:
            style, index = gen.item.metadata["style"], int(gen.item.metadata["index"])
            images = quantize(gen.images)
            if images.shape[0] != self.images_per_item:
                raise ValueError(
                    f"item {gen.item.id}: got {images.shape[0]} images, expected images_per_item={self.images_per_item}"
                )
            for k, image in enumerate(images):
                path = self.image_path(out_dir, style, index, k)
                save_jpeg(image, path, self.jpeg_quality)
                scorer.add((style, index, k), load_image(path), gen.item.prompt)  # score the JPEG as written
            grid.add(images[0])
            order.append((style, index, len(images)))
        scorer.flush()
        if not order:
            raise ValueError("evaluate() received no generated items")

        per_style: dict[str, list[float]] = {}
        for style, index, n in sorted(order, key=lambda t: (HPS_STYLES.index(t[0]), t[1])):
            prompt_score = sum(scorer.scores[(style, index, k)] for k in range(n)) / n * self.scale
            per_style.setdefault(style, []).append(prompt_score)
        metrics: dict[str, float] = {}
        for style in HPS_STYLES:
            if style in per_style:
                metrics[style], metrics[f"{style}/chunk_std"] = hps_style_score(per_style[style])
        metrics["overall"] = hps_average(per_style)
        reward = self.reward.get()
        version = getattr(reward, "version", None) or self.hps_version
        settings = {
            "hps_version": version,
            "reward": self.reward.name,
            "scale": self.scale,
            "chunk": CHUNK,
            "images_per_item": self.images_per_item,
            "jpeg_quality": self.jpeg_quality,
            "prompt_files": {s: str(p) for s, p in self.files.items()},
            "aggregation": "style = mean of 80-prompt chunk means of score x scale; overall = mean of all scores",
        }
        details = {"scores": {style: scores for style, scores in per_style.items()}}
        write_results(out_dir, benchmark=self.name, metrics=metrics, settings=settings, details=details)
        grid.save(out_dir / "grid.png")
        return metrics
