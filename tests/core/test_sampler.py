"""The sampler of SPEC §1: parity with diffusers' AmusedScheduler, recording, replay."""

from __future__ import annotations

import pytest
import torch
from diffusers import AmusedScheduler

from cogrpo.sampler import Rollout, denoise_step, guided_logits, replay_model_log_prob, rollout, selected_log_probs
from cogrpo.schedule import ScheduleActor
from cogrpo.testing import TinyBackbone, TinyScheduleHead
from cogrpo_schedulers.fixed import CosineSchedule


@pytest.mark.parametrize("num_steps", [2, 3, 8, 16, 48])
def test_default_schedule_reproduces_amused_scheduler_token_for_token(num_steps: int) -> None:
    """Same cond/uncond logits and the same generator: identical tokens over a whole T-step loop."""
    batch, n_tokens, codebook, mask_id, cfg = 3, 64, 24, 24, 9.0
    reference = AmusedScheduler(mask_token_id=mask_id)
    reference.set_timesteps(num_steps)
    values = CosineSchedule(cfg_scale=cfg).values(num_steps)
    logits_rng = torch.Generator().manual_seed(100 + num_steps)
    gen_ref = torch.Generator().manual_seed(num_steps)
    gen_ours = torch.Generator().manual_seed(num_steps)
    ref_tokens = torch.full((batch, n_tokens), mask_id)
    our_tokens = ref_tokens.clone()
    for k, timestep in enumerate(reference.timesteps):
        cond = torch.randn(batch, n_tokens, codebook, generator=logits_rng) * 3
        uncond = torch.randn(batch, n_tokens, codebook, generator=logits_rng) * 3
        ref_tokens = reference.step(uncond + cfg * (cond - uncond), timestep, ref_tokens, generator=gen_ref).prev_sample
        guided = guided_logits(cond, uncond, values[k, 3].expand(batch), values[k, 2].expand(batch))
        our_tokens, _ = denoise_step(
            guided, our_tokens, mask_id, values[k, 0].expand(batch), values[k, 1].expand(batch), k == num_steps - 1, gen_ours
        )
        assert torch.equal(our_tokens, ref_tokens), f"step {k}"
    assert (our_tokens != mask_id).all()


def test_committed_tokens_are_never_remasked_even_at_high_temperature() -> None:
    g = torch.Generator().manual_seed(0)
    tokens = torch.full((2, 32), 8)
    tokens[:, :16] = torch.randint(0, 8, (2, 16), generator=g)  # half already committed
    guided = torch.randn(2, 32, 8, generator=g)
    nxt, _ = denoise_step(guided, tokens, 8, torch.tensor([0.9, 0.9]), torch.tensor([500.0, 500.0]), False, g)
    assert torch.equal(nxt[:, :16], tokens[:, :16])
    # n = max(1, min(floor(32 * 0.9), 16 - 1)) = 15 of the 16 fresh positions go back to the mask
    assert ((nxt[:, 16:] == 8).sum(dim=1) == 15).all()


def test_one_masked_position_left_is_remasked_as_in_diffusers() -> None:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 8, (1, 16), generator=g)
    tokens[0, 5] = 8
    nxt, sampled = denoise_step(torch.randn(1, 16, 8, generator=g), tokens, 8, torch.tensor([0.5]), torch.tensor([1.0]), False, g)
    assert sampled[0, 5] != 8 and nxt[0, 5] == 8


def test_selected_log_probs_equals_log_softmax() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g) * 4
    ids = torch.randint(0, 7, (2, 5), generator=g)
    expected = torch.log_softmax(logits, -1).gather(-1, ids[..., None])[..., 0]
    torch.testing.assert_close(selected_log_probs(logits, ids), expected)


def _setup(num_steps=6, batch=4, head=True):
    backbone = TinyBackbone(grid=(4, 4), seed=1)
    policy = TinyScheduleHead(backbone.feature_dim, ("r", "tau_r", "tau_s", "cfg")) if head else None
    if policy is not None:
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(torch.randn_like(p) * 0.3)  # a non-trivial head
    actor = ScheduleActor(backbone.default_schedule(), policy, sigma=0.3)
    prompts = ["a red circle", "two blue squares", "a green cross", ""][:batch]
    return backbone, actor, backbone.encode_prompts(prompts)


