"""Registers cogrpo_benchmarks' benchmarks with cogrpo (``cogrpo eval --benchmark NAME``).

Factories take ``path`` (the data path, ``--bench-opt path=DIR``) and keyword options (``--bench-opt KEY=VALUE``);
heavy modules are imported inside them so ``cogrpo plugins`` stays fast.
"""

from __future__ import annotations

from typing import Any

from cogrpo import hookimpl


def imagereward(*, path: str | None = None, **options: Any):
    """ImageReward benchmark: bundled 100 benchmark / 466 test prompts, N images each, mean of prompt means."""
    from cogrpo_benchmarks.imagereward import ImageRewardBenchmark

    return ImageRewardBenchmark(path=path, **options)


def hpsv2(*, path: str | None = None, **options: Any):
    """HPSv2 benchmark: anime / concept-art / paintings / photo (800 prompts each), chunked means x100."""
    from cogrpo_benchmarks.hpsv2 import HPSv2Benchmark

    return HPSv2Benchmark(path=path, **options)


def geneval(*, path: str | None = None, **options: Any):
    """GenEval: bundled 553 prompts x 4 images, official folder layout, per-tag accuracy and overall."""
    from cogrpo_benchmarks.geneval import GenEvalBenchmark

    return GenEvalBenchmark(path=path, **options)


def dpg(*, path: str | None = None, **options: Any):
    """DPG-Bench: 2x2 grids by item id, VQA with dependency-aware scoring, categories (data: --bench-opt path=DIR)."""
    from cogrpo_benchmarks.dpg import DPGBenchmark

    return DPGBenchmark(path=path, **options)


@hookimpl
def cogrpo_register_benchmarks() -> dict:
    return {"imagereward": imagereward, "hpsv2": hpsv2, "geneval": geneval, "dpg": dpg}
