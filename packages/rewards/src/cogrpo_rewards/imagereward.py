"""ImageReward (Xu et al., 2023; THUDM/ImageReward) on maintained modules, batched.

The model is BLIP: a ViT (timm ``VisionTransformer``, BLIP-L: 1024 wide, 24 blocks, patch 16, 224 px)
whose tokens feed the cross-attention of a BERT-base text encoder (transformers ``BlipTextModel``,
the port of BLIP's ``med.py``); the ``[CLS]`` feature goes through a 5-layer MLP and is normalised
with the package's constants: ``reward = (mlp(feature) − 0.16717…) / 1.03333…``.

Checkpoint: ``ImageReward.pt`` from https://huggingface.co/THUDM/ImageReward (a torch-pickled state
dict, fp32, ≈447M parameters; read with torch's restricted ``weights_only`` unpickler, or pass a
``.safetensors`` conversion). It loads with **strict** key checking: the package's own loader uses
``strict=False`` and would silently keep random weights for a misnamed key; here any missing or
unexpected name is an error (only ``blip.text_encoder.embeddings.position_ids``, a constant
``arange`` buffer that the package saved, is dropped after checking its value). The vision size is
read from the checkpoint (width, depth, patch and image size; 64-dim heads, as in BLIP), the text
encoder from ``med_config`` (default: the official ``med_config.json``).

Preprocessing is the package's: 8-bit image -> bicubic resize of the short side to 224 (PIL) ->
centre crop 224 -> CLIP mean/std; prompts -> ``bert-base-uncased`` tokens (+ BLIP's ``[DEC]`` and
``[ENC]`` specials), padded / truncated to 35. Verified equal to ``image-reward==1.5``'s own
``ImageReward.score`` on the same random weights (``tests/rewards/test_imagereward.py``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cogrpo.errors import CheckpointError, WeightsNotFoundError
from cogrpo.protocols import RewardOutput
from cogrpo.reward_utils import validate_reward_inputs
from cogrpo_rewards._images import to_pil
from cogrpo_rewards._models import build_from_state_dict
from cogrpo_rewards._weights import load_state_dict_file, resolve_file, resolve_folder

REPO_ID = "THUDM/ImageReward"
CHECKPOINT_FILES = ("ImageReward.pt", "ImageReward.safetensors")
TOKENIZER_REPO_ID = "bert-base-uncased"
PROMPT_LENGTH = 35
SCORE_MEAN = 0.16717362830052426
SCORE_STD = 1.0333394966054072
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: THUDM/ImageReward ``med_config.json`` (BLIP's BERT-base text encoder with cross-attention).
MED_CONFIG: dict[str, Any] = {
    "hidden_act": "gelu",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "vocab_size": 30524,
}
_CONSTANT_BUFFERS = ("blip.text_encoder.embeddings.position_ids",)


class ScoreMLP(nn.Module):
    """The ImageReward head: 768 -> 1024 -> 128 -> 64 -> 16 -> 1, no activations (dropouts keep the indices)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(width, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, width] -> [B, 1]
        return self.layers(x)


class _Blip(nn.Module):
    """BLIP's modules under the checkpoint's names (``vision_proj`` / ``text_proj`` are stored, unused)."""

    def __init__(self, vision: dict[str, int], med_config: dict[str, Any]) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer
        from transformers import BlipTextConfig, BlipTextModel

        width = vision["width"]
        self.visual_encoder = VisionTransformer(
            img_size=vision["image_size"],
            patch_size=vision["patch_size"],
            embed_dim=width,
            depth=vision["depth"],
            num_heads=max(1, width // 64),
            mlp_ratio=vision["mlp_hidden"] / width,
            qkv_bias=True,
            num_classes=0,
            global_pool="",
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
        )
        text_config = BlipTextConfig(
            vocab_size=med_config["vocab_size"],
            hidden_size=med_config["hidden_size"],
            encoder_hidden_size=width,
            intermediate_size=med_config["intermediate_size"],
            num_hidden_layers=med_config["num_hidden_layers"],
            num_attention_heads=med_config["num_attention_heads"],
            max_position_embeddings=med_config["max_position_embeddings"],
            hidden_act=med_config.get("hidden_act", "gelu"),
            layer_norm_eps=med_config.get("layer_norm_eps", 1e-12),
            pad_token_id=med_config.get("pad_token_id", 0),
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            is_decoder=True,  # builds the cross-attention layers; forward runs bidirectionally
        )
        self.text_encoder = BlipTextModel(text_config, add_pooling_layer=False)
        self.vision_proj = nn.Linear(width, 256)
        self.text_proj = nn.Linear(med_config["hidden_size"], 256)


class ImageRewardModel(nn.Module):
    """BLIP + score MLP under the official checkpoint's parameter names."""

    def __init__(self, vision: dict[str, int], med_config: dict[str, Any]) -> None:
        super().__init__()
        self.blip = _Blip(vision, med_config)
        self.mlp = ScoreMLP(med_config["hidden_size"])
        self.image_size = vision["image_size"]

    @staticmethod
    def vision_config(state_dict: dict[str, torch.Tensor]) -> dict[str, int]:
        """Read the ViT size from checkpoint shapes (BLIP-L: width 1024, depth 24, patch 16, 224 px)."""
        prefix = "blip.visual_encoder."
        try:
            width = state_dict[prefix + "cls_token"].shape[-1]
            patch = state_dict[prefix + "patch_embed.proj.weight"].shape[-1]
            tokens = state_dict[prefix + "pos_embed"].shape[1]
            mlp_hidden = state_dict[prefix + "blocks.0.mlp.fc1.weight"].shape[0]
        except KeyError as exc:
            raise CheckpointError(f"imagereward: the checkpoint has no {exc.args[0]}; is it ImageReward.pt?") from exc
        depth = len({k.split(".")[3] for k in state_dict if k.startswith(prefix + "blocks.")})
        grid = math.isqrt(tokens - 1)
        return {
            "width": width,
            "patch_size": patch,
            "image_size": grid * patch,
            "depth": depth,
            "mlp_hidden": mlp_hidden,
        }

    def forward(
        self,
        pixels: torch.Tensor,  # [B, 3, S, S] normalised
        input_ids: torch.Tensor,  # [B, L]
        attention_mask: torch.Tensor,  # [B, L]
    ) -> torch.Tensor:  # [B] normalised reward
        image_embeds = self.blip.visual_encoder.forward_features(pixels)  # [B, 1 + (S/p)^2, width]
        text = self.blip.text_encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=image_embeds,
            is_decoder=False,
        )
        features = text.last_hidden_state[:, 0, :].float()  # [B, 768] the [CLS] token
        return ((self.mlp(features) - SCORE_MEAN) / SCORE_STD).squeeze(-1)


