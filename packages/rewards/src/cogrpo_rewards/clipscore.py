"""CLIP score: image-prompt agreement of an open_clip model (default CLIP ViT-L/14, OpenAI weights).

Convention: ``score = scale · cos(image_embedding, text_embedding)`` with ``scale = 100`` and no
clamping (the unit the Co-GRPO paper's held-out "Clip-Score" is reported in, ~30 for good
images). Hessel et al.'s CLIPScore is ``2.5 · max(cos, 0)`` (``scale=2.5, clamp=True``);
torchmetrics' is ``max(100 · cos, 0)`` (``clamp=True``). The convention is also in every output's
``info["convention"]``.

Weights: open_clip's release of the architecture/tag (``ViT-L-14`` / ``openai``: the HF repo
``timm/vit_large_patch14_clip_224.openai``, file ``open_clip_model.safetensors`` or
``open_clip_pytorch_model.bin``), or a local file in open_clip's parameter names. The model is
shared with every other reward that loads the same weights on the same device and dtype
(``aesthetic`` uses this one). Preprocessing: the 8-bit image through open_clip's own evaluation
transform for the tag (bicubic short-side resize, centre crop, CLIP mean/std); prompts through
open_clip's tokenizer (77 tokens).
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


class CLIPScorer:
    """CLIP score as a cogrpo reward. Options: ``arch`` (``ViT-L-14``), ``pretrained`` (``openai``),
    ``path`` (local open_clip weights file), ``scale`` (100), ``clamp`` (False: clamp at 0),
    ``batch_size``."""

    def __init__(
        self,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        path: str | Path | None = None,
        arch: str = "ViT-L-14",
        pretrained: str | None = "openai",
        scale: float = 100.0,
        clamp: bool = False,
        batch_size: int = 16,
        name: str = "clipscore",
    ) -> None:
        import open_clip

        self.name = name
        arch = resolve_arch(arch)
        self.device = torch.device(device)
        self.dtype = dtype
        self.scale = float(scale)
        self.clamp = bool(clamp)
        self.batch_size = int(batch_size)
        file, quick_gelu = open_clip_weights(name, arch, pretrained, path)
        self.checkpoint = str(file)
        self.model = open_clip_model(arch, file, device=self.device, dtype=dtype, reward=name, quick_gelu=quick_gelu)
        self.tokenizer = open_clip.get_tokenizer(arch)
        size = self.model.visual.image_size
        self.preprocess = open_clip_preprocess(arch, pretrained, size[0] if isinstance(size, (tuple, list)) else size)
        self.convention = f"{'max(' if self.clamp else ''}{self.scale:g}·cos{', 0)' if self.clamp else ''}"

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
        text = self.tokenizer(list(prompts))  # [B, 77]
        cosines = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            image_features = F.normalize(
                self.model.encode_image(pixels[chunk].to(self.device, self.dtype)).float(), dim=-1
            )
            text_features = F.normalize(self.model.encode_text(text[chunk].to(self.device)).float(), dim=-1)
            cosines.append((image_features * text_features).sum(-1))  # [b]
        cosine = torch.cat(cosines).cpu()
        scores = self.scale * cosine
        if self.clamp:
            scores = scores.clamp(min=0)
        return RewardOutput(scores=scores, info={"cosine": cosine, "convention": [self.convention] * len(prompts)})
