"""JPEG compressibility / incompressibility (Black et al., 2023, DDPO): a weight-free reward.

Each image is saved as the 8-bit image a pipeline would write (``round(255 · x)``) and encoded as
JPEG at quality 95 with PIL; the size in kilobytes (1 kB = 1000 bytes) is the incompressibility
score, its negative the compressibility score (DDPO's definitions). Scores depend on image size:
compare runs at one resolution.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import torch

from cogrpo.errors import ConfigError
from cogrpo.protocols import RewardOutput
from cogrpo.reward_utils import validate_reward_inputs
from cogrpo_rewards._images import to_pil

MODES = ("compressibility", "incompressibility")


def jpeg_kilobytes(image, quality: int = 95) -> float:
    """Size of a PIL image encoded as JPEG at ``quality``, in kB (1000 bytes)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.tell() / 1000


class JpegScorer:
    """JPEG size reward. Options: ``mode`` (``"compressibility"``: −kB, default; or
    ``"incompressibility"``: +kB), ``quality`` (95)."""

    def __init__(
        self,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        path: str | None = None,
        mode: str = "compressibility",
        quality: int = 95,
        name: str = "jpeg",
    ) -> None:
        if mode not in MODES:
            raise ConfigError(
                f"{name}: unknown mode '{mode}'; use --reward-opt {name}.mode=compressibility or incompressibility"
            )
        self.name = name
        self.device = torch.device(device)
        self.dtype = dtype
        self.mode = mode
        self.quality = int(quality)

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,  # [B, 3, H, W] in [0, 1]
        prompts: Sequence[str],
        *,
        tokens: torch.Tensor | None = None,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> RewardOutput:
        validate_reward_inputs(images, prompts, tokens=tokens, metadata=metadata)
        kilobytes = torch.tensor([jpeg_kilobytes(im, self.quality) for im in to_pil(images)], dtype=torch.float32)
        sign = -1.0 if self.mode == "compressibility" else 1.0
        return RewardOutput(scores=sign * kilobytes, info={"jpeg_kb": kilobytes})
