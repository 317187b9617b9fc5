"""The pure math of SPEC §2–3 on hand-computed tensors."""

from __future__ import annotations

import math

import pytest
import torch

from cogrpo.grpo import approx_kl, categorical_kl, clipped_surrogate, gaussian_kl, group_advantages, kl_k3
from cogrpo.schedule import gaussian_log_prob, inverse_softplus, map_actions
from cogrpo_schedulers.fixed import CosineSchedule


def test_group_advantages_two_rewards_with_weights_and_a_zero_variance_group() -> None:
    # group 0: reward A = [1, 3] (mean 2, population std 1), reward B = [0, 0] (constant)
    # group 1: reward A = [5, 5] (constant),              reward B = [2, 4] (mean 3, std 1)
    rewards = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 2.0], [5.0, 4.0]])
    adv = group_advantages(rewards, torch.tensor([0.5, 0.25]), group_size=2)
    a = 1 / (1 + 1e-4)  # (R - mean) / (std + 1e-4) with |R - mean| = std = 1
    torch.testing.assert_close(adv.per_reward, torch.tensor([[-a, 0.0], [a, 0.0], [0.0, -a], [0.0, a]]))
    torch.testing.assert_close(adv.advantages, torch.tensor([-0.5 * a, 0.5 * a, -0.25 * a, 0.25 * a]))
    assert adv.zero_std_ratio == 0.0  # each group still has one informative reward


def test_all_equal_group_gets_exactly_zero_and_is_counted() -> None:
    rewards = torch.tensor([[0.1], [0.1], [0.1], [0.7], [0.2], [0.4]])
    adv = group_advantages(rewards, torch.tensor([1.0]), group_size=3)
    assert torch.equal(adv.advantages[:3], torch.zeros(3))
    assert adv.zero_std_groups.tolist() == [True, False]
    assert adv.zero_std_ratio == 0.5
    # second group: mean 13/30, population std sqrt(((0.7-m)^2+(0.2-m)^2+(0.4-m)^2)/3)
    m = (0.7 + 0.2 + 0.4) / 3
    s = math.sqrt(((0.7 - m) ** 2 + (0.2 - m) ** 2 + (0.4 - m) ** 2) / 3)
    torch.testing.assert_close(adv.advantages[3:], torch.tensor([(0.7 - m), (0.2 - m), (0.4 - m)]) / (s + 1e-4))


def test_group_advantages_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="groups"):
        group_advantages(torch.zeros(5, 1), torch.ones(1), group_size=2)
    with pytest.raises(ValueError, match="weights"):
        group_advantages(torch.zeros(4, 2), torch.ones(3), group_size=2)


def test_clipped_surrogate_clips_on_both_sides_with_separate_eps() -> None:
    ratio = torch.tensor([1.5, 1.5, 0.5, 0.5, 1.0])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0, 2.0])
    pg, clipped = clipped_surrogate(ratio.log(), adv, eps_low=0.2, eps_high=0.3)
    # A>0, ratio 1.5: min(1.5, 1.3) = 1.3 ; A<0, ratio 1.5: min(-1.5, -1.3) = -1.5 (unclipped)
    # A>0, ratio 0.5: min(0.5, 0.8) = 0.5 (unclipped) ; A<0, ratio 0.5: min(-0.5, -0.8) = -0.8
    torch.testing.assert_close(pg, torch.tensor([-1.3, 1.5, -0.5, 0.8, -2.0]))
    assert clipped.tolist() == [True, False, False, True, False]


def test_clipped_surrogate_gradient_is_zero_when_clipped() -> None:
    logratio = torch.tensor([math.log(1.5), math.log(1.1)], requires_grad=True)
    pg, _ = clipped_surrogate(logratio, torch.tensor([1.0, 1.0]), 0.2, 0.2)
    pg.sum().backward()
    assert logratio.grad[0] == 0 and logratio.grad[1] == pytest.approx(-1.1)


def test_kl_k3_hand_computed() -> None:
    logp, logp_ref = torch.tensor([0.0, -1.0]), torch.tensor([-0.5, -1.0])
    # r = ref - p: [-0.5, 0]; k3 = e^r - r - 1
    torch.testing.assert_close(kl_k3(logp, logp_ref), torch.tensor([math.exp(-0.5) + 0.5 - 1, 0.0]))


def test_categorical_kl_exact_over_masked_positions() -> None:
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]))
    logits_ref = torch.log(torch.tensor([[[0.25, 0.75], [0.9, 0.1]]]))
    mask = torch.tensor([[True, True]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    torch.testing.assert_close(categorical_kl(logits, logits_ref, mask), torch.tensor([expected]))
    assert categorical_kl(logits, logits_ref, torch.tensor([[False, True]])).item() == pytest.approx(0.0, abs=1e-7)


def test_gaussian_log_prob_and_kl_hand_computed() -> None:
    a, mu, sigma = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.0, 0.0]]), 0.5
    expected = sum(-(x**2) / (2 * sigma**2) - math.log(sigma) - 0.5 * math.log(2 * math.pi) for x in (0.5, -1.0))
    torch.testing.assert_close(gaussian_log_prob(a, mu, sigma), torch.tensor([expected]))
    torch.testing.assert_close(gaussian_kl(a, mu, sigma), torch.tensor([(0.25 + 1.0) / (2 * 0.25)]))
    assert gaussian_log_prob(torch.zeros(3, 0), torch.zeros(3, 0), 0.1).tolist() == [0.0, 0.0, 0.0]


def test_approx_kl() -> None:
    lr = torch.tensor([0.1, -0.2])
    expected = ((math.exp(0.1) - 1 - 0.1) + (math.exp(-0.2) - 1 + 0.2)) / 2
    assert approx_kl(lr).item() == pytest.approx(expected, rel=1e-4)  # float32 cancellation


@pytest.mark.parametrize("num_steps", [2, 5, 8, 16, 48, 64])
def test_zero_action_reproduces_the_base_schedule_bit_exactly(num_steps: int) -> None:
    base = CosineSchedule().values(num_steps)
    for k in range(num_steps - 1):  # the last step's r and τr are unused (nothing is re-masked)
        values = map_actions(torch.zeros(1, 4), base[k], ("r", "tau_r", "tau_s", "cfg"))
        assert torch.equal(values[0], base[k]), (k, values, base[k])


def test_map_actions_ranges_and_untrained_components() -> None:
    base = torch.tensor([0.5, 2.0, 1.0, 9.0])
    actions = torch.tensor([[10.0, -10.0], [-10.0, 10.0]])
    values = map_actions(actions, base, ("r", "cfg"))
    assert torch.equal(values[:, 1:3], base[1:3].expand(2, 2))  # τr and τs untouched
    assert 0 < values[1, 0] < values[0, 0] < 1
    assert values[0, 3] > 0 and values[1, 3] > 9.0
    # r = sigmoid(a + logit(0.5)) = sigmoid(a); cfg = softplus(a + softplus^-1(9))
    assert values[0, 0].item() == pytest.approx(torch.sigmoid(torch.tensor(10.0)).item())
    assert values[1, 3].item() == pytest.approx(torch.nn.functional.softplus(torch.tensor(10.0) + inverse_softplus(torch.tensor(9.0))).item(), rel=1e-6)


def test_inverse_softplus() -> None:
    y = torch.tensor([1e-4, 0.5, 2.0, 30.0], dtype=torch.float64)
    torch.testing.assert_close(torch.nn.functional.softplus(inverse_softplus(y)), y)
