"""HPSv2: parity with hpsv2x==1.2.0's own score(), versions, contract, loading errors."""

from __future__ import annotations

import importlib.util
import os

import psutil
import pytest
import torch

from cogrpo.errors import CheckpointError, ConfigError, WeightsNotFoundError
from cogrpo.testing import RewardContract
from cogrpo_rewards._images import to_pil
from cogrpo_rewards.hpsv2 import HPSv2Scorer, resize_longest_and_pad

needs_hpsv2x = pytest.mark.skipif(
    importlib.util.find_spec("hpsv2") is None, reason="needs hpsv2x==1.2.0 (requirements/cpu-nodeps.txt)"
)


@pytest.fixture(scope="module")
def reward(hps_options) -> HPSv2Scorer:
    return HPSv2Scorer(device="cpu", dtype=torch.float32, **hps_options)


def _hps_package_arch(tiny_open_clip_config) -> str:
    from .oracles import hps_package

    _, hps_open_clip = hps_package()
    hps_open_clip.add_model_config(tiny_open_clip_config)
    return tiny_open_clip_config.stem


@needs_hpsv2x
@pytest.mark.parametrize("version", ["v2.0", "v2.1"])
def test_parity_with_hpsv2x_score(version, hps_dir, hps_options, tiny_open_clip_config):
    from .oracles import hps_package_score

    reward = HPSv2Scorer(**{**hps_options, "version": version, "path": str(hps_dir)})  # a folder: version picks
    g = torch.Generator().manual_seed(0)
    prompt = "a watercolor painting of a fox in the snow"
    for shape in [(3, 3, 150, 96), (2, 3, 300, 300), (2, 3, 224, 224)]:  # portrait (pad), square, no resize
        images = torch.rand(*shape, generator=g)
        ours = reward(images, [prompt] * shape[0])
        theirs = hps_package_score(
            _hps_package_arch(tiny_open_clip_config), reward.checkpoint, to_pil(images), prompt, version
        )
        torch.testing.assert_close(ours.scores, torch.tensor(theirs), atol=1e-4, rtol=0)
        assert ours.info["version"] == [version] * shape[0]
    assert reward.version == version and reward.checkpoint.endswith(
        "HPS_v2_compressed.pt" if version == "v2.0" else "HPS_v2.1_compressed.pt"
    )


@needs_hpsv2x
def test_preprocessing_equals_hps_transform():
    from .oracles import hps_package

    _, hps_open_clip = hps_package()
    from hpsv2.src.open_clip.transform import image_transform

    transform = image_transform(224, is_train=False, resize_longest_max=True)
    g = torch.Generator().manual_seed(1)
    images = (torch.rand(2, 3, 97, 301, generator=g) * 255).round() / 255  # exactly 8-bit values
    theirs = torch.stack([transform(im) for im in to_pil(images)])
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    ours = (resize_longest_and_pad(images, 224) - mean) / std
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_versions_are_different_models(hps_options):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    v20 = HPSv2Scorer(**{**hps_options, "version": "v2.0"})
    v21 = HPSv2Scorer(**{**hps_options, "version": "v2.1", "path": str(hps_options["path"]).replace("v2_", "v2.1_")})
    assert not torch.allclose(v20(images, ["a", "b"]).scores, v21(images, ["a", "b"]).scores)
    with pytest.raises(ConfigError, match="version"):
        HPSv2Scorer(**{**hps_options, "version": "v3"})


def test_scale_and_cache(hps_options, reward):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    scaled = HPSv2Scorer(**hps_options, scale=100.0)
    assert scaled.model is reward.model, "the same checkpoint on the same device/dtype loads once"
    torch.testing.assert_close(scaled(images, ["x", "y"]).scores, 100 * reward(images, ["x", "y"]).scores)
    assert (reward(images, ["x", "y"]).scores.abs() <= 1).all(), "a cosine"


def test_alias_records_its_name(hps_options):
    import cogrpo_rewards.plugin
    from cogrpo.plugins import create, get_plugin_manager

    pm = get_plugin_manager(plugins=[cogrpo_rewards.plugin], autoload=False)
    alias = create(pm, "reward", "hps", device="cpu", dtype=None, **hps_options)
    assert alias.name == "hps" and alias.version == "v2.0" and alias.dtype == torch.float32


class TestHPSv2Contract(RewardContract):
    @pytest.fixture(autouse=True)
    def _options(self, hps_options):
        self.options = hps_options

    def make_reward(self):
        return HPSv2Scorer(device="cpu", dtype=torch.float32, **self.options)


def test_missing_and_offline(tmp_path, monkeypatch, hps_options):
    with pytest.raises(WeightsNotFoundError, match=r"HPS_v2\.1_compressed\.pt.*--reward-opt hpsv2\.path="):
        HPSv2Scorer(**{**hps_options, "version": "v2.1", "path": str(tmp_path)})
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    options = {k: v for k, v in hps_options.items() if k != "path"}
    with pytest.raises(WeightsNotFoundError, match=r"HPS_v2_compressed\.pt of xswu/HPSv2 .*--reward-opt hpsv2\.path="):
        HPSv2Scorer(**options)


def test_wrong_keys(tmp_path, hps_options):
    state = torch.load(hps_options["path"], weights_only=True)["state_dict"]
    state = {("module." + k): v for k, v in state.items()}  # a DDP-wrapped save
    torch.save({"state_dict": state}, tmp_path / "HPS_v2_compressed.pt")
    with pytest.raises(CheckpointError, match=r"missing keys .*unexpected keys \(module\."):
        HPSv2Scorer(**{**hps_options, "path": str(tmp_path / "HPS_v2_compressed.pt")})


@pytest.mark.slow
@needs_hpsv2x
def test_parity_vit_h_14(tmp_path):
    """The real architecture (986M parameters, ~9.5 GB while both models are alive)."""
    if psutil.virtual_memory().available < 14 * 2**30:
        pytest.skip("needs ~14 GB of free memory")
    from cogrpo_rewards._models import clear_cache

    from .oracles import hps_package, hps_package_score

    _, hps_open_clip = hps_package()
    torch.manual_seed(0)
    model = hps_open_clip.create_model("ViT-H-14", None, output_dict=True)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "HPS_v2_compressed.pt")
    del model
    reward = HPSv2Scorer(path=str(tmp_path / "HPS_v2_compressed.pt"), version="v2.0")
    images = torch.rand(2, 3, 256, 192, generator=torch.Generator().manual_seed(0))
    ours = reward(images, ["a cat on a sofa"] * 2).scores
    theirs = hps_package_score("ViT-H-14", tmp_path / "HPS_v2_compressed.pt", to_pil(images), "a cat on a sofa", "v2.0")
    del reward
    clear_cache()
    os.remove(tmp_path / "HPS_v2_compressed.pt")
    torch.testing.assert_close(ours, torch.tensor(theirs), atol=1e-4, rtol=0)
