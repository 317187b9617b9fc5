"""CLIP score and LAION aesthetic: open_clip's own API as the oracle, the shared CLIP, contracts, errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from cogrpo.errors import CheckpointError, WeightsNotFoundError
from cogrpo.testing import RewardContract
from cogrpo_rewards._images import to_pil
from cogrpo_rewards.aesthetic import AestheticScorer
from cogrpo_rewards.clipscore import CLIPScorer

PROMPTS = ["a photo of a cat", "a red car on a street", "an oil painting of a lighthouse"]


@pytest.fixture(scope="module")
def clip_options(clip_weights, tiny_open_clip_config) -> dict:
    return {"path": str(clip_weights), "arch": str(tiny_open_clip_config)}


@pytest.fixture(scope="module")
def aesthetic_options(aesthetic_head, clip_weights, tiny_open_clip_config) -> dict:
    return {"path": str(aesthetic_head), "clip_path": str(clip_weights), "arch": str(tiny_open_clip_config)}


def _reference_open_clip(tiny_open_clip_config, clip_weights):
    """open_clip's own loader and transforms (a different code path from the reward's)."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(
        tiny_open_clip_config.stem, pretrained=str(clip_weights)
    )
    return model.eval(), preprocess, open_clip.get_tokenizer(tiny_open_clip_config.stem)


def test_clipscore_equals_open_clip(clip_options, tiny_open_clip_config, clip_weights):
    reward = CLIPScorer(**clip_options)
    model, preprocess, tokenizer = _reference_open_clip(tiny_open_clip_config, clip_weights)
    images = torch.rand(3, 3, 120, 90, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        image_features = model.encode_image(torch.stack([preprocess(im) for im in to_pil(images)]), normalize=True)
        text_features = model.encode_text(tokenizer(PROMPTS), normalize=True)
    expected = 100 * (image_features * text_features).sum(-1)
    out = reward(images, PROMPTS)
    torch.testing.assert_close(out.scores, expected, atol=1e-4, rtol=0)
    assert out.info["convention"] == ["100·cos"] * 3
    clamped = CLIPScorer(**clip_options, scale=2.5, clamp=True)(images, PROMPTS)
    torch.testing.assert_close(clamped.scores, (2.5 * expected / 100).clamp(min=0), atol=1e-5, rtol=0)
    assert clamped.info["convention"] == ["max(2.5·cos, 0)"] * 3


def test_aesthetic_equals_reference_head(aesthetic_options, aesthetic_head, tiny_open_clip_config, clip_weights):
    model, preprocess, _ = _reference_open_clip(tiny_open_clip_config, clip_weights)
    if importlib.util.find_spec("ImageReward") is not None:  # the package ships the LAION MLP class
        from .oracles import image_reward_package

        head = image_reward_package().MLP(32)
    else:
        pytest.skip("needs image-reward==1.5 for the reference MLP class")
    head.load_state_dict(torch.load(aesthetic_head, weights_only=True), strict=True)
    head.eval()
    images = torch.rand(3, 3, 70, 70, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        embedding = model.encode_image(torch.stack([preprocess(im) for im in to_pil(images)]))
        expected = head(F.normalize(embedding, dim=-1)).squeeze(-1)
    out = AestheticScorer(**aesthetic_options)(images, PROMPTS)
    torch.testing.assert_close(out.scores, expected, atol=1e-5, rtol=0)
    assert expected.std() > 1e-3


def test_clipscore_and_aesthetic_share_one_clip(clip_options, aesthetic_options):
    from cogrpo_rewards._models import clear_cache

    clear_cache()
    clip = CLIPScorer(**clip_options)
    aesthetic = AestheticScorer(**aesthetic_options)
    assert aesthetic.clip_model is clip.model
    other_dtype = CLIPScorer(**clip_options, dtype=torch.float64)
    assert other_dtype.model is not clip.model and next(other_dtype.model.parameters()).dtype == torch.float64


def test_prompt_matters_for_clipscore_only(clip_options, aesthetic_options):
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)).repeat(2, 1, 1, 1)
    clip = CLIPScorer(**clip_options)(images, ["a cat", "a spaceship"]).scores
    aesthetic = AestheticScorer(**aesthetic_options)(images, ["a cat", "a spaceship"]).scores
    assert clip[0] != clip[1] and aesthetic[0] == aesthetic[1]


class TestCLIPScoreContract(RewardContract):
    @pytest.fixture(autouse=True)
    def _options(self, clip_options):
        self.options = clip_options

    def make_reward(self):
        return CLIPScorer(device="cpu", dtype=torch.float32, **self.options)


class TestAestheticContract(RewardContract):
    @pytest.fixture(autouse=True)
    def _options(self, aesthetic_options):
        self.options = aesthetic_options

    def make_reward(self):
        return AestheticScorer(device="cpu", dtype=torch.float32, **self.options)


def test_loading_errors(tmp_path, monkeypatch, clip_options, aesthetic_options):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(
        WeightsNotFoundError, match=r"timm/vit_large_patch14_clip_224\.openai.*--reward-opt clipscore\.path="
    ):
        CLIPScorer()
    with pytest.raises(
        WeightsNotFoundError, match=r"aesthetic-model\.pth of trl-lib/ddpo-aesthetic-predictor.*aesthetic\.path="
    ):
        AestheticScorer(clip_path=aesthetic_options["clip_path"], arch=aesthetic_options["arch"])
    with pytest.raises(WeightsNotFoundError, match=r"--reward-opt aesthetic\.clip_path="):
        AestheticScorer(path=aesthetic_options["path"], clip_path=str(tmp_path / "missing.bin"))
    torch.save({"layers.0.weight": torch.zeros(1024, 32)}, tmp_path / "head.pth")
    with pytest.raises(
        CheckpointError, match=r"missing keys \(layers\.0\.bias, layers\.2\.bias, layers\.2\.weight \(\+"
    ):
        AestheticScorer(**{**aesthetic_options, "path": str(tmp_path / "head.pth")})
