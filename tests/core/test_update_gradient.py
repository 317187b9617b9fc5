"""The per-step backward of grpo_update equals the gradient of the whole-trajectory loss."""

from __future__ import annotations

import pytest
import torch

from cogrpo.config import TrainConfig
from cogrpo.grpo import clipped_surrogate
from cogrpo.sampler import replay_model_log_prob, rollout
from cogrpo.schedule import ScheduleActor
from cogrpo.testing import TinyBackbone, TinyScheduleHead
from cogrpo.trainer import grpo_update


class RecordingSGD(torch.optim.SGD):
    """SGD that keeps a copy of the gradients it was stepped with."""

    def __init__(self, params, lr: float = 0.0) -> None:
        super().__init__(params, lr=lr)
        self.recorded: list[list[torch.Tensor]] = []

    @torch.no_grad()
    def step(self, closure=None):
        self.recorded.append([p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for g in self.param_groups for p in g["params"]])
        return super().step(closure)


def _setup(num_steps: int = 5, batch: int = 6):
    torch.manual_seed(0)
    backbone = TinyBackbone(grid=(4, 4), seed=2)
    head = TinyScheduleHead(backbone.feature_dim, ("r", "tau_r", "tau_s", "cfg"))
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    actor = ScheduleActor(backbone.default_schedule(), head, sigma=0.3)
    prompts = ["a red circle", "a blue square", "two cats"] * (batch // 3)
    embeds = backbone.encode_prompts(prompts)
    gens = [torch.Generator().manual_seed(10 + i) for i in range(batch)]
    traj = rollout(backbone, embeds, num_steps=num_steps, actor=actor, action_mode="sample", generators=gens, keep_features=True)
    with torch.no_grad():  # perturb θ and φ so that the ratio is not 1 and clipping happens
        for p in list(backbone.model.parameters()) + list(head.parameters()):
            p.add_(torch.randn_like(p) * 0.05)
    adv = torch.linspace(-1.5, 1.5, batch)
    return backbone, actor, traj, embeds, adv


@pytest.mark.parametrize("phase", ["model", "schedule", "joint"])
def test_per_step_backward_equals_whole_trajectory_gradient(phase: str) -> None:
    backbone, actor, traj, embeds, adv = _setup()
    config = TrainConfig(clip_eps_low=0.1, clip_eps_high=0.1, max_grad_norm=None, steps=traj.num_steps, timestep_fraction=1.0)
    settings = config.phase_settings("model")
    settings = type(settings)(group_size=2, batch_size=6, micro_batch=2, grad_accum=None)  # 3 micro-batches, 1 step
    optimizers = {"model": RecordingSGD(backbone.model.parameters()), "schedule": RecordingSGD(actor.policy.parameters())}
    stats = grpo_update(phase, backbone, actor, traj, embeds, adv, config=config, settings=settings,
                        optimizers=optimizers, references={}, rng=torch.Generator().manual_seed(0))
    assert stats["ratio/clipfrac"] > 0, "the comparison should cover clipped elements too"

    # the whole-trajectory loss: mean over (g, k) of the clipped surrogate, one backward
    train_model, train_schedule = phase in ("model", "joint"), phase in ("schedule", "joint")
    params = (list(backbone.model.parameters()) if train_model else []) + (list(actor.policy.parameters()) if train_schedule else [])
    for p in params:
        p.grad = None
    terms = []
    for k in range(traj.num_steps):
        logratio = torch.zeros(traj.batch_size)
        if train_model:
            logp, _, _ = replay_model_log_prob(backbone, traj, embeds, k)
            logratio = logratio + logp - traj.model_logp[k]
        if train_schedule:
            logratio = logratio + actor.log_prob(traj.features[k], k, traj.num_steps, traj.actions[k]) - traj.schedule_logp[k]
        terms.append(clipped_surrogate(logratio, adv, 0.1, 0.1)[0])
    torch.stack(terms).mean().backward()
    expected = [p.grad for p in params]
    recorded = (optimizers["model"].recorded[0] if train_model else []) + (optimizers["schedule"].recorded[0] if train_schedule else [])
    assert len(recorded) == len(expected)
    for got, want in zip(recorded, expected):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert any(g.abs().sum() > 0 for g in expected)
    if not train_model:
        assert optimizers["model"].recorded == [], "the model optimizer must not step in a schedule phase"
    if not train_schedule:
        assert optimizers["schedule"].recorded == []


def test_grad_accum_steps_once_per_group_of_micro_batches() -> None:
    backbone, actor, traj, embeds, adv = _setup()
    config = TrainConfig(max_grad_norm=None, steps=traj.num_steps, inner_epochs=2)
    settings = type(config.phase_settings("model"))(group_size=2, batch_size=6, micro_batch=2, grad_accum=2)
    opt = RecordingSGD(backbone.model.parameters())
    grpo_update("model", backbone, actor, traj, embeds, adv, config=config, settings=settings,
                optimizers={"model": opt}, references={}, rng=torch.Generator().manual_seed(0))
    assert len(opt.recorded) == 2 * 2  # 3 micro-batches -> accumulation groups of 2 and 1, per epoch


def test_timestep_fraction_trains_on_a_subset_of_steps() -> None:
    from cogrpo.trainer import sample_train_steps

    g = torch.Generator().manual_seed(0)
    subset = sample_train_steps(10, 0.3, g)
    assert len(subset) == 3 and subset == sorted(subset) and len(set(subset)) == 3
    assert sample_train_steps(10, 1.0, g) == list(range(10))
