"""HPSv2 / HPSv2.1 (Wu et al., 2023; tgxs002/HPSv2): an open_clip ViT-H-14 fine-tuned on human preferences.

Checkpoints (https://huggingface.co/xswu/HPSv2): ``HPS_v2_compressed.pt`` (``version="v2.0"``, the
version the Co-GRPO paper reports) and ``HPS_v2.1_compressed.pt`` (``version="v2.1"``). Both are
torch pickles of ``{"state_dict": ...}`` in open_clip's parameter names; they load strictly into
open_clip's ``ViT-H-14`` (read with the restricted ``weights_only`` unpickler; ``.safetensors`` of
the bare state dict work too). The version is recorded in ``reward.version`` and per-sample
``info["version"]``: the package's ``score()`` defaults to v2.0 and its ``evaluate()`` to v2.1.

Score: the cosine between the normalised image and text embeddings (the diagonal of
``image_features @ text_features.T``, no logit scale), as ``hpsv2.score`` returns it; benchmarks
report it ×100 (``scale=100`` gives that). Preprocessing is HPS's own evaluation transform: 8-bit
image -> float -> bicubic (antialiased) resize of the **longest** side to 224 -> zero padding to
224×224 (centred) -> CLIP mean/std; prompts -> open_clip's tokenizer (77 tokens).
Verified equal to ``hpsv2x==1.2.0``'s ``score`` on the same random weights
(``tests/rewards/test_hpsv2.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cogrpo.errors import ConfigError
from cogrpo.protocols import RewardOutput
from cogrpo.reward_utils import validate_reward_inputs
from cogrpo_rewards._images import pil_to_float
from cogrpo_rewards._models import open_clip_model, resolve_arch
from cogrpo_rewards._weights import resolve_file

REPO_ID = "xswu/HPSv2"
CHECKPOINTS = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_longest_and_pad(images: torch.Tensor, size: int) -> torch.Tensor:
    """HPS's ``ResizeMaxSize``: ``[B, 3, H, W]`` float -> longest side ``size`` (bicubic, antialiased),
    zero-padded to ``[B, 3, size, size]`` with the extra split evenly (left/top get the floor)."""
    from torchvision.transforms.v2 import functional as TF

    h, w = images.shape[-2:]
    scale = size / max(h, w)
    if scale != 1.0:
        new_h, new_w = round(h * scale), round(w * scale)
        images = TF.resize(images, [new_h, new_w], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    pad_h, pad_w = size - images.shape[-2], size - images.shape[-1]
    return F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)


class HPSv2Scorer:
    """HPSv2 as a cogrpo reward (batched; explicit device/dtype; version recorded).

    Options: ``version`` (``"v2.0"`` default, or ``"v2.1"``), ``path`` (the checkpoint file or a
    folder holding it; default: the HF cache of ``xswu/HPSv2``), ``arch`` (open_clip architecture,
    ``ViT-H-14``), ``scale`` (multiplier of the cosine, default 1; 100 gives benchmark units),
    ``batch_size`` (images per forward).
    """

    def __init__(
        self,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        path: str | Path | None = None,
        version: str = "v2.0",
        arch: str = "ViT-H-14",
        scale: float = 1.0,
        batch_size: int = 16,
        name: str = "hpsv2",
    ) -> None:
        if version not in CHECKPOINTS:
            raise ConfigError(f"{name}: unknown version '{version}'; use --reward-opt {name}.version=v2.0 or v2.1")
        import open_clip

        self.name = name
        arch = resolve_arch(arch)
        self.version = version
        self.device = torch.device(device)
        self.dtype = dtype
        self.scale = float(scale)
        self.batch_size = int(batch_size)
        file = resolve_file(name, path=path, repo_id=REPO_ID, filenames=(CHECKPOINTS[version],))
        self.checkpoint = str(file)
        self.model = open_clip_model(
            arch, file, device=self.device, dtype=dtype, reward=name, state_dict_key="state_dict"
        )
        self.tokenizer = open_clip.get_tokenizer(arch)
        size = self.model.visual.image_size
        self.image_size = size[0] if isinstance(size, (tuple, list)) else size
        self._mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in ``[0, 1]`` -> ``[B, 3, 224, 224]`` normalised (HPS's evaluation transform)."""
        x = pil_to_float(images.to(self.device))  # what ToTensor gives for the saved 8-bit image
        x = resize_longest_and_pad(x, self.image_size)
        return (x - self._mean) / self._std

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
        text = self.tokenizer(list(prompts))  # [B, 77]
        scores = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            pixels = self.preprocess(images[chunk]).to(self.dtype)
            image_features = F.normalize(self.model.encode_image(pixels).float(), dim=-1)  # [b, D]
            text_features = F.normalize(self.model.encode_text(text[chunk].to(self.device)).float(), dim=-1)
            scores.append((image_features * text_features).sum(-1))  # [b]: the diagonal of I @ T^T
        scores = torch.cat(scores).cpu() * self.scale
        return RewardOutput(scores=scores, info={"version": [self.version] * len(prompts)})
