"""The ``toy`` backbone: the Backbone contract, tokenizer, weights files and the shipped weights."""

from __future__ import annotations

import pytest
import torch

from cogrpo.errors import WeightsNotFoundError
from cogrpo.testing import BackboneContract
from cogrpo_toyworld.model import (
    PAD,
    UNK,
    ToyBackbone,
    ToyConfig,
    ToyTextToImage,
    load_weights,
    packaged_weights,
    save_weights,
    tokenize,
)
from cogrpo_toyworld.scenes import PALETTE_RGB

TINY = ToyConfig(dim=32, depth=1, heads=2, text_depth=1)


def tiny_backbone(**kw) -> ToyBackbone:
    return ToyBackbone(random_weights=True, config=TINY, seed=0, **kw)


class TestToyBackboneContract(BackboneContract):
    prompts = ("a red ring", "two blue squares", "")

    def make_backbone(self):
        return tiny_backbone()


@pytest.mark.requires_gpu
class TestToyBackboneContractCuda(BackboneContract):
    prompts = ("a red ring", "two blue squares", "")

    def make_backbone(self):
        return tiny_backbone(device="cuda")


def test_tokenizer() -> None:
    ids = tokenize(["a red ring", "A  RED ring", "a purple circle", ""], TINY)
    vocab = TINY.vocab
    assert ids.shape == (4, TINY.text_len)
    assert [vocab[i] for i in ids[0, :4]] == ["a", "red", "ring", PAD]
    assert torch.equal(ids[0], ids[1])
    assert vocab[int(ids[2, 2])] == UNK  # "circle" is not a word of the grammar
    assert (ids[3] == vocab.index(PAD)).all(), "the null prompt is all padding"


def test_null_prompt_is_the_empty_prompt() -> None:
    bb = tiny_backbone()
    embeds = bb.encode_prompts(["a red ring", "three crosses"])
    empty = bb.encode_prompts([""])
    assert embeds["text"].shape == (2, TINY.text_len, TINY.dim)
    torch.testing.assert_close(embeds["null_text"][0], empty["text"][0])
    torch.testing.assert_close(embeds["null_text"][1], empty["text"][0])


def test_text_encoder_is_frozen_and_model_is_trainable() -> None:
    bb = tiny_backbone()
    assert all(not p.requires_grad for p in bb.text_encoder.parameters())
    assert {id(p) for p in bb.trainable_parameters()} == {id(p) for p in bb.model.parameters()}
    embeds = bb.encode_prompts(["a red ring"])
    assert not embeds["text"].requires_grad


def test_decode_is_the_palette() -> None:
    bb = tiny_backbone()
    tokens = torch.arange(49).remainder(7)[None]  # [1, 49]
    img = bb.decode(tokens)
    assert img.shape == (1, 3, 56, 56)
    for cell, token in [(0, 0), (1, 1), (8, 1)]:  # cell 8 = row 1, column 1
        y, x = divmod(cell, 7)
        torch.testing.assert_close(img[0, :, y * 8 + 3, x * 8 + 5], torch.tensor(PALETTE_RGB[token]))


def test_weights_round_trip(tmp_path) -> None:
    torch.manual_seed(1)
    net = ToyTextToImage(TINY)
    path = tmp_path / "w.safetensors"
    save_weights(net, path, extra={"cfg_scale": 2.5, "num_steps": 6, "pretrain": {"seed": 1}})
    loaded, meta = load_weights(path)
    assert loaded.config == TINY and meta == {"cfg_scale": 2.5, "num_steps": 6, "pretrain": {"seed": 1}}
    for (k, a), (_, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    bb = ToyBackbone(path=path)
    assert bb.cfg_scale == 2.5 and bb.num_steps == 6 and bb.default_schedule().cfg_scale == 2.5
    assert bb.default_schedule().values(6)[0, 3] == 2.5


def test_missing_weights_say_how_to_fix(tmp_path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        ToyBackbone(path=tmp_path / "nope.safetensors")
    message = str(info.value)
    assert "\n" not in message and "cogrpo pretrain --backbone toy" in message and "--backbone-path" in message


def test_foreign_safetensors_is_rejected(tmp_path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(WeightsNotFoundError, match="not a toy backbone weights file"):
        ToyBackbone(path=path)


def test_shipped_weights_load_by_default() -> None:
    path = packaged_weights()
    assert path.is_file() and path.stat().st_size < 8 * 2**20
    bb = ToyBackbone()
    counts = bb.num_parameters()
    assert 0.7e6 < counts["model"] + counts["text_encoder"] < 1.5e6
    assert bb.release["pretrain"]["seed"] == 0 and "cogrpo pretrain --backbone toy" in bb.release["pretrain"]["command"]
    assert bb.token_grid == (7, 7) and bb.codebook_size == 7 and bb.mask_token_id == 7
