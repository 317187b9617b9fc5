"""LAION aesthetic predictor v2 ("improved aesthetic predictor", christophschuhmann/improved-aesthetic-predictor).

An MLP (768 -> 1024 -> 128 -> 64 -> 16 -> 1, no activations, as released) on the L2-normalised
CLIP ViT-L/14 (OpenAI) image embedding; the score is the predicted 1–10 aesthetic rating (higher
is better; the prompt is ignored). The DDPO aesthetic reward is this model.

Head weights: ``sac+logos+ava1-l14-linearMSE.pth`` from
https://github.com/christophschuhmann/improved-aesthetic-predictor, mirrored as
``aesthetic-model.pth`` in https://huggingface.co/trl-lib/ddpo-aesthetic-predictor (a torch-pickled
state dict ``layers.{0,2,4,6,7}.{weight,bias}``; loaded strictly). The CLIP model is open_clip's
``ViT-L-14`` / ``openai`` and is shared with ``clipscore`` (same weights, device and dtype: loaded
once). Preprocessing: open_clip's evaluation transform of the 8-bit image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cogrpo.protocols import RewardOutput
from cogrpo.reward_utils import validate_reward_inputs
from cogrpo_rewards._images import to_pil
from cogrpo_rewards._models import open_clip_model, open_clip_preprocess, open_clip_weights, resolve_arch
from cogrpo_rewards._weights import load_state_dict_file, load_strict, resolve_file
from cogrpo_rewards.imagereward import ScoreMLP

REPO_ID = "trl-lib/ddpo-aesthetic-predictor"
HEAD_FILES = ("aesthetic-model.pth", "sac+logos+ava1-l14-linearMSE.pth")


class AestheticScorer:
    """LAION aesthetic score as a cogrpo reward. Options: ``path`` (the MLP head file),
    ``clip_path`` (local open_clip ViT-L-14 weights), ``arch`` / ``pretrained`` (``ViT-L-14`` /
    ``openai``), ``batch_size``."""

    def __init__(
        self,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        path: str | Path | None = None,
        clip_path: str | Path | None = None,
        arch: str = "ViT-L-14",
        pretrained: str | None = "openai",
        batch_size: int = 16,
        name: str = "aesthetic",
    ) -> None:
        self.name = name
        arch = resolve_arch(arch)
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = int(batch_size)
        head_file = resolve_file(
            name,
            path=path,
            repo_id=REPO_ID,
            filenames=HEAD_FILES,
            source="https://github.com/christophschuhmann/improved-aesthetic-predictor or https://huggingface.co/"
            + REPO_ID,
        )
        clip_file, quick_gelu = open_clip_weights(name, arch, pretrained, clip_path, option="clip_path")
        self.clip_model = open_clip_model(
            arch, clip_file, device=self.device, dtype=dtype, reward=name, quick_gelu=quick_gelu
        )
        width = self.clip_model.visual.output_dim
        self.head = ScoreMLP(width)
        load_strict(self.head, load_state_dict_file(head_file), reward=name, source=head_file)
        self.head.to(self.device, torch.float32).eval()
        self.checkpoint = str(head_file)
        size = self.clip_model.visual.image_size
        self.preprocess = open_clip_preprocess(arch, pretrained, size[0] if isinstance(size, (tuple, list)) else size)

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
        pixels = torch.stack([self.preprocess(im) for im in to_pil(images)])  # [B, 3, 224, 224]
        scores = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = pixels[start : start + self.batch_size].to(self.device, self.dtype)
            embedding = F.normalize(self.clip_model.encode_image(chunk).float(), dim=-1)  # [b, 768]
            scores.append(self.head(embedding).squeeze(-1))
        return RewardOutput(scores=torch.cat(scores).cpu(), info={})
