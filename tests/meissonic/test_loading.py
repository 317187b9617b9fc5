"""Loading from a local directory or the hub cache, and the one-line errors when weights are absent.

Everything runs with ``HF_HUB_OFFLINE=1`` (see conftest) and an empty cache directory, so no test
touches the network.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from cogrpo.errors import WeightsNotFoundError
from cogrpo_meissonic import plugin
from cogrpo_meissonic.testing import tiny_amused_components, tiny_meissonic_backbone


@pytest.fixture(scope="module")
def meissonic_dir(tmp_path_factory):
    """A tiny checkpoint in the released repo's layout."""
    bb = tiny_meissonic_backbone(grid=8)
    root = tmp_path_factory.mktemp("meissonic")
    bb.model.save_pretrained(root / "transformer")
    bb.vqvae.save_pretrained(root / "vqvae")
    bb.text.text_encoder.save_pretrained(root / "text_encoder")
    bb.text.tokenizer.save_pretrained(root / "tokenizer")
    return root, bb


@pytest.fixture(scope="module")
def amused_dir(tmp_path_factory):
    parts = tiny_amused_components(grid=4)
    root = tmp_path_factory.mktemp("amused")
    for name, part in parts.items():
        part.save_pretrained(root / name)
    return root, parts


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_meissonic_loads_from_a_local_directory(meissonic_dir) -> None:
    root, reference = meissonic_dir
    bb = plugin.meissonic(path=str(root), resolution=16)
    prompt = bb.encode_prompts(["a red circle"])
    tokens = torch.full((1, 64), bb.mask_token_id)
    with torch.no_grad():
        got = bb.forward(tokens, prompt, 0, 4, True)
        want = reference.forward(tokens, reference.encode_prompts(["a red circle"]), 0, 4, True)
    assert torch.equal(got.cond_logits, want.cond_logits) and torch.equal(got.features, want.features)
    assert bb.mask_token_id == reference.mask_token_id


def test_amused_loads_from_a_local_directory(amused_dir) -> None:
    root, parts = amused_dir
    bb = plugin.amused(path=str(root), lora_rank="2", gradient_checkpointing="true")
    assert bb.mask_token_id == parts["scheduler"].config.mask_token_id
    assert bb.token_grid == (4, 4) and bb.image_size == (8, 8)
    assert all("lora_" in n for n, p in bb.model.named_parameters() if p.requires_grad)


def test_missing_directory(tmp_path) -> None:
    with pytest.raises(WeightsNotFoundError) as exc:
        plugin.meissonic(path=str(tmp_path / "no" / "such" / "dir"))
    message = _one_line(exc)
    assert "does not exist" in message and "MeissonFlow/Meissonic" in message and "--backbone-path" in message


def test_wrong_subfolder(meissonic_dir, tmp_path) -> None:
    root, _ = meissonic_dir
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    (broken / "transformer").rename(broken / "unet")
    with pytest.raises(WeightsNotFoundError) as exc:
        plugin.meissonic(path=str(broken))
    message = _one_line(exc)
    assert "'transformer/'" in message and "diffusion_pytorch_model.safetensors" in message
    assert "--backbone-path" in message

    empty = tmp_path / "empty-transformer"
    shutil.copytree(root, empty)
    for f in (empty / "transformer").iterdir():
        f.unlink()
    with pytest.raises(WeightsNotFoundError, match="transformer/"):
        plugin.meissonic(path=str(empty))


@pytest.mark.parametrize(
    ("factory", "repo"),
    [
        (plugin.meissonic, "MeissonFlow/Meissonic"),
        (plugin.amused, "amused/amused-256"),
        (plugin.amused_512, "amused/amused-512"),
    ],
)
def test_offline_with_an_empty_cache(factory, repo, tmp_path) -> None:
    with pytest.raises(WeightsNotFoundError) as exc:
        factory(cache_dir=str(tmp_path / "hf-cache"))
    message = _one_line(exc)
    assert f"repo '{repo}'" in message
    assert "transformer/{config.json, diffusion_pytorch_model.safetensors}" in message
    assert "--backbone-path" in message and f"hf download {repo}" in message


def test_text_encoder_override_offline(meissonic_dir, tmp_path) -> None:
    root, _ = meissonic_dir
    with pytest.raises(WeightsNotFoundError) as exc:
        plugin.meissonic(
            path=str(root), text_encoder="laion/CLIP-ViT-H-14-laion2B-s32B-b79K", cache_dir=str(tmp_path / "c")
        )
    assert "laion/CLIP-ViT-H-14-laion2B-s32B-b79K" in _one_line(exc)
    bb = plugin.meissonic(path=str(root), text_encoder=str(root / "text_encoder"), resolution=16)
    assert bb.text.text_encoder.config.hidden_size == 24


def test_plugin_registration() -> None:
    from cogrpo.plugins import collect, get_plugin_manager

    pm = get_plugin_manager(plugins=[plugin], autoload=False)
    names = set(collect(pm, "backbone"))
    assert {"meissonic", "amused", "amused-512", "meissonic-tiny", "amused-tiny"} <= names
    tiny = collect(pm, "backbone")["meissonic-tiny"].factory(device="cpu", dtype="float32", grid="8")
    assert tiny.token_grid == (8, 8)
