"""Contract test mixins that plugin packages reuse.

Subclass one in a test module, name the subclass ``Test...`` and implement its ``make_*``
method(s); pytest collects the inherited ``test_*`` methods::

    from cogrpo.testing import RewardContract

    class TestMyReward(RewardContract):
        def make_reward(self):
            return MyReward(device="cpu", dtype=torch.float32, path=tiny_checkpoint)

Every test asserts a property the core relies on: shapes, determinism, batch independence,
replay exactness, input validation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cogrpo.protocols import Backbone, BackboneOutput, FixedSchedule, Reward, RewardOutput


class BackboneContract:
    """What every backbone must satisfy. Implement :meth:`make_backbone` (small, random weights)."""

    prompts: Sequence[str] = ("a red circle", "two blue squares", "")
    num_steps: int = 4

    def make_backbone(self) -> Backbone:
        raise NotImplementedError

    def _backbone(self) -> Backbone:
        if not hasattr(self, "_cached_backbone"):
            self._cached_backbone = self.make_backbone()
        return self._cached_backbone

    def _masked_tokens(self, backbone: Backbone, batch: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        n = backbone.token_grid[0] * backbone.token_grid[1]
        tokens = torch.randint(0, backbone.codebook_size, (batch, n), generator=g)
        masked = torch.rand(batch, n, generator=g) < 0.5
        return torch.where(masked, backbone.mask_token_id, tokens).to(backbone.device)

    def test_attributes(self) -> None:
        bb = self._backbone()
        assert isinstance(bb, Backbone)
        assert bb.codebook_size > 0 and bb.feature_dim > 0
        assert not (0 <= bb.mask_token_id < bb.codebook_size), "the mask id must not be a predictable token id"
        assert len(bb.token_grid) == 2 and len(bb.feature_grid) == 2
        assert any(True for _ in bb.trainable_parameters())

    def test_forward_shapes_with_and_without_guidance(self) -> None:
        bb = self._backbone()
        prompt = bb.encode_prompts(list(self.prompts))
        tokens = self._masked_tokens(bb, len(self.prompts))
        n = tokens.shape[1]
        with torch.no_grad():
            out = bb.forward(tokens, prompt, 0, self.num_steps, True)
            plain = bb.forward(tokens, prompt, 0, self.num_steps, False)
        assert isinstance(out, BackboneOutput)
        assert out.cond_logits.shape == (len(self.prompts), n, bb.codebook_size)
        assert out.uncond_logits is not None and out.uncond_logits.shape == out.cond_logits.shape
        assert out.features.shape == (len(self.prompts), bb.feature_dim, *bb.feature_grid)
        assert plain.uncond_logits is None
        torch.testing.assert_close(plain.cond_logits.float(), out.cond_logits.float(), atol=1e-4, rtol=1e-4)

    def test_forward_is_deterministic_and_batch_independent(self) -> None:
        bb = self._backbone()
        prompt = bb.encode_prompts(list(self.prompts))
        tokens = self._masked_tokens(bb, len(self.prompts))
        with torch.no_grad():
            a = bb.forward(tokens, prompt, 1, self.num_steps, True)
            b = bb.forward(tokens, prompt, 1, self.num_steps, True)
            first = bb.forward(tokens[:1], {k: v[:1] for k, v in prompt.items()}, 1, self.num_steps, True)
        assert torch.equal(a.cond_logits, b.cond_logits)
        torch.testing.assert_close(first.cond_logits.float(), a.cond_logits[:1].float(), atol=1e-4, rtol=1e-4)

    def test_prompt_changes_conditional_logits(self) -> None:
        bb = self._backbone()
        prompt = bb.encode_prompts(["a red circle", "a green triangle"])
        tokens = self._masked_tokens(bb, 1).repeat(2, 1)
        with torch.no_grad():
            out = bb.forward(tokens, prompt, 0, self.num_steps, True)
        assert not torch.allclose(out.cond_logits[0], out.cond_logits[1])
        torch.testing.assert_close(out.uncond_logits[0], out.uncond_logits[1])

    def test_decode_range(self) -> None:
        bb = self._backbone()
        n = bb.token_grid[0] * bb.token_grid[1]
        tokens = torch.randint(0, bb.codebook_size, (2, n), generator=torch.Generator().manual_seed(0)).to(bb.device)
        with torch.no_grad():
            images = bb.decode(tokens)
        assert images.ndim == 4 and images.shape[:2] == (2, 3)
        assert images.min() >= 0 and images.max() <= 1

    def test_default_schedule(self) -> None:
        schedule = self._backbone().default_schedule()
        assert isinstance(schedule, FixedSchedule)
        values = schedule.values(self.num_steps)
        assert values.shape == (self.num_steps, 4) and values.dtype == torch.float32
        assert torch.all(values[:-1, 0] > 0) and torch.all(values[:, 2] > 0)

    def test_rollout_replay_gives_back_log_probs(self) -> None:
        from cogrpo.sampler import replay_model_log_prob, rollout
        from cogrpo.schedule import ScheduleActor

        bb = self._backbone()
        prompt = bb.encode_prompts(list(self.prompts))
        actor = ScheduleActor(bb.default_schedule())
        gens = [torch.Generator(device=bb.device).manual_seed(i) for i in range(len(self.prompts))]
        traj = rollout(bb, prompt, num_steps=self.num_steps, actor=actor, action_mode="base", generators=gens)
        assert (traj.tokens != bb.mask_token_id).all(), "every position is filled after the last step"
        for k in range(self.num_steps):
            with torch.no_grad():
                logp, _, _ = replay_model_log_prob(bb, traj, prompt, k)
            ratio = torch.exp(logp - traj.model_logp[k])
            assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5), (k, ratio)


class RewardContract:
    """What every reward must satisfy. Implement :meth:`make_reward`; override :meth:`make_batch`
    if the reward needs particular images, prompts, tokens or metadata."""

    batch_size: int = 3
    atol: float = 1e-4

    def make_reward(self) -> Reward:
        raise NotImplementedError

    def make_batch(self, n: int) -> dict:
        g = torch.Generator().manual_seed(0)
        prompts = ["a photo of a cat", "a red car on a street", "an oil painting of a lighthouse", "two dogs"]
        return {"images": torch.rand(n, 3, 64, 64, generator=g), "prompts": [prompts[i % len(prompts)] for i in range(n)]}

    def _reward(self) -> Reward:
        if not hasattr(self, "_cached_reward"):
            self._cached_reward = self.make_reward()
        return self._cached_reward

    @staticmethod
    def _subset(batch: dict, i: int) -> dict:
        out = {}
        for key, value in batch.items():
            out[key] = value[i : i + 1]
        return out

    def test_protocol_and_output(self) -> None:
        reward = self._reward()
        assert isinstance(reward, Reward)
        assert isinstance(reward.device, torch.device) and isinstance(reward.dtype, torch.dtype)
        batch = self.make_batch(self.batch_size)
        out = reward(batch.pop("images"), batch.pop("prompts"), **batch)
        assert isinstance(out, RewardOutput)
        assert out.scores.shape == (self.batch_size,)
        assert out.scores.dtype == torch.float32 and out.scores.device.type == "cpu"
        assert torch.isfinite(out.scores).all()
        for key, value in out.info.items():
            assert len(value) == self.batch_size, f"info[{key!r}] must have one entry per sample"

    def test_batching_equals_one_by_one(self) -> None:
        reward = self._reward()
        batch = self.make_batch(self.batch_size)
        together = reward(**{"images": batch["images"], "prompts": batch["prompts"]}, **_extras(batch)).scores
        alone = []
        for i in range(self.batch_size):
            one = self._subset(batch, i)
            alone.append(reward(one["images"], one["prompts"], **_extras(one)).scores)
        torch.testing.assert_close(together, torch.cat(alone), atol=self.atol, rtol=self.atol)

    def test_accepts_other_input_dtype(self) -> None:
        reward = self._reward()
        batch = self.make_batch(2)
        ref = reward(batch["images"], batch["prompts"], **_extras(batch)).scores
        doubled = reward(batch["images"].double(), batch["prompts"], **_extras(batch)).scores
        assert doubled.dtype == torch.float32
        torch.testing.assert_close(ref, doubled, atol=self.atol, rtol=self.atol)

    def test_empty_batch_is_an_error(self) -> None:
        import pytest

        reward = self._reward()
        batch = self.make_batch(1)
        with pytest.raises(ValueError, match="empty"):
            reward(batch["images"][:0], [])

    def test_count_mismatch_is_an_error(self) -> None:
        import pytest

        reward = self._reward()
        batch = self.make_batch(2)
        with pytest.raises(ValueError, match="prompt"):
            reward(batch["images"], batch["prompts"][:1], **_extras(batch))


def _extras(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in ("images", "prompts")}


class SchedulePolicyContract:
    """What every learned schedule head must satisfy. Implement :meth:`make_policy`."""

    feature_dim: int = 16
    feature_grid: tuple[int, int] = (4, 4)

    def make_policy(self, components: tuple[str, ...]) -> torch.nn.Module:
        raise NotImplementedError

    def test_zero_initialised_output(self) -> None:
        for components in [("r",), ("r", "tau_r", "tau_s", "cfg")]:
            policy = self.make_policy(components)
            assert tuple(policy.components) == components
            feats = torch.randn(3, self.feature_dim, *self.feature_grid)
            mu = policy(feats, torch.tensor([0.0, 0.5, 0.9]))
            assert mu.shape == (3, len(components))
            assert torch.equal(mu, torch.zeros_like(mu)), "a fresh head must output exactly zero"

    def test_gradients_reach_every_parameter_after_a_step(self) -> None:
        policy = self.make_policy(("r", "cfg"))
        opt = torch.optim.SGD(policy.parameters(), lr=0.1)
        feats = torch.randn(4, self.feature_dim, *self.feature_grid)
        progress = torch.linspace(0, 1, 4)
        for _ in range(2):  # zero-initialised layers need one step before gradients flow everywhere
            opt.zero_grad()
            (policy(feats, progress) - 1).pow(2).sum().backward()
            opt.step()
        mu = policy(feats, progress)
        assert not torch.equal(mu, torch.zeros_like(mu))
        assert not torch.allclose(mu[0], mu[-1]), "the output must depend on the inputs"

    def test_output_is_finite_for_any_progress(self) -> None:
        policy = self.make_policy(("r", "tau_r", "tau_s", "cfg"))
        feats = torch.randn(5, self.feature_dim, *self.feature_grid)
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        mu = policy(feats, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
        assert torch.isfinite(mu).all()
        assert not torch.allclose(mu[0], mu[-1]), "the output must depend on the inputs"
