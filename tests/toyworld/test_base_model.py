"""An honest small measurement of the shipped base model at its default schedule.

The full numbers (4 images per prompt, all 52 prompts) are in weights/README.md and
docs/toyworld.md; here one image per prompt keeps the test to a few seconds.
"""

from __future__ import annotations

import torch

from cogrpo_toyworld.benchmark import ToyGenEvalBenchmark, generate
from cogrpo_toyworld.model import ToyBackbone
from cogrpo_toyworld.rewards import ToyQualityReward


def test_base_model_draws_shapes_but_is_far_from_perfect(tmp_path) -> None:
    torch.set_num_threads(2)
    bb = ToyBackbone()  # the shipped weights, the release default schedule
    bench = ToyGenEvalBenchmark(images_per_item=1)
    generated = list(generate(bb, bench.items(), images_per_item=1, seed=1234))
    scores = bench.evaluate(generated, tmp_path)
    tokens = torch.cat([g.tokens for g in generated])
    quality = ToyQualityReward()(bb.decode(tokens), [g.item.prompt for g in generated], tokens=tokens).scores
    # RL has room: well below 1 overall (measured here: 0.43), several tasks mostly failed
    assert scores["overall"] < 0.6, scores
    assert sum(v < 0.5 for k, v in scores.items() if k != "overall") >= 2, scores
    # ...but it is a working text-to-image model: shapes are drawn and prompts are followed sometimes
    # (measured here: mean toy-quality 0.74, 52% of the images entirely clean)
    assert quality.mean() > 0.4, quality.mean()
    assert (quality == 1.0).float().mean() > 0.2, "a good share of images is entirely clean"
    assert scores["overall"] > 0.05, scores
