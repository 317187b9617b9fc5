"""One Co-GRPO iteration on the tiny Meissonic and aMUSEd backbones: rollout with per-trajectory
generators and a learned schedule head, rewards from a test reward, a model-phase update through
the replayed log-probabilities and a schedule-phase update (the trainer-level test lives in core)."""

from __future__ import annotations

import pytest
import torch

from cogrpo.grpo import clipped_surrogate, group_advantages
from cogrpo.sampler import replay_model_log_prob, rollout
from cogrpo.schedule import ScheduleActor
from cogrpo.testing import BrightnessReward
from cogrpo_meissonic.testing import tiny_amused_backbone, tiny_meissonic_backbone
from cogrpo_schedulers.paper_head import PaperHead

PROMPTS = ["a red circle", "two blue squares"]
GROUP = 3
STEPS = 4


def _iteration(bb) -> None:
    batch = [p for p in PROMPTS for _ in range(GROUP)]
    prompt = bb.encode_prompts(batch)
    head = PaperHead(feature_dim=bb.feature_dim, feature_grid=bb.feature_grid, components=("r", "cfg"))
    actor = ScheduleActor(bb.default_schedule(), head, sigma=0.3)
    generators = [torch.Generator().manual_seed(i) for i in range(len(batch))]
    traj = rollout(
        bb, prompt, num_steps=STEPS, actor=actor, action_mode="sample", generators=generators, keep_features=True
    )
    assert (traj.tokens != bb.mask_token_id).all()
    rewards = BrightnessReward()(bb.decode(traj.tokens), batch).scores
    adv = group_advantages(rewards[:, None], torch.ones(1), GROUP).advantages  # [B]
    assert adv.abs().sum() > 0

    # Model phase: per-step replay with gradient, one optimizer step.
    params = list(bb.trainable_parameters())
    before = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=1e-2)
    for k in range(STEPS):
        logp, _, _ = replay_model_log_prob(bb, traj, prompt, k)
        logratio = logp - traj.model_logp[k]
        torch.testing.assert_close(logratio.exp(), torch.ones_like(logratio), atol=1e-5, rtol=0)
        pg_loss, _ = clipped_surrogate(logratio, adv, 0.2, 0.28)
        (pg_loss.mean() / STEPS).backward()
    opt.step()
    assert any(not torch.equal(p, b) for p, b in zip(params, before, strict=True)), "the model must move"
    with torch.no_grad():
        moved = torch.stack([replay_model_log_prob(bb, traj, prompt, k)[0] for k in range(STEPS)])
    assert not torch.allclose(moved, traj.model_logp), "the update must change the log-probabilities"

    # Schedule phase: recorded features, no backbone backward.
    head_before = [p.detach().clone() for p in head.parameters()]
    sopt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for k in range(STEPS):
        logp = actor.log_prob(traj.features[k], k, STEPS, traj.actions[k])
        logratio = logp - traj.schedule_logp[k]
        torch.testing.assert_close(logratio.exp(), torch.ones_like(logratio), atol=1e-5, rtol=0)
        pg_loss, _ = clipped_surrogate(logratio, adv, 0.2, 0.28)
        (pg_loss.mean() / STEPS).backward()
    sopt.step()
    assert any(not torch.equal(p, b) for p, b in zip(head.parameters(), head_before, strict=True))


@pytest.mark.parametrize(
    "make",
    [
        lambda: tiny_meissonic_backbone(grid=8),
        lambda: tiny_meissonic_backbone(grid=8, lora_rank=4, gradient_checkpointing=True),
        lambda: tiny_amused_backbone(grid=8, hidden_size=16, codebook_size=16),
        lambda: tiny_amused_backbone(
            grid=8, hidden_size=16, codebook_size=16, lora_rank=4, gradient_checkpointing=True
        ),
    ],
    ids=["meissonic", "meissonic-lora-ckpt", "amused", "amused-lora-ckpt"],
)
def test_one_co_grpo_iteration(make) -> None:
    _iteration(make())


def test_bf16_autocast_replay_gives_back_the_rollout() -> None:
    bb = tiny_meissonic_backbone(grid=8, bf16=True, gradient_checkpointing=True)
    prompt = bb.encode_prompts(PROMPTS)
    traj = rollout(
        bb,
        prompt,
        num_steps=STEPS,
        actor=ScheduleActor(bb.default_schedule()),
        action_mode="base",
        generators=[torch.Generator().manual_seed(i) for i in range(2)],
    )
    for k in range(STEPS):
        logp, guided, _ = replay_model_log_prob(bb, traj, prompt, k)
        assert guided.dtype == torch.float32, "log-softmax in fp32"
        torch.testing.assert_close((logp - traj.model_logp[k]).exp(), torch.ones(2), atol=1e-5, rtol=0)
        logp.sum().backward()
    assert all(p.grad is not None for p in bb.trainable_parameters())