def test_rollout_records_consistent_trajectories() -> None:
    backbone, actor, prompt = _setup()
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    traj = rollout(backbone, prompt, num_steps=6, actor=actor, action_mode="sample", generators=gens, keep_features=True)
    assert traj.states.shape == (7, 4, 16) and traj.actions.shape == (6, 4, 4)
    assert (traj.states[0] == backbone.mask_token_id).all() and (traj.tokens != backbone.mask_token_id).all()
    assert traj.features.shape == (6, 4, backbone.feature_dim, 4, 4)
    filled = torch.stack([traj.fill_mask(k) for k in range(6)])
    assert torch.equal(filled.sum(0), torch.ones(4, 16, dtype=torch.long)), "every position is filled exactly once"
    for k in range(6):  # committed tokens never change
        kept = traj.states[k] != backbone.mask_token_id
        assert torch.equal(traj.states[k + 1][kept], traj.states[k][kept])


def test_replay_gives_back_model_and_schedule_log_probs() -> None:
    backbone, actor, prompt = _setup()
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    traj = rollout(backbone, prompt, num_steps=6, actor=actor, action_mode="sample", generators=gens, keep_features=True)
    for k in range(6):
        logp, _, features = replay_model_log_prob(backbone, traj, prompt, k)
        assert torch.allclose(torch.exp(logp - traj.model_logp[k]), torch.ones(4), atol=1e-5)
        slogp = actor.log_prob(features, k, 6, traj.actions[k])
        assert torch.allclose(torch.exp(slogp.detach() - traj.schedule_logp[k]), torch.ones(4), atol=1e-5)


def test_per_trajectory_generators_make_rollouts_batch_invariant() -> None:
    backbone, actor, prompt = _setup()
    together = rollout(backbone, prompt, num_steps=5, actor=actor, generators=[torch.Generator().manual_seed(i) for i in range(4)])
    for i in range(4):
        alone = rollout(backbone, {k: v[i : i + 1] for k, v in prompt.items()}, num_steps=5, actor=actor, generators=[torch.Generator().manual_seed(i)])
        assert torch.equal(alone.tokens[0], together.tokens[i])
        torch.testing.assert_close(alone.actions[:, 0], together.actions[:, i])


def test_rollout_select_and_cat_round_trip() -> None:
    backbone, actor, prompt = _setup()
    traj = rollout(backbone, prompt, num_steps=4, actor=actor, generators=torch.Generator().manual_seed(0), keep_features=True)
    parts = [traj.select(torch.tensor([0, 1])), traj.select(torch.tensor([2, 3]))]
    joined = Rollout.cat(parts)
    for name in ("states", "actions", "schedule", "model_logp", "schedule_logp", "features"):
        assert torch.equal(getattr(joined, name), getattr(traj, name))


def test_rollout_rejects_fewer_than_two_steps() -> None:
    backbone, actor, prompt = _setup()
    with pytest.raises(ValueError, match=">= 2"):
        rollout(backbone, prompt, num_steps=1, actor=actor)


def test_filled_log_prob_equals_the_masked_sum_of_log_softmax() -> None:
    from cogrpo.sampler import filled_log_prob

    g = torch.Generator().manual_seed(1)
    guided = torch.randn(3, 10, 6, generator=g, requires_grad=True)
    ids = torch.randint(0, 6, (3, 10), generator=g)
    filled = torch.rand(3, 10, generator=g) < 0.4
    expected = (torch.log_softmax(guided, -1).gather(-1, ids[..., None])[..., 0] * filled).sum(-1)
    got = filled_log_prob(guided, torch.where(filled, ids, 99), filled)  # ids outside I_k are never read
    torch.testing.assert_close(got, expected)
    got.sum().backward()
    assert guided.grad[~filled].abs().sum() == 0 and guided.grad[filled].abs().sum() > 0
