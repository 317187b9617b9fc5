"""The masked-diffusion MDP (SPEC §1): the sampler with per-step recording, and the replay.

One step ``k`` of a rollout, for a batch of ``B`` trajectories::

    out    = backbone.forward(V_k, prompt, k, T, guidance)          # cond/uncond logits, features
    A_k    = actor.act(out.features, k / T)                         # (r, τr, τs, s) per trajectory
    guided = (u + s · (c − u)) / τs                                  # fp32 [B, N, K]
    x      ~ Cat(softmax(guided))                                    # every position, one draw each
    conf   = log p[x] + τr · Gumbel  (+inf where V_k was already known)
    V_k+1  = x with the n = max(1, min(floor(N·r), n_masked − 1)) lowest-confidence positions
             re-masked (nothing re-masked at k = T − 1)

With the default schedule this is, draw for draw, diffusers' ``AmusedScheduler.step`` (multinomial
on the softmax probabilities first, then the Gumbel noise; the same float32 operations).

The model log-probability of step ``k`` is ``Σ_{i ∈ I_k} log_softmax(guided)_i[V_k+1,i]`` over the
filled set ``I_k = {i : V_k,i = M and V_k+1,i ≠ M}`` (paper eq. 8); the replay recomputes it from
the recorded state with the recorded ``s_k`` and ``τs_k`` and gives the rollout's value back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch

from cogrpo.protocols import Backbone, PromptEmbeds
from cogrpo.schedule import ScheduleActor

Generators = torch.Generator | Sequence[torch.Generator] | None


# -------------------------------------------------------------------------------------------------
# Pure step functions
# -------------------------------------------------------------------------------------------------


def guided_logits(
    cond: torch.Tensor, uncond: torch.Tensor | None, cfg_scale: torch.Tensor, sample_temperature: torch.Tensor
) -> torch.Tensor:
    """``(u + s·(c − u)) / τs`` in float32: ``[B, N, K]`` logits, ``[B]`` scales -> ``[B, N, K]``."""
    c = cond.float()
    guided = c if uncond is None else uncond.float() + cfg_scale.float()[:, None, None] * (c - uncond.float())
    if bool((sample_temperature == 1).all()):  # x / 1 == x: skip a full pass over [B, N, K]
        return guided
    return guided / sample_temperature.float()[:, None, None]


def selected_log_probs(guided: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``log_softmax(guided)[ids]`` without materialising the full log-softmax: ``[B, N]``."""
    return guided.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(guided, dim=-1)


