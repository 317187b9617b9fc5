"""PickScore (Kirstain et al., 2023): a CLIP ViT-H/14 fine-tuned on Pick-a-Pic preferences.

Model: https://huggingface.co/yuvalkirstain/PickScore_v1 (transformers ``CLIPModel`` layout:
``config.json`` + weights), processor (tokenizer + image processor) from
https://huggingface.co/laion/CLIP-ViT-H-14-laion2B-s32B-b79K, as in the PickScore README. Either
may be a local folder in the same layout (``path`` / ``processor_path``; a ``path`` folder that
also holds the processor files serves both). Loading is strict: missing or mis-shaped weights
are an error (transformers would otherwise initialise them randomly).

Score: ``logit_scale.exp() · cos(image_embedding, text_embedding)`` (≈ 100 · cos for the released
model, ~20–23 for typical images), as the README computes it. Preprocessing: the 8-bit image
through ``CLIPImageProcessorPil`` (PIL bicubic short-side resize 224, centre crop, CLIP
mean/std: the processor the README used, before transformers 5 made the torchvision backend the
default); prompts through ``CLIPTokenizer`` (truncated to 77).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cogrpo.errors import CheckpointError, WeightsNotFoundError
from cogrpo.protocols import RewardOutput
from cogrpo.reward_utils import validate_reward_inputs
from cogrpo_rewards._images import to_pil
from cogrpo_rewards._weights import resolve_folder

REPO_ID = "yuvalkirstain/PickScore_v1"
PROCESSOR_REPO_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
PROCESSOR_FILES = ("preprocessor_config.json", "vocab.json", "merges.txt")


def _has_processor(folder: Path) -> bool:
    return all((folder / f).is_file() for f in PROCESSOR_FILES)


def _features(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor in transformers 4 and an output with ``pooler_output`` in 5."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class PickScoreScorer:
    """PickScore as a cogrpo reward. Options: ``path`` (model folder; default the HF cache of
    ``yuvalkirstain/PickScore_v1``), ``processor_path`` (processor folder; default ``path`` when it
    holds the processor files, else the HF cache of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``),
    ``batch_size``."""

    def __init__(
        self,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        path: str | Path | None = None,
        processor_path: str | Path | None = None,
        batch_size: int = 16,
        name: str = "pickscore",
    ) -> None:
        from transformers import CLIPModel, CLIPTokenizer

        from cogrpo_rewards._images import clip_image_processor_class

        image_processor_class = clip_image_processor_class()

        self.name = name
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = int(batch_size)
        if path is not None:
            model_source: str | Path = Path(path).expanduser()
            if not (model_source / "config.json").is_file():
                raise WeightsNotFoundError(
                    f"{name}: no config.json in {model_source}; download {REPO_ID} and pass "
                    f"--reward-opt {name}.path=/path/to/PickScore_v1"
                )
        else:
            model_source = REPO_ID
        if processor_path is None and path is not None and _has_processor(Path(model_source)):
            processor_path = model_source
        processor_folder = resolve_folder(
            name, path=processor_path, repo_id=PROCESSOR_REPO_ID, filenames=PROCESSOR_FILES, option="processor_path"
        )
        try:
            model, info = CLIPModel.from_pretrained(str(model_source), dtype=dtype, output_loading_info=True)
        except OSError as exc:
            raise WeightsNotFoundError(
                f"{name}: {REPO_ID} (config.json + model weights) is not in the Hugging Face cache and the hub is "
                f"unreachable; download it and pass --reward-opt {name}.path=/path/to/PickScore_v1"
            ) from exc
        missing = sorted(info["missing_keys"])
        unexpected = sorted(k for k in info["unexpected_keys"] if not k.endswith("position_ids"))
        mismatched = sorted(m[0] if isinstance(m, tuple) else m for m in info["mismatched_keys"])
        problems = [f"missing {missing[:3]}"] if missing else []
        problems += [f"unexpected {unexpected[:3]}"] if unexpected else []
        problems += [f"mis-shaped {mismatched[:3]}"] if mismatched else []
        if problems:
            raise CheckpointError(
                f"{name}: {model_source} does not match the CLIPModel in its config.json: {'; '.join(problems)}; "
                f"pass the official {REPO_ID} folder with --reward-opt {name}.path=..."
            )
        self.tokenizer = CLIPTokenizer.from_pretrained(str(processor_folder))
        self.image_processor = image_processor_class.from_pretrained(str(processor_folder))
        if len(self.tokenizer) != model.config.text_config.vocab_size:
            raise CheckpointError(
                f"{name}: the tokenizer in {processor_folder} has {len(self.tokenizer)} tokens, the model "
                f"{model.config.text_config.vocab_size}; pass the laion CLIP-ViT-H-14 processor folder"
            )
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.checkpoint = str(model_source)

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
        pixels = self.image_processor(images=to_pil(images), return_tensors="pt")["pixel_values"]  # [B, 3, 224, 224]
        scale = self.model.logit_scale.float().exp()
        scores = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            text = self.tokenizer(
                list(prompts[chunk]), padding=True, truncation=True, max_length=77, return_tensors="pt"
            )
            image_embeds = _features(
                self.model.get_image_features(pixel_values=pixels[chunk].to(self.device, self.dtype))
            )
            text_embeds = _features(
                self.model.get_text_features(
                    input_ids=text["input_ids"].to(self.device), attention_mask=text["attention_mask"].to(self.device)
                )
            )
            cosine = (F.normalize(image_embeds.float(), dim=-1) * F.normalize(text_embeds.float(), dim=-1)).sum(-1)
            scores.append(scale * cosine)  # [b]
        return RewardOutput(scores=torch.cat(scores).cpu(), info={})
