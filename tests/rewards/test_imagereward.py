"""ImageReward: parity with image-reward==1.5's own ImageReward.score, contract, strict loading."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from cogrpo.errors import CheckpointError, WeightsNotFoundError
from cogrpo.testing import RewardContract
from cogrpo_rewards._images import to_pil
from cogrpo_rewards.imagereward import ImageRewardScorer

from .conftest import TINY_MED_CONFIG, TINY_VISION, make_imagereward_state_dict

PROMPTS = [
    "a photo of a cat",
    "An oil painting of a lighthouse at dusk, dramatic light, highly detailed, trending on artstation, "
    "by a famous painter, with many more words than the thirty-five token limit of the prompt encoder",
    "two dogs",
    "",
]


@pytest.fixture(scope="module")
def reward(imagereward_options) -> ImageRewardScorer:
    return ImageRewardScorer(device="cpu", dtype=torch.float32, **imagereward_options)


@pytest.fixture(scope="module")
def package_model(imagereward_dir, bert_vocab_dir):
    """The package's own model (its classes, preprocessing and score()) with the same weights, loaded strictly."""
    if importlib.util.find_spec("ImageReward") is None:
        pytest.skip("needs image-reward==1.5 (requirements/cpu-nodeps.txt)")
    from .oracles import build_image_reward_package_model

    model = build_image_reward_package_model(imagereward_dir / "med_config.json", bert_vocab_dir, TINY_VISION)
    state = torch.load(imagereward_dir / "ImageReward.pt", weights_only=True)
    assert "blip.text_encoder.embeddings.position_ids" in model.state_dict(), "the package saves position_ids"
    model.load_state_dict(state, strict=True)  # same key set as ours, both ways
    return model.eval()


def test_parity_with_image_reward_package(reward, package_model):
    g = torch.Generator().manual_seed(0)
    batches = [
        torch.rand(2, 3, 180, 260, generator=g),  # landscape: short-side resize + centre crop
        torch.rand(2, 3, 300, 200, generator=g),  # portrait
    ]
    ours = torch.cat([reward(images, PROMPTS[2 * i : 2 * i + 2]).scores for i, images in enumerate(batches)])
    pil_images = [im for images in batches for im in to_pil(images)]
    with torch.no_grad():
        theirs = torch.tensor([package_model.score(p, im) for p, im in zip(PROMPTS, pil_images, strict=True)])
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert theirs.std() > 1e-2, "the random weights must give clearly different scores"


def test_prompt_is_truncated_to_35_tokens(reward):
    ids = reward.tokenizer([PROMPTS[1]], padding="max_length", truncation=True, max_length=35)["input_ids"][0]
    assert len(ids) == 35 and ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    extra = PROMPTS[1] + " and an extra tail that is cut off anyway"
    assert reward(image, [PROMPTS[1]]).scores.item() == reward(image, [extra]).scores.item()


def test_blip_special_tokens(reward):
    assert reward.tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [30522, 30523]
    assert len(reward.tokenizer) == TINY_MED_CONFIG["vocab_size"]


def test_model_is_built_from_checkpoint_shapes(reward):
    vit = reward.model.blip.visual_encoder
    assert vit.embed_dim == TINY_VISION["width"] and len(vit.blocks) == TINY_VISION["depth"]
    assert vit.patch_embed.patch_size == (32, 32) and reward.model.image_size == 224
    assert not any(p.requires_grad for p in reward.model.parameters())


class TestImageRewardContract(RewardContract):
    @pytest.fixture(autouse=True)
    def _options(self, imagereward_options):
        self.options = imagereward_options

    def make_reward(self):
        return ImageRewardScorer(device="cpu", dtype=torch.float32, **self.options)


# -- loading errors -------------------------------------------------------------------------------


def test_missing_file_names_file_and_flag(tmp_path, imagereward_options):
    options = {**imagereward_options, "path": str(tmp_path / "nope" / "ImageReward.pt")}
    with pytest.raises(WeightsNotFoundError) as err:
        ImageRewardScorer(**options)
    message = str(err.value)
    assert "\n" not in message
    assert "ImageReward.pt" in message and "THUDM/ImageReward" in message
    assert "--reward-opt imagereward.path=" in message


def test_offline_with_empty_cache(tmp_path, monkeypatch, imagereward_options):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    options = {k: v for k, v in imagereward_options.items() if k != "path"}
    with pytest.raises(
        WeightsNotFoundError, match=r"ImageReward\.pt of THUDM/ImageReward .*--reward-opt imagereward\.path="
    ):
        ImageRewardScorer(**options)
    # the tokenizer is looked up on the hub too when no tokenizer_path is given
    no_tokenizer = {k: v for k, v in imagereward_options.items() if k != "tokenizer_path"}
    with pytest.raises(WeightsNotFoundError, match=r"bert-base-uncased.*--reward-opt imagereward\.tokenizer_path="):
        ImageRewardScorer(**no_tokenizer)


def test_wrong_keys_are_listed(tmp_path, imagereward_options):
    state = make_imagereward_state_dict(0)
    state["blip.text_encoder.pooler.dense.weight"] = torch.zeros(768, 768)  # unexpected
    del state["mlp.layers.7.bias"]  # missing
    torch.save(state, tmp_path / "ImageReward.pt")
    with pytest.raises(CheckpointError) as err:
        ImageRewardScorer(**{**imagereward_options, "path": str(tmp_path / "ImageReward.pt")})
    message = str(err.value)
    assert "1 missing keys (mlp.layers.7.bias)" in message
    assert "1 unexpected keys (blip.text_encoder.pooler.dense.weight)" in message
    assert "\n" not in message


def test_wrong_shapes_and_wrong_config(tmp_path, imagereward_options):
    (tmp_path / "med.json").write_text(json.dumps({**TINY_MED_CONFIG, "intermediate_size": 128}))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        ImageRewardScorer(**{**imagereward_options, "med_config": str(tmp_path / "med.json")})


def test_not_a_state_dict(tmp_path, imagereward_options):
    (tmp_path / "ImageReward.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        ImageRewardScorer(**{**imagereward_options, "path": str(tmp_path / "ImageReward.pt")})


def test_folder_path_and_safetensors(tmp_path, imagereward_options, reward):
    from safetensors.torch import save_file

    state = make_imagereward_state_dict(0)
    save_file(state, tmp_path / "ImageReward.safetensors")
    other = ImageRewardScorer(**{**imagereward_options, "path": str(tmp_path)})
    image = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(other(image, PROMPTS[:2]).scores, reward(image, PROMPTS[:2]).scores)
