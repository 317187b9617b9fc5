"""MPS: a transcription of the reference forward as the oracle, the pickle converter, contract, errors.

No MPS package exists to compare against; the oracle below follows the reference code
(Kwai-Kolors/MPS ``trainer/models/clip_model.py`` and ``cross_modeling.py``, README ``infer_example``)
step by step with its einsum formulation, one prompt at a time as the README calls it.
"""

from __future__ import annotations

import pickle
import sys
import types

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cogrpo.errors import CheckpointError, WeightsNotFoundError
from cogrpo.testing import RewardContract
from cogrpo_rewards._images import to_pil
from cogrpo_rewards.mps import OVERALL_CONDITION, MPSModel, MPSScorer, convert_pickled_checkpoint

from .conftest import tiny_clip_config

PROMPTS = ["a photo of a cat", "a red car, detailed, sharp light", "an oil painting of a lighthouse"]


def make_mps_model(seed: int = 0) -> MPSModel:
    torch.manual_seed(seed)
    model = MPSModel(tiny_clip_config())
    with torch.no_grad():
        for p in model.cross_model.parameters():  # weights of O(1/sqrt(fan_in)), norms near 1
            p.copy_(1 + 0.1 * torch.randn_like(p) if p.ndim == 1 else torch.randn_like(p) * p.shape[1] ** -0.5)
    return model.eval()


@pytest.fixture(scope="module")
def mps_files(tmp_path_factory, clip_processor_dir):
    folder = tmp_path_factory.mktemp("mps")
    model = make_mps_model(0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "mps_overall.safetensors")
    model.model.config.save_pretrained(folder / "clip")
    return {
        "path": str(folder / "mps_overall.safetensors"),
        "clip_config": str(folder / "clip"),
        "processor_path": str(clip_processor_dir),
    }


@pytest.fixture(scope="module")
def reward(mps_files) -> MPSScorer:
    return MPSScorer(**mps_files)


# -- the reference forward, transcribed ------------------------------------------------------------


def _rotate_half(x):
    x1, x2 = x.reshape(*x.shape[:-1], 2, -1).unbind(dim=-2)
    return torch.cat((-x2, x1), dim=-1)


def _reference_parallel_block(block, x):
    n, h = x.shape[1], block.heads
    x = nn.functional.layer_norm(x, x.shape[-1:], block.norm.weight, block.norm.bias)
    dims = (block.heads * block.dim_head, block.dim_head, block.dim_head, 2 * block.ff_inner)
    q, k, v, ff = block.fused_attn_ff_proj(x).split(dims, dim=-1)
    q = q.reshape(q.shape[0], n, h, -1).permute(0, 2, 1, 3)
    seq = torch.arange(n, dtype=block.rotary_emb.inv_freq.dtype)
    freqs = torch.einsum("i , j -> i j", seq, block.rotary_emb.inv_freq)
    pos = torch.cat((freqs, freqs), dim=-1)
    q, k = (t * pos.cos() + _rotate_half(t) * pos.sin() for t in (q, k))
    q = q * block.dim_head**-0.5
    sim = torch.einsum("b h i d, b j d -> b h i j", q, k)
    attn = (sim - sim.amax(dim=-1, keepdim=True).detach()).softmax(dim=-1)
    out = torch.einsum("b h i j, b j d -> b h i d", attn, v).permute(0, 2, 1, 3).reshape(x.shape[0], n, -1)
    gate_in, gate = ff.chunk(2, dim=-1)
    return block.attn_out(out) + block.ff_out[1](nn.functional.silu(gate) * gate_in)


def _reference_cross_attention(attn, x, context, mask):
    x = nn.functional.layer_norm(x, x.shape[-1:], attn.norm.weight, attn.norm.bias)
    q = attn.to_q(x)
    q = q.reshape(q.shape[0], q.shape[1], attn.heads, -1).permute(0, 2, 1, 3) * attn.dim_head**-0.5
    k, v = attn.to_kv(context).chunk(2, dim=-1)
    sim = torch.einsum("b h i d, b j d -> b h i j", q, k) + mask.unsqueeze(1).repeat(1, attn.heads, 1, 1)
    weights = (sim - sim.amax(dim=-1, keepdim=True)).softmax(dim=-1)
    out = torch.einsum("b h i j, b j d -> b h i d", weights, v).permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], -1)
    hidden, gate = attn.ff[0](x).chunk(2, dim=-1)
    return attn.to_out(out) + attn.ff[2](nn.functional.silu(gate) * hidden)


