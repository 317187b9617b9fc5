"""Reward-hacking monitors and report statistics on hand-computed inputs."""

from __future__ import annotations

import math

import pytest
import torch

from cogrpo.monitors import color_entropy, group_diversity, monitor_metrics, saturation
from cogrpo.stats import bootstrap_ci, mean_std


def test_saturation() -> None:
    gray = torch.full((1, 3, 4, 4), 0.5)
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0
    half = torch.zeros(1, 3, 2, 2)
    half[:, 0] = 1.0
    half[:, :, :, 1] = 1.0  # right column white: saturation 0 there
    torch.testing.assert_close(saturation(torch.cat([gray, red])), torch.tensor([0.0, 1.0]))
    assert saturation(half).item() == pytest.approx(0.5)
    assert saturation(torch.zeros(1, 3, 2, 2)).item() == 0.0  # black: defined as 0


def test_color_entropy_bits() -> None:
    flat = torch.full((1, 3, 4, 4), 0.3)
    two = torch.zeros(1, 3, 4, 4)
    two[:, :, :2] = 1.0  # half black, half white
    four = torch.zeros(1, 3, 2, 2)
    four[0, 0, 0, 0] = 1.0
    four[0, 1, 0, 1] = 1.0
    four[0, 2, 1, 0] = 1.0
    torch.testing.assert_close(color_entropy(torch.cat([flat, two])), torch.tensor([0.0, 1.0]))
    assert color_entropy(four).item() == pytest.approx(2.0)


def test_group_diversity() -> None:
    tokens = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4], [0, 0, 0, 0], [1, 1, 1, 1]])
    # group 0 identical; group 1 differs in every position
    torch.testing.assert_close(group_diversity(tokens, 2), torch.tensor([0.0, 1.0]))
    three = torch.tensor([[0, 0], [0, 1], [1, 1]])  # pairs: 0.5, 1.0, 0.5 -> mean 2/3
    assert group_diversity(three, 3).item() == pytest.approx(2 / 3)
    metrics = monitor_metrics(torch.rand(4, 3, 8, 8), tokens, 2)
    assert set(metrics) == {"monitor/saturation", "monitor/color_entropy", "monitor/diversity"}
    assert metrics["monitor/diversity"] == pytest.approx(0.5)


def test_bootstrap_ci() -> None:
    mean, low, high = bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and 1.0 <= low < 2.5 < high <= 4.0
    assert bootstrap_ci([0.7]) == (0.7, 0.7, 0.7)
    assert bootstrap_ci([1.0, 2.0], seed=1) == bootstrap_ci([1.0, 2.0], seed=1)
    m, s = mean_std([1.0, 3.0])
    assert m == 2.0 and s == pytest.approx(math.sqrt(2))
