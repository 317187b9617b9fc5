"""JPEG (in)compressibility: sizes from PIL's encoder, sign conventions, contract."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cogrpo.errors import ConfigError
from cogrpo.testing import RewardContract
from cogrpo_rewards.jpeg import JpegScorer


def _pil_kb(array: np.ndarray) -> float:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return len(buffer.getvalue()) / 1000


def test_sizes_are_pil_jpeg_kilobytes():
    g = torch.Generator().manual_seed(0)
    images = torch.cat([torch.full((1, 3, 64, 64), 0.5), torch.rand(1, 3, 64, 64, generator=g)])
    arrays = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    expected = torch.tensor([_pil_kb(a) for a in arrays])
    incompressible = JpegScorer(mode="incompressibility")(images, ["", ""])
    compressible = JpegScorer(mode="compressibility")(images, ["", ""])
    torch.testing.assert_close(incompressible.scores, expected)
    torch.testing.assert_close(compressible.scores, -expected)
    torch.testing.assert_close(compressible.info["jpeg_kb"], expected)
    assert expected[0] < expected[1], "a flat grey image compresses far better than noise"
    assert compressible.scores[0] > compressible.scores[1]


def test_unknown_mode():
    with pytest.raises(ConfigError, match="--reward-opt jpeg.mode="):
        JpegScorer(mode="smallness")


class TestJpegContract(RewardContract):
    def make_reward(self):
        return JpegScorer(device="cpu", dtype=torch.float32)
