"""Image conversions shared by the rewards.

The reference scorers (ImageReward, HPS, open_clip, PickScore, LAION aesthetic) take 8-bit images.
cogrpo images are float ``[B, 3, H, W]`` in ``[0, 1]``; every reward first turns them into the
8-bit image a pipeline would save (``round(255 · x)``, as diffusers' ``numpy_to_pil``) and then
runs the reference's own preprocessing, so a score equals the reference's score on the saved
image.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` float in ``[0, 1]`` (any float dtype, any device) -> ``[B, 3, H, W]`` uint8."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """``[B, 3, H, W]`` float in ``[0, 1]`` -> ``B`` RGB PIL images (8-bit, as saved)."""
    arrays = to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()  # [B, H, W, 3]
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arrays]


def pil_to_float(images: torch.Tensor) -> torch.Tensor:
    """The float tensor torchvision's ``ToTensor`` makes of the saved 8-bit image: ``uint8 / 255``."""
    return to_uint8(images).float().div(255)


def clip_image_processor_class():
    """transformers' PIL-backed CLIP image processor (the v4 "slow" one the reference scorers used);
    transformers 5 made a torchvision backend the default ``CLIPImageProcessor``."""
    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    except ImportError:  # transformers 4.x: CLIPImageProcessor is the PIL one
        from transformers import CLIPImageProcessor as CLIPImageProcessorPil
    return CLIPImageProcessorPil