def load_med_config(med_config: str | Path | dict | None) -> dict[str, Any]:
    """The text-encoder config: the official one by default, a JSON file or a dict."""
    if med_config is None:
        return dict(MED_CONFIG)
    if isinstance(med_config, dict):
        return {**MED_CONFIG, **med_config}
    p = Path(med_config).expanduser()
    if not p.is_file():
        raise WeightsNotFoundError(
            f"imagereward: no med_config at {p}; fetch med_config.json from https://huggingface.co/{REPO_ID} "
            "and pass --reward-opt imagereward.med_config=/path/to/med_config.json"
        )
    return {**MED_CONFIG, **json.loads(p.read_text())}


def load_tokenizer(tokenizer_path: str | Path | None, reward: str = "imagereward"):
    """BLIP's tokenizer: ``bert-base-uncased`` plus the ``[DEC]`` bos and ``[ENC]`` special tokens."""
    from transformers import BertTokenizer

    folder = resolve_folder(
        reward, path=tokenizer_path, repo_id=TOKENIZER_REPO_ID, filenames=("vocab.txt",), option="tokenizer_path"
    )
    tokenizer = BertTokenizer.from_pretrained(str(folder))
    if len(tokenizer) < 30522:
        raise CheckpointError(
            f"{reward}: {folder / 'vocab.txt'} has {len(tokenizer)} tokens; bert-base-uncased has 30522"
        )
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def build_model(
    state_dict: dict[str, torch.Tensor], med_config: dict[str, Any], source: str | Path
) -> ImageRewardModel:
    """Build the architecture the checkpoint describes (no random init) and load it strictly."""
    state_dict = dict(state_dict)
    for key in _CONSTANT_BUFFERS:
        value = state_dict.pop(key, None)
        if value is not None and not torch.equal(value.flatten(), torch.arange(value.numel(), dtype=value.dtype)):
            raise CheckpointError(f"imagereward: {source} has a non-standard {key}; pass the official ImageReward.pt")
    vision = ImageRewardModel.vision_config(state_dict)
    model = build_from_state_dict(
        lambda: ImageRewardModel(vision, med_config), state_dict, reward="imagereward", source=source
    )
    return model


class ImageRewardScorer:
    """ImageReward as a cogrpo reward: batched, explicit device/dtype, strict checkpoint loading.

    Options: ``path`` (``ImageReward.pt`` or a folder holding it; default: the HF cache of
    ``THUDM/ImageReward``), ``med_config`` (JSON file; default: the official config),
    ``tokenizer_path`` (folder with ``vocab.txt``; default: ``bert-base-uncased`` from the HF cache),
    ``batch_size`` (images per forward). Scores: the package's normalised reward (higher is better,
    roughly zero-mean / unit-std on the ImageReward test set).
    """

    def __init__(
        self,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        path: str | Path | None = None,
        med_config: str | Path | dict | None = None,
        tokenizer_path: str | Path | None = None,
        batch_size: int = 16,
        name: str = "imagereward",
    ) -> None:
        self.name = name
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = int(batch_size)
        file = resolve_file(name, path=path, repo_id=REPO_ID, filenames=CHECKPOINT_FILES)
        config = load_med_config(med_config)
        self.tokenizer = load_tokenizer(tokenizer_path, name)
        self.model = build_model(load_state_dict_file(file), config, file)
        self.model.blip.to(self.device, self.dtype)
        self.model.mlp.to(self.device, torch.float32)  # the package runs the head on .float() features
        self.checkpoint = str(file)

        from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

        size = self.model.image_size
        self.preprocess = Compose(
            [
                Resize(size, interpolation=InterpolationMode.BICUBIC),
                CenterCrop(size),
                ToTensor(),
                Normalize(CLIP_MEAN, CLIP_STD),
            ]
        )

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
        text = self.tokenizer(
            list(prompts), padding="max_length", truncation=True, max_length=PROMPT_LENGTH, return_tensors="pt"
        )
        scores = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            scores.append(
                self.model(
                    pixels[chunk].to(self.device, self.dtype),
                    text["input_ids"][chunk].to(self.device),
                    text["attention_mask"][chunk].to(self.device),
                )
            )
        return RewardOutput(scores=torch.cat(scores).float().cpu(), info={})
