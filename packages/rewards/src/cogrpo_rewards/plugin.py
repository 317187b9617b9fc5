"""Registers cogrpo_rewards' reward models with cogrpo (heavy imports happen inside the factories).

Every factory takes ``device``, ``dtype`` and ``path`` (a local checkpoint; the reward's hub file by
default) plus its own options, which the CLI passes as ``--reward-opt NAME.KEY=VALUE``.
"""

from __future__ import annotations

from typing import Any

from cogrpo import hookimpl


def _dtype(dtype: Any):
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        return getattr(torch, dtype.replace("torch.", ""))
    return dtype


def imagereward(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """ImageReward v1.0 (THUDM, BLIP-L): normalised human-preference reward; strict checkpoint loading."""
    from cogrpo_rewards.imagereward import ImageRewardScorer

    return ImageRewardScorer(device=device, dtype=_dtype(dtype), path=path, **options)


def hpsv2(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """HPSv2 (v2.0 default, v2.1 via version=): cosine of open_clip ViT-H-14 embeddings (×100 in benchmarks)."""
    from cogrpo_rewards.hpsv2 import HPSv2Scorer

    return HPSv2Scorer(device=device, dtype=_dtype(dtype), path=path, **options)


def hps(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """Alias of hpsv2 (metrics and options under the name 'hps')."""
    from cogrpo_rewards.hpsv2 import HPSv2Scorer

    options.setdefault("name", "hps")
    return HPSv2Scorer(device=device, dtype=_dtype(dtype), path=path, **options)


def clipscore(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """CLIP score: 100 × cosine of open_clip ViT-L-14 (OpenAI) image and prompt embeddings."""
    from cogrpo_rewards.clipscore import CLIPScorer

    return CLIPScorer(device=device, dtype=_dtype(dtype), path=path, **options)


def pickscore(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """PickScore v1: logit_scale × cosine of a preference-tuned CLIP ViT-H-14 (transformers layout)."""
    from cogrpo_rewards.pickscore import PickScoreScorer

    return PickScoreScorer(device=device, dtype=_dtype(dtype), path=path, **options)


def aesthetic(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """LAION aesthetic predictor v2: 1–10 rating from CLIP ViT-L-14 embeddings (shares CLIP with clipscore)."""
    from cogrpo_rewards.aesthetic import AestheticScorer

    return AestheticScorer(device=device, dtype=_dtype(dtype), path=path, **options)


def jpeg(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """JPEG (in)compressibility (DDPO): ∓ kB of the image saved at quality 95; no weights."""
    from cogrpo_rewards.jpeg import JpegScorer

    return JpegScorer(device=device, dtype=_dtype(dtype), path=path, **options)


def mps(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """MPS (Kwai-Kolors, overall): condition-aware CLIP ViT-H-14 preference score; local checkpoint only."""
    from cogrpo_rewards.mps import MPSScorer

    return MPSScorer(device=device, dtype=_dtype(dtype), path=path, **options)


@hookimpl
def cogrpo_register_rewards() -> dict:
    return {
        "imagereward": imagereward,
        "hpsv2": hpsv2,
        "hps": hps,
        "clipscore": clipscore,
        "pickscore": pickscore,
        "aesthetic": aesthetic,
        "jpeg": jpeg,
        "mps": mps,
    }
