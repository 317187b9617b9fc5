"""Registration, lazy imports, and the fixtures other test areas use (imagereward + hps on a tiny backbone)."""

from __future__ import annotations

import subprocess
import sys

import torch

import cogrpo_rewards.plugin
from cogrpo.plugins import collect, create, get_plugin_manager

from .conftest import reward_opt_flags

NAMES = {"imagereward", "hpsv2", "hps", "clipscore", "pickscore", "aesthetic", "jpeg", "mps"}


def _pm():
    return get_plugin_manager(plugins=[cogrpo_rewards.plugin], autoload=False)


def test_all_rewards_are_registered_with_descriptions():
    entries = collect(_pm(), "reward")
    assert NAMES <= set(entries)
    assert all(entries[name].description for name in NAMES)


def test_plugin_import_is_light():
    code = (
        "import sys, cogrpo_rewards.plugin; "
        "heavy = [m for m in ('transformers', 'open_clip', 'timm', 'torchvision', 'PIL') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_factories_take_dtype_names_and_devices():
    reward = create(_pm(), "reward", "jpeg", device="cpu", dtype="bfloat16", path=None, mode="incompressibility")
    assert (
        reward.dtype == torch.bfloat16 and reward.device == torch.device("cpu") and reward.mode == "incompressibility"
    )


def test_imagereward_and_hps_score_a_tiny_backbone(tmp_path, bert_vocab_dir):
    """What `cogrpo train --reward imagereward,hps` does per iteration, through the factories, with the
    checkpoints other test areas write with ``cogrpo_rewards.testing.write_tiny_reward_checkpoints``."""
    from cogrpo.testing import TinyBackbone
    from cogrpo_rewards.testing import write_tiny_reward_checkpoints

    tiny_reward_options = write_tiny_reward_checkpoints(tmp_path)

    backbone = TinyBackbone(grid=(4, 4), pixel_scale=16)
    tokens = torch.randint(0, backbone.codebook_size, (4, 16), generator=torch.Generator().manual_seed(0))
    images = backbone.decode(tokens)  # [4, 3, 64, 64]
    prompts = ["a red circle", "two blue squares", "a red circle", "two blue squares"]
    pm = _pm()
    scores = {}
    for name, options in tiny_reward_options.items():
        reward = create(pm, "reward", name, device="cpu", dtype=None, **options)
        assert reward.name == name
        scores[name] = reward(images, prompts).scores
        assert scores[name].shape == (4,) and torch.isfinite(scores[name]).all()
    assert not torch.allclose(scores["imagereward"], scores["hps"])
    flags = reward_opt_flags(tiny_reward_options)
    assert flags[:2] == ["--reward-opt", f"imagereward.path={tiny_reward_options['imagereward']['path']}"]
    assert len(flags) == 2 * (len(tiny_reward_options["imagereward"]) + len(tiny_reward_options["hps"]))
