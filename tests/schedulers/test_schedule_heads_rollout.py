"""Learned heads inside the sampler: exact reproduction of the base schedule at initialisation, and
a head trained at T=16 driving rollouts at T=8 and T=48 (acceptance item 4)."""

from __future__ import annotations

import pytest
import torch

from cogrpo.plugins import create, get_plugin_manager
from cogrpo.sampler import rollout
from cogrpo.schedule import ScheduleActor
from cogrpo.testing import TinyBackbone
from cogrpo_schedulers import plugin

HEADS = ["paper-head", "mlp-head"]
ALL = ("r", "tau_r", "tau_s", "cfg")
PROMPTS = ["a red circle", "two blue squares", "a green triangle above a cat"]


@pytest.fixture(scope="module")
def backbone() -> TinyBackbone:
    return TinyBackbone(grid=(4, 4), seed=0)


def make_actor(backbone: TinyBackbone, name: str, components=ALL, sigma: float = 0.1) -> ScheduleActor:
    torch.manual_seed(0)
    pm = get_plugin_manager(plugins=[plugin], autoload=False)
    head = create(
        pm,
        "schedule_policy",
        name,
        feature_dim=backbone.feature_dim,
        feature_grid=backbone.feature_grid,
        components=components,
    )
    return ScheduleActor(backbone.default_schedule(), head, sigma=sigma)


def generators(n: int = len(PROMPTS)) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(100 + i) for i in range(n)]


def run(backbone: TinyBackbone, actor: ScheduleActor, num_steps: int, mode: str, **kw):
    prompt = backbone.encode_prompts(PROMPTS)
    return rollout(backbone, prompt, num_steps=num_steps, actor=actor, action_mode=mode, generators=generators(), **kw)


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize("num_steps", [2, 5, 16, 48])
def test_zero_initialised_head_reproduces_base_schedule_exactly(backbone, name: str, num_steps: int) -> None:
    actor = make_actor(backbone, name)
    learned = run(backbone, actor, num_steps, "mean")
    base = run(backbone, actor, num_steps, "base")
    assert learned.actions.shape == (num_steps, len(PROMPTS), 4)
    assert torch.equal(learned.actions, torch.zeros_like(learned.actions))
    assert torch.equal(learned.states, base.states)  # bit-identical tokens at every step
    assert torch.equal(learned.model_logp, base.model_logp)
    # bit-identical schedule values, except r and tau_r of the last step (see the next test)
    assert torch.equal(learned.schedule[:-1], base.schedule[:-1])
    assert torch.equal(learned.schedule[-1, :, 2:], base.schedule[-1, :, 2:])
    assert torch.equal(base.schedule[:, 0], actor.base.values(num_steps))


@pytest.mark.parametrize("name", HEADS)
def test_zero_initialised_head_reproduces_last_step_values_too(backbone, name: str) -> None:
    actor = make_actor(backbone, name)
    assert torch.equal(run(backbone, actor, 5, "mean").schedule, run(backbone, actor, 5, "base").schedule)


@pytest.mark.parametrize("name", HEADS)
def test_a_nonzero_head_does_change_the_rollout(backbone, name: str) -> None:
    """Control for the test above: the comparison can fail."""
    actor = make_actor(backbone, name)
    with torch.no_grad():
        actor.policy.out.bias.fill_(0.5)
    learned, base = run(backbone, actor, 16, "mean"), run(backbone, actor, 16, "base")
    # every value moves, except r and tau_r at the last step, which nothing uses (they keep the base)
    assert (learned.schedule[:-1] > base.schedule[:-1]).all()
    assert (learned.schedule[-1, :, 2:] > base.schedule[-1, :, 2:]).all()
    assert torch.equal(learned.schedule[-1, :, :2], base.schedule[-1, :, :2])
    assert not torch.equal(learned.states, base.states)


@pytest.mark.parametrize("name", HEADS)
def test_untrained_components_keep_base_values_when_sampling(backbone, name: str) -> None:
    actor = make_actor(backbone, name, components=("tau_r", "cfg"))
    traj, base = run(backbone, actor, 8, "sample"), run(backbone, actor, 8, "base")
    assert traj.actions.shape == (8, len(PROMPTS), 2)
    assert torch.equal(traj.schedule[..., [0, 2]], base.schedule[..., [0, 2]])
    assert not torch.equal(traj.schedule[..., [1, 3]], base.schedule[..., [1, 3]])


@pytest.mark.parametrize("name", HEADS)
def test_head_trained_at_16_steps_runs_at_8_and_48(backbone, name: str) -> None:
    actor = make_actor(backbone, name)
    train = run(backbone, actor, 16, "sample", keep_features=True)
    target = train.actions + 0.5  # push every component up: an objective through ScheduleActor.log_prob
    opt = torch.optim.Adam(actor.policy.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = -torch.stack([actor.log_prob(train.features[k], k, 16, target[k]).mean() for k in range(16)]).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]

    for num_steps in (8, 48):
        traj = run(backbone, actor, num_steps, "mean")
        base = actor.base_values(num_steps)[:, None]  # [T, 1, 4]
        values = traj.schedule  # [T, B, 4]
        assert torch.isfinite(values).all() and torch.isfinite(traj.actions).all()
        assert ((values[:-1, ..., 0] > 0) & (values[:-1, ..., 0] < 1)).all()  # r in (0, 1) where it is used
        assert (values[:-1, ..., 1] > 0).all() and (values[..., 2:] > 0).all()  # temperatures and CFG scale > 0
        moved = torch.cat([(values[:-1] > base[:-1]).flatten(), (values[-1, ..., 2:] > base[-1, ..., 2:]).flatten()])
        assert moved.all(), "the learned upward shift carries over to an unseen step count"
        assert not torch.allclose(traj.actions[0], traj.actions[-1]), "actions depend on progress"
        assert (traj.tokens != backbone.mask_token_id).all(), "the rollout fills every position"
