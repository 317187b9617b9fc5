"""PickScore: the README's recipe on a tiny CLIPModel as the oracle, tokenizer files, contract, errors."""

from __future__ import annotations

import pytest
import torch

from cogrpo.errors import CheckpointError, WeightsNotFoundError
from cogrpo.testing import RewardContract
from cogrpo_rewards._images import to_pil
from cogrpo_rewards.pickscore import PickScoreScorer

PROMPTS = ["a photo of a cat", "a red car on a street in the rain", "an oil painting of a lighthouse"]


def test_tokenizer_files_match_open_clip(clip_processor_dir):
    import open_clip
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(clip_processor_dir))
    assert len(tokenizer) == 49408
    text = ["a Photo of 2 cats, and a dog!", "x"]
    ours = tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt")["input_ids"]
    reference = open_clip.get_tokenizer("ViT-H-14")(text)
    eos = 49407  # open_clip pads with 0 after EOS, the laion tokenizer with its pad token: compare up to EOS
    for a, b in zip(ours, reference, strict=True):
        n = int((b == eos).nonzero()[0]) + 1
        assert a[:n].tolist() == b[:n].tolist()


def test_equals_readme_recipe(pickscore_dir):
    from transformers import CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    reward = PickScoreScorer(path=str(pickscore_dir))
    model = CLIPModel.from_pretrained(str(pickscore_dir)).eval()
    image_processor = CLIPImageProcessorPil.from_pretrained(str(pickscore_dir))
    tokenizer = CLIPTokenizer.from_pretrained(str(pickscore_dir))
    images = torch.rand(3, 3, 100, 180, generator=torch.Generator().manual_seed(0))
    expected = []
    with torch.no_grad():
        # one image and one prompt at a time, as the README does
        for image, prompt in zip(to_pil(images), PROMPTS, strict=True):
            image_inputs = image_processor(images=[image], return_tensors="pt")
            text_inputs = tokenizer([prompt], padding=True, truncation=True, max_length=77, return_tensors="pt")
            image_embs = model.get_image_features(**image_inputs).pooler_output
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = model.get_text_features(**text_inputs).pooler_output
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            expected.append(model.logit_scale.exp() * (text_embs @ image_embs.T)[0, 0])
    expected = torch.stack(expected)
    torch.testing.assert_close(reward(images, PROMPTS).scores, expected, atol=1e-4, rtol=0)
    assert expected.std() > 1e-3


class TestPickScoreContract(RewardContract):
    @pytest.fixture(autouse=True)
    def _options(self, pickscore_dir):
        self.path = str(pickscore_dir)

    def make_reward(self):
        return PickScoreScorer(device="cpu", dtype=torch.float32, path=self.path)


def test_loading_errors(tmp_path, monkeypatch, pickscore_dir, clip_processor_dir):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(
        WeightsNotFoundError, match=r"preprocessor_config\.json of laion/CLIP-ViT-H-14.*processor_path="
    ):
        PickScoreScorer()
    with pytest.raises(WeightsNotFoundError, match=r"yuvalkirstain/PickScore_v1.*--reward-opt pickscore\.path="):
        PickScoreScorer(processor_path=str(clip_processor_dir))
    with pytest.raises(WeightsNotFoundError, match=r"no config\.json in .*pickscore\.path="):
        PickScoreScorer(path=str(tmp_path / "nowhere"))
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in pickscore_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    state = load_file(pickscore_dir / "model.safetensors")
    del state["visual_projection.weight"]
    save_file(state, broken / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing \['visual_projection\.weight'\]"):
        PickScoreScorer(path=str(broken))
