"""Reference scorers for parity tests: the released packages themselves, made importable here.

* ``image-reward==1.5`` (installed ``--no-deps``) fails on transformers 5: :func:`image_reward_package`
  adds the few helpers its ``med.py`` imports from their old places, skips the package
  ``__init__`` files (they pull in ``clip``, ``datasets`` and a diffusers training script that
  scoring never uses), restores the warning filters its ``blip.py`` silences process-wide, and
  builds the tokenizer from a local ``vocab.txt`` instead of the hub. The model code, its
  preprocessing and ``ImageReward.score`` run unchanged.
* ``hpsv2x==1.2.0`` (installed ``--no-deps``): :func:`hps_package_score` runs its own
  ``img_score.score`` with a model built by its bundled open_clip (any architecture, no download).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings
from pathlib import Path

import torch


def _bare_package(name: str) -> None:
    """Register package ``name`` without running its ``__init__`` (submodules import normally)."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    module = types.ModuleType(name)
    module.__spec__ = spec
    module.__path__ = list(spec.submodule_search_locations)
    sys.modules[name] = module


def _find_pruneable_heads_and_indices(heads, n_heads, head_size, already_pruned_heads):
    mask = torch.ones(n_heads, head_size)
    heads = set(heads) - already_pruned_heads
    for head in heads:
        mask[head - sum(1 if h < head else 0 for h in already_pruned_heads)] = 0
    mask = mask.view(-1).contiguous().eq(1)
    return heads, torch.arange(len(mask))[mask].long()


def image_reward_package():
    """Import ``image-reward==1.5``'s model modules on transformers 5; returns ``ImageReward.ImageReward``."""
    import transformers.modeling_utils as modeling_utils
    from transformers import pytorch_utils

    for name in ("apply_chunking_to_forward", "prune_linear_layer"):
        if not hasattr(modeling_utils, name):
            setattr(modeling_utils, name, getattr(pytorch_utils, name))
    if not hasattr(modeling_utils, "find_pruneable_heads_and_indices"):
        modeling_utils.find_pruneable_heads_and_indices = _find_pruneable_heads_and_indices

    _bare_package("ImageReward")
    _bare_package("ImageReward.models")
    saved_filters = warnings.filters[:]
    try:
        warnings.simplefilter("ignore", FutureWarning)  # timm.models.layers is deprecated
        med = importlib.import_module("ImageReward.models.BLIP.med")
        module = importlib.import_module("ImageReward.ImageReward")
    finally:
        warnings.filters[:] = saved_filters  # blip.py ignores every warning process-wide

    def get_head_mask(self, head_mask, num_hidden_layers):  # removed from PreTrainedModel in v5
        return [None] * num_hidden_layers if head_mask is None else head_mask

    def invert_attention_mask(self, mask):  # removed from PreTrainedModel in v5
        mask = mask[:, None, None, :] if mask.dim() == 2 else mask[:, None, :, :]
        mask = mask.to(self.dtype)
        return (1.0 - mask) * torch.finfo(self.dtype).min

    original_init_weights = med.BertPreTrainedModel.init_weights

    def init_weights(self):  # med.py calls init_weights(); v5 needs post_init(), which calls init_weights()
        if getattr(self, "_in_post_init", False):
            return original_init_weights(self)
        self._in_post_init = True
        try:
            self.post_init()
        finally:
            del self._in_post_init

    med.BertPreTrainedModel.init_weights = init_weights
    med.BertModel.get_head_mask = get_head_mask
    med.BertModel.invert_attention_mask = invert_attention_mask
    return module


def build_image_reward_package_model(med_config: Path, vocab_dir: Path, vision: dict | None = None):
    """The package's ``ImageReward`` model (random weights) with a local tokenizer and, for fast tests,
    a smaller ViT of the package's own ``VisionTransformer`` class (``vision``: width, depth, patch_size)."""
    module = image_reward_package()
    blip = importlib.import_module("ImageReward.models.BLIP.blip")
    blip_pretrain = importlib.import_module("ImageReward.models.BLIP.blip_pretrain")
    vit = importlib.import_module("ImageReward.models.BLIP.vit")
    from transformers import BertTokenizer

    class V4StyleBertTokenizer(BertTokenizer):
        @property
        def additional_special_tokens_ids(self):  # renamed extra_special_tokens in v5
            return self.convert_tokens_to_ids(list(self.extra_special_tokens))

    class LocalBertTokenizer:
        @staticmethod
        def from_pretrained(name, *args, **kwargs):
            assert name == "bert-base-uncased", name
            return V4StyleBertTokenizer.from_pretrained(str(vocab_dir))

    original_tokenizer_class, original_create_vit = blip.BertTokenizer, blip_pretrain.create_vit

    def small_vit(vit_name, image_size, *args, **kwargs):
        width = vision["width"]
        encoder = vit.VisionTransformer(
            img_size=image_size,
            patch_size=vision["patch_size"],
            embed_dim=width,
            depth=vision["depth"],
            num_heads=max(1, width // 64),
        )
        return encoder, width

    blip.BertTokenizer = LocalBertTokenizer
    if vision is not None:
        blip_pretrain.create_vit = small_vit
    try:
        model = module.ImageReward(med_config=str(med_config), device="cpu")
    finally:
        blip.BertTokenizer, blip_pretrain.create_vit = original_tokenizer_class, original_create_vit
    return model.eval()


# --------------------------------------------------------------------------------------------------
# HPSv2 (hpsv2x)
# --------------------------------------------------------------------------------------------------


def hps_package():
    """``hpsv2.img_score`` and ``hpsv2.src.open_clip`` from ``hpsv2x==1.2.0``."""
    saved_filters = warnings.filters[:]
    try:
        warnings.simplefilter("ignore", FutureWarning)
        img_score = importlib.import_module("hpsv2.img_score")
        hps_open_clip = importlib.import_module("hpsv2.src.open_clip")
    finally:
        warnings.filters[:] = saved_filters
    return img_score, hps_open_clip


def hps_package_score(arch: str, checkpoint: Path, images, prompt: str, version: str = "v2.1") -> list[float]:
    """``hpsv2.img_score.score`` (the package's scoring function) with a model of ``arch`` built by
    the package's own open_clip; ``images``: PIL images scored against one prompt."""
    img_score, hps_open_clip = hps_package()
    model, _, preprocess_val = hps_open_clip.create_model_and_transforms(
        arch,
        None,
        precision="amp",
        device="cpu",
        jit=False,
        force_quick_gelu=False,
        force_custom_text=False,
        force_patch_dropout=False,
        force_image_size=None,
        pretrained_image=False,
        image_mean=None,
        image_std=None,
        light_augmentation=True,
        aug_cfg={},
        output_dict=True,
        with_score_predictor=False,
        with_region_predictor=False,
    )
    img_score.model_dict.clear()
    img_score.model_dict.update(model=model, preprocess_val=preprocess_val)
    img_score.device = "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [float(s) for s in img_score.score(list(images), prompt, cp=str(checkpoint), hps_version=version)]
