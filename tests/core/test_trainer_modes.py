"""The four training modes: which parameters move, the on-policy ratio check, determinism."""

from __future__ import annotations

import json

import pytest
import torch
from rich.console import Console

from cogrpo import hookimpl
from cogrpo.trainer import train


class Snapshots:
    """Records θ and φ after every iteration through the ``cogrpo_after_iteration`` hook."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, torch.Tensor]]] = []
        self.model = None
        self.policy = None

    @hookimpl
    def cogrpo_after_iteration(self, iteration, phase, metrics):
        self.rows.append((phase, self.capture(), dict(metrics)))

    def capture(self) -> dict[str, torch.Tensor]:
        out = {f"model.{k}": v.detach().clone() for k, v in self.model.named_parameters()}
        if self.policy is not None:
            out.update({f"policy.{k}": v.detach().clone() for k, v in self.policy.named_parameters()})
        return out


def run_with_snapshots(config, builtin_pm, monkeypatch):
    snaps = Snapshots()
    import cogrpo.trainer as trainer_module

    original_build_actor = trainer_module.build_actor
    original_build_backbone = trainer_module.build_backbone

    def build_backbone(pm, cfg):
        backbone = original_build_backbone(pm, cfg)
        snaps.model = backbone.model
        return backbone

    def build_actor(pm, cfg, backbone):
        actor = original_build_actor(pm, cfg, backbone)
        snaps.policy = actor.policy
        snaps.initial = snaps.capture()
        return actor

    monkeypatch.setattr(trainer_module, "build_backbone", build_backbone)
    monkeypatch.setattr(trainer_module, "build_actor", build_actor)
    result = train(config, builtin_pm(snaps), console=Console(quiet=True))
    return snaps, result


def changed(before: dict, after: dict, prefix: str) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


def test_alternating_only_the_active_phase_moves(make_config, builtin_pm, monkeypatch) -> None:
    snaps, _ = run_with_snapshots(make_config(mode="alternating"), builtin_pm, monkeypatch)
    assert [p for p, _, _ in snaps.rows] == ["model", "model", "schedule", "schedule"]
    previous = snaps.initial
    for phase, params, _ in snaps.rows:
        assert changed(previous, params, "model.") == (phase == "model"), phase
        assert changed(previous, params, "policy.") == (phase == "schedule"), phase
        previous = params


def test_naive_never_touches_the_schedule(make_config, builtin_pm, monkeypatch) -> None:
    snaps, result = run_with_snapshots(make_config(mode="naive"), builtin_pm, monkeypatch)
    assert snaps.policy is None, "naive GRPO has no schedule policy"
    assert [p for p, _, _ in snaps.rows] == ["model"] * 4
    assert all(changed(a, b, "model.") for a, b in zip([snaps.initial] + [r[1] for r in snaps.rows], [r[1] for r in snaps.rows]))
    # the applied schedule is the fixed default (CFG 3.0 of the tiny backbone, sampling temperature 1)
    for _, _, metrics in snaps.rows:
        assert metrics["schedule/cfg/mean@0.5"] == 3.0 and metrics["schedule/tau_s/mean@0.5"] == 1.0
    ckpt = sorted((result.run_dir / "checkpoints").glob("iter_*"))[-1]
    assert not (ckpt / "schedule_policy.safetensors").exists()


def test_schedule_only_never_touches_the_model(make_config, builtin_pm, monkeypatch) -> None:
    snaps, _ = run_with_snapshots(make_config(mode="schedule-only"), builtin_pm, monkeypatch)
    for _, params, _ in snaps.rows:
        assert not changed(snaps.initial, params, "model.")
    assert changed(snaps.initial, snaps.rows[-1][1], "policy.")


def test_joint_moves_both_every_iteration(make_config, builtin_pm, monkeypatch) -> None:
    snaps, _ = run_with_snapshots(make_config(mode="joint"), builtin_pm, monkeypatch)
    previous = snaps.initial
    for phase, params, _ in snaps.rows:
        assert phase == "joint"
        assert changed(previous, params, "model.") and changed(previous, params, "policy.")
        previous = params


@pytest.mark.parametrize("mode", ["alternating", "joint", "naive", "schedule-only"])
def test_on_policy_ratio_is_one_at_the_first_inner_step(mode, make_config, builtin_pm, monkeypatch) -> None:
    snaps, _ = run_with_snapshots(make_config(mode=mode, inner_epochs=2, model_grad_accum=1, schedule_grad_accum=1), builtin_pm, monkeypatch)
    for _, _, metrics in snaps.rows:
        assert metrics["ratio/first_max_dev"] <= 1e-5, metrics["ratio/first_max_dev"]
        # later inner steps are off-policy: the ratio has moved (the check is not vacuous)
        assert metrics["ratio/mean"] != 1.0


def test_same_seed_same_numbers(make_config, builtin_pm, tmp_path) -> None:
    def metrics_of(run_dir):
        train(make_config(run_dir=str(run_dir), model_iterations=1, schedule_iterations=1), builtin_pm(), console=Console(quiet=True))
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]

    first, second = metrics_of(tmp_path / "a"), metrics_of(tmp_path / "b")
    assert first == second
    other = train(make_config(run_dir=str(tmp_path / "c"), seed=1, model_iterations=1, schedule_iterations=1), builtin_pm(), console=Console(quiet=True))
    rows = [json.loads(line) for line in (other.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["reward/brightness/mean"] != first[0]["reward/brightness/mean"], "a different seed gives different rollouts"
