"""Pretraining: the masked objective's inputs, determinism, checkpoints and the `cogrpo pretrain` command."""

from __future__ import annotations

import math
import random

import torch
import typer
from typer.testing import CliRunner

from cogrpo.errors import ConfigError
from cogrpo_toyworld import plugin
from cogrpo_toyworld.model import ToyBackbone, ToyConfig, ToyTextToImage, load_weights
from cogrpo_toyworld.pretrain import PretrainConfig, cosine_mask, learning_rate, pretrain, run_pretraining, sample_batch
from cogrpo_toyworld.prompts import eval_prompts, train_prompts

TINY = ToyConfig(dim=32, depth=1, heads=2, text_depth=1)


def test_cosine_mask() -> None:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 7, (4000, 49), generator=g)
    inputs, masked = cosine_mask(tokens, 7, g)
    assert torch.equal(inputs[~masked], tokens[~masked]) and (inputs[masked] == 7).all()
    counts = masked.sum(1)
    assert counts.min() >= 1 and counts.max() <= 49
    # E[cos(pi u / 2)] = 2 / pi for u ~ U(0, 1); ceil adds about half a cell per row
    assert abs(counts.float().mean().item() / 49 - (2 / math.pi + 0.5 / 49)) < 0.015


def test_learning_rate_warms_up_then_stays() -> None:
    recipe = PretrainConfig(lr=1e-3, warmup=10, steps=100)
    assert learning_rate(0, recipe) == 1e-4
    assert learning_rate(4, recipe) == 5e-4
    assert learning_rate(9, recipe) == learning_rate(99, recipe) == 1e-3


def test_batches_come_from_training_prompts_only() -> None:
    prompts, tokens = sample_batch(200, random.Random(0), (7, 7))
    assert set(prompts) <= set(train_prompts()) and not set(prompts) & set(eval_prompts())
    assert tokens.shape == (200, 49) and tokens.dtype == torch.long


def _state(net) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_pretraining_is_deterministic() -> None:
    recipe = PretrainConfig(steps=3, batch_size=4, seed=0, warmup=2)
    a, summary = pretrain(recipe, TINY)
    b, _ = pretrain(recipe, TINY)
    c, _ = pretrain(PretrainConfig(steps=3, batch_size=4, seed=1, warmup=2), TINY)
    sa, sb, sc = _state(a), _state(b), _state(c)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    torch.manual_seed(0)
    fresh = _state(ToyTextToImage(TINY))
    assert any(not torch.equal(sa[k], fresh[k]) for k in sa), "training changed the weights"
    assert summary["steps"] == 3 and summary["seed"] == 0 and math.isfinite(summary["final_loss"])


def test_intermediate_checkpoint_is_the_shorter_run(tmp_path) -> None:
    run_pretraining(PretrainConfig(steps=3, batch_size=4, warmup=2), tmp_path / "long.safetensors", TINY,
                    show_progress=False, save_every=2)
    run_pretraining(PretrainConfig(steps=2, batch_size=4, warmup=2), tmp_path / "short.safetensors", TINY,
                    show_progress=False)
    mid, meta = load_weights(tmp_path / "long-step2.safetensors")
    short, _ = load_weights(tmp_path / "short.safetensors")
    assert meta["pretrain"]["steps"] == 2
    for (k, x), (_, y) in zip(mid.state_dict().items(), short.state_dict().items()):
        assert torch.equal(x, y), k


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """test root"""

    plugin.cogrpo_register_commands(app)
    return app


def test_pretrain_command(tmp_path) -> None:
    out = tmp_path / "toy.safetensors"
    result = CliRunner().invoke(
        _app(), ["pretrain", "--backbone", "toy", "--steps", "2", "--batch-size", "4", "--seed", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    bb = ToyBackbone(path=out)
    recorded = bb.release["pretrain"]
    assert recorded["steps"] == 2 and recorded["seed"] == 3 and recorded["batch_size"] == 4
    assert recorded["command"].startswith("cogrpo pretrain --backbone toy --steps 2 --seed 3 --batch-size 4")
    assert recorded["torch"] == torch.__version__


def test_pretrain_command_rejects_other_backbones(tmp_path) -> None:
    result = CliRunner().invoke(_app(), ["pretrain", "--backbone", "meissonic", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    assert "only implemented for --backbone toy" in str(result.exception)
    assert not (tmp_path / "x").exists()


def test_cogrpo_cli_has_the_pretrain_command() -> None:
    from cogrpo.cli import get_app

    result = CliRunner().invoke(get_app(), ["pretrain", "--help"])
    assert result.exit_code == 0, result.output
    assert "--backbone" in result.output and "--steps" in result.output