def _reference_score(model: MPSModel, input_ids, pixel_values, condition_ids):
    clip = model.model

    def text_features(ids):
        out = clip.text_model(input_ids=ids)
        eos = out.last_hidden_state[torch.arange(ids.shape[0]), ids.argmax(-1)]  # legacy (eos_token_id=2) pooling
        return clip.text_projection(out.last_hidden_state), clip.text_projection(eos)

    text_f, text_eos = text_features(input_ids)
    image_f = clip.visual_projection(clip.vision_model(pixel_values=pixel_values).last_hidden_state)
    condition_f, _ = text_features(condition_ids)
    sim_text_condition = torch.einsum("b i d, b j d -> b j i", text_f, condition_f)
    sim_text_condition = torch.max(sim_text_condition, dim=1, keepdim=True)[0]
    sim_text_condition = sim_text_condition / sim_text_condition.max()
    mask = torch.where(sim_text_condition > 0.01, 0, float("-inf"))
    mask = mask.repeat(1, image_f.shape[1], 1)
    query = image_f
    for cross, block in model.cross_model.layers:
        query = _reference_cross_attention(cross.fn, query, text_f, mask) + query
        query = _reference_parallel_block(block.fn, query) + query
    image_features = query[:, 0, :]
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_eos = text_eos / text_eos.norm(dim=-1, keepdim=True)
    return clip.logit_scale.exp() * torch.diag(torch.einsum("bd,cd->bc", text_eos, image_features))


def test_equals_reference_forward(reward):
    images = torch.rand(3, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    pixels = reward.image_processor(images=to_pil(images), return_tensors="pt")["pixel_values"]
    ids = reward._tokenize(PROMPTS)
    condition = reward._tokenize([OVERALL_CONDITION])
    with torch.no_grad():
        expected = torch.cat(
            [_reference_score(reward.model, ids[i : i + 1], pixels[i : i + 1], condition) for i in range(3)]
        )
    out = reward(images, PROMPTS).scores
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    assert expected.std() > 1e-3


class TestMPSContract(RewardContract):
    @pytest.fixture(autouse=True)
    def _options(self, mps_files):
        self.options = mps_files

    def make_reward(self):
        return MPSScorer(device="cpu", dtype=torch.float32, **self.options)


# -- the converter ---------------------------------------------------------------------------------


def test_convert_pickled_release_without_running_its_code(tmp_path, mps_files):
    """A whole-module pickle under the release's class path converts to the same state dict."""
    fake = types.ModuleType("trainer.models.clip_model")

    class CLIPModel(nn.Module):  # the release's wrapper class, defined in a module that will be gone
        def __init__(self):
            super().__init__()
            source = make_mps_model(0)
            self.model, self.cross_model = source.model, source.cross_model

    CLIPModel.__module__ = fake.__name__
    CLIPModel.__qualname__ = "CLIPModel"
    fake.CLIPModel = CLIPModel
    names = ["trainer", "trainer.models", fake.__name__]
    for name in names[:-1]:
        sys.modules[name] = types.ModuleType(name)
    sys.modules[fake.__name__] = fake
    try:
        original = CLIPModel().half()
        torch.save(original, tmp_path / "MPS_overall_checkpoint.pth")
    finally:
        for name in names:
            del sys.modules[name]
    state = convert_pickled_checkpoint(tmp_path / "MPS_overall_checkpoint.pth", tmp_path / "mps.safetensors")
    expected = original.state_dict()
    assert set(state) == set(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    converted = MPSScorer(**{**mps_files, "path": str(tmp_path / "mps.safetensors")})
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    reference = MPSScorer(**mps_files)(images, PROMPTS[:2]).scores
    torch.testing.assert_close(converted(images, PROMPTS[:2]).scores, reference, atol=0.05, rtol=0.01)  # fp16 weights
    with pytest.raises(CheckpointError, match="python -m cogrpo_rewards.mps convert"):
        MPSScorer(**{**mps_files, "path": str(tmp_path / "MPS_overall_checkpoint.pth")})


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_converter_does_not_execute_foreign_callables(tmp_path):
    target = tmp_path / "created-by-pickle"
    torch.save({"x": _Exploit(str(target)), "w": torch.ones(2)}, tmp_path / "evil.pth", pickle_protocol=2)
    with pytest.raises(CheckpointError):  # no module parameters in it
        convert_pickled_checkpoint(tmp_path / "evil.pth", tmp_path / "out.safetensors")
    assert not target.exists()
    assert pickle.HIGHEST_PROTOCOL >= 2


def test_loading_errors(tmp_path, monkeypatch, mps_files):
    with pytest.raises(WeightsNotFoundError, match=r"Kwai-Kolors/MPS.*--reward-opt mps\.path="):
        MPSScorer(**{k: v for k, v in mps_files.items() if k != "path"})
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsNotFoundError, match=r"--reward-opt mps\.clip_config="):
        MPSScorer(**{k: v for k, v in mps_files.items() if k != "clip_config"})
    state = make_mps_model(0).state_dict()
    state.pop("cross_model.layers.3.1.fn.attn_out.weight")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "mps.safetensors")
    with pytest.raises(CheckpointError, match=r"1 missing keys \(cross_model\.layers\.3\.1\.fn\.attn_out\.weight\)"):
        MPSScorer(**{**mps_files, "path": str(tmp_path / "mps.safetensors")})