def filled_log_prob(guided: torch.Tensor, ids: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
    """``Σ_{i ∈ I_k} log_softmax(guided)_i[ids_i]`` per trajectory: ``[B, N, K], [B, N], [B, N] -> [B]``.

    Only the filled positions (about N/T of them) are normalised, so the log-probability costs a
    fraction of a pass over the logits. The rollout and the replay both call this function, which
    keeps their values bitwise equal for equal logits.
    """
    rows, cols = filled.nonzero(as_tuple=True)
    picked = guided[rows, cols]  # [M, K]
    log_probs = picked.gather(-1, ids[rows, cols].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(picked, dim=-1)
    dense = torch.zeros(filled.shape, dtype=log_probs.dtype, device=log_probs.device)
    dense = dense.index_put((rows, cols), log_probs)  # [B, N], zero outside I_k
    return dense.sum(dim=-1)


def _multinomial(probs: torch.Tensor, generators: Generators) -> torch.Tensor:
    """One draw per position: ``[B, N, K]`` -> ``[B, N]``; row ``b`` uses ``generators[b]`` if a list."""
    b, n, k = probs.shape
    if generators is None or isinstance(generators, torch.Generator):
        return torch.multinomial(probs.reshape(-1, k), 1, generator=generators).view(b, n)
    return torch.stack([torch.multinomial(probs[i], 1, generator=g)[:, 0] for i, g in enumerate(generators)])


def _uniform(like: torch.Tensor, generators: Generators) -> torch.Tensor:
    if generators is None or isinstance(generators, torch.Generator):
        return torch.zeros_like(like).uniform_(0, 1, generator=generators)
    return torch.stack([torch.zeros_like(like[i]).uniform_(0, 1, generator=g) for i, g in enumerate(generators)])


def gumbel_noise(like: torch.Tensor, generators: Generators) -> torch.Tensor:
    """Standard Gumbel noise shaped like ``like`` (the reference's clamps and order)."""
    u = _uniform(like, generators)
    return -torch.log((-torch.log(u.clamp(1e-20))).clamp(1e-20))


def denoise_step(
    guided: torch.Tensor,  # [B, N, K] float32
    tokens: torch.Tensor,  # [B, N] int64
    mask_token_id: int,
    remask_ratio: torch.Tensor,  # [B] float32
    remask_temperature: torch.Tensor,  # [B] float32
    last_step: bool,
    generators: Generators,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample every position, then re-mask the least confident fresh ones.

    :return: ``(next_tokens [B, N], sampled [B, N])`` where ``sampled`` holds the fresh draw at
        positions that were masked and the old token elsewhere.
    """
    unknown = tokens == mask_token_id
    probs = guided.softmax(dim=-1)
    sampled = torch.where(unknown, _multinomial(probs, generators), tokens)
    if last_step:
        return sampled, sampled
    seq_len = tokens.shape[1]
    mask_len = (seq_len * remask_ratio.float()[:, None]).floor()  # [B, 1]
    mask_len = torch.minimum(unknown.sum(dim=-1, keepdim=True) - 1, mask_len)
    mask_len = torch.clamp(mask_len, min=1)
    chosen_probs = probs.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)
    chosen_probs = torch.where(unknown, chosen_probs, torch.finfo(chosen_probs.dtype).max)
    confidence = torch.log(chosen_probs.clamp(1e-20)) + remask_temperature.float()[:, None] * gumbel_noise(
        chosen_probs, generators
    )
    confidence = torch.where(unknown, confidence, torch.inf)  # committed tokens are never re-masked
    cut_off = torch.sort(confidence, dim=-1).values.gather(1, mask_len.long())
    next_tokens = torch.where(confidence < cut_off, mask_token_id, sampled)
    return next_tokens, sampled


# -------------------------------------------------------------------------------------------------
# Recorded trajectories
# -------------------------------------------------------------------------------------------------


@dataclass
class Rollout:
    """``B`` recorded trajectories of ``T`` steps (groups of ``G`` are contiguous).

    ``states`` lives on the backbone's device; the small per-step records live on the CPU.
    """

    states: torch.Tensor  # [T+1, B, N] int64: V_0 (all masked) .. V_T (final tokens)
    actions: torch.Tensor  # [T, B, C] pre-activation schedule actions (C = 0 when none sampled)
    schedule: torch.Tensor  # [T, B, 4] applied (r, tau_r, tau_s, cfg)
    model_logp: torch.Tensor  # [T, B] log π_model of the rollout (θ_old)
    schedule_logp: torch.Tensor  # [T, B] log π_schedule of the rollout (φ_old); 0 when not sampled
    features: torch.Tensor | None  # [T, B, D, Hf, Wf] policy inputs, when kept
    mask_token_id: int

    @property
    def num_steps(self) -> int:
        return self.states.shape[0] - 1

    @property
    def batch_size(self) -> int:
        return self.states.shape[1]

    @property
    def tokens(self) -> torch.Tensor:
        """Final token grids ``[B, N]``."""
        return self.states[-1]

    def fill_mask(self, step: int) -> torch.Tensor:
        """``I_k``: positions filled at step ``k`` and kept, ``[B, N]`` bool."""
        before, after = self.states[step], self.states[step + 1]
        return (before == self.mask_token_id) & (after != self.mask_token_id)

    def select(self, index: torch.Tensor | slice) -> Rollout:
        """The sub-batch of trajectories ``index`` (along B)."""
        kw = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                idx = index.to(value.device) if isinstance(index, torch.Tensor) else index
                kw[f.name] = value[:, idx]
            else:
                kw[f.name] = value
        return Rollout(**kw)

    @staticmethod
    def cat(parts: Sequence[Rollout]) -> Rollout:
        """Concatenate rollouts of the same T along the batch axis."""
        first = parts[0]
        kw = {}
        for f in fields(first):
            values = [getattr(p, f.name) for p in parts]
            kw[f.name] = torch.cat(values, dim=1) if isinstance(values[0], torch.Tensor) else values[0]
        return Rollout(**kw)


@torch.no_grad()
def rollout(
    backbone: Backbone,
    prompt: PromptEmbeds,
    *,
    num_steps: int,
    actor: ScheduleActor,
    action_mode: str = "sample",
    generators: Generators = None,
    guidance: bool = True,
    keep_features: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> Rollout:
    """Generate ``B`` trajectories from an all-mask canvas and record every step (SPEC §1).

    :param prompt: encoded prompts with batch ``B`` (one row per trajectory).
    :param actor: the schedule actor (base schedule, optional learned head, σ).
    :param action_mode: ``"sample"``, ``"mean"`` or ``"base"`` (see :class:`ScheduleActor`).
    :param generators: one generator for the batch, or one per trajectory (then a trajectory's
        draws do not depend on its batch: what makes sharded rollouts reproducible).
    :param keep_features: store the policy inputs (else the schedule phase recomputes them).
    """
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2, got {num_steps}")
    batch = next(iter(prompt.values())).shape[0]
    n_tokens = backbone.token_grid[0] * backbone.token_grid[1]
    mask_id = backbone.mask_token_id
    tokens = torch.full((batch, n_tokens), mask_id, dtype=torch.long, device=backbone.device)
    states, actions, schedule, model_logp, schedule_logp, features = [tokens], [], [], [], [], []
    for k in range(num_steps):
        out = backbone.forward(tokens, prompt, k, num_steps, guidance)  # [B, N, K] x2, [B, D, Hf, Wf]
        act = actor.act(out.features, k, num_steps, mode=action_mode, generators=generators, batch_size=batch)
        values = act.values.to(tokens.device)  # [B, 4]
        guided = guided_logits(out.cond_logits, out.uncond_logits if guidance else None, values[:, 3], values[:, 2])
        next_tokens, sampled = denoise_step(
            guided, tokens, mask_id, values[:, 0], values[:, 1], last_step=k == num_steps - 1, generators=generators
        )
        filled = (tokens == mask_id) & (next_tokens != mask_id)
        model_logp.append(filled_log_prob(guided, sampled, filled).cpu())
        states.append(next_tokens)
        actions.append(act.actions)
        schedule.append(act.values)
        schedule_logp.append(act.log_prob.detach().cpu())
        if keep_features:
            features.append(out.features.detach())
        tokens = next_tokens
        if on_step is not None:
            on_step(k)
    return Rollout(
        states=torch.stack(states),
        actions=torch.stack(actions),
        schedule=torch.stack(schedule),
        model_logp=torch.stack(model_logp),
        schedule_logp=torch.stack(schedule_logp),
        features=torch.stack(features) if keep_features else None,
        mask_token_id=mask_id,
    )


def replay_model_log_prob(
    backbone: Backbone,
    trajectories: Rollout,
    prompt: PromptEmbeds,
    step: int,
    guidance: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Recompute ``log π_model,k`` for the recorded step ``k`` with the current θ (with grad).

    :return: ``(logp [B] on the CPU, guided [B, N, K], features [B, D, Hf, Wf] detached)``; the
        guided logits are returned for an exact KL against a reference model.
    """
    tokens = trajectories.states[step]
    out = backbone.forward(tokens, prompt, step, trajectories.num_steps, guidance)
    values = trajectories.schedule[step].to(tokens.device)
    guided = guided_logits(out.cond_logits, out.uncond_logits if guidance else None, values[:, 3], values[:, 2])
    filled = trajectories.fill_mask(step)
    logp = filled_log_prob(guided, trajectories.states[step + 1], filled)
    return logp.cpu(), guided, out.features.detach()
