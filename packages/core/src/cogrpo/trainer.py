"""The Co-GRPO training loop, top to bottom (paper §4, SPEC §3).

Two cooperating policies share one reward: the model θ (token actions) and the scheduling
policy φ (Gaussian schedule actions). Every iteration:

    1. sample prompts, each repeated G times (a group)
    2. roll out B trajectories, recording states, schedule actions and old log-probs
    3. decode, score with every reward, normalise per reward within the group, mix
    4. update: replay each recorded step and take a clipped-surrogate step on the phase's ratio
         model phase:    log π_model     (θ trains, φ frozen)      — paper eq. 21, n < N_m
         schedule phase: log π_schedule  (φ trains, θ frozen)      — paper eq. 21, otherwise
         joint:          log π_model + log π_schedule (both train) — paper eq. 16
       The loss is a sum of per-step terms, so each step is back-propagated on its own (memory
       flat in T); the schedule phase never back-propagates through the backbone.
    5. log, checkpoint (atomically), repeat

Modes: ``alternating`` (cycles × (N_m model, N_s schedule)), ``joint``, ``naive`` (model only,
fixed schedule) and ``schedule-only``.

Under ``--distributed ddp|deepspeed`` every process runs this loop: it rolls out and scores its
block of each batch, the scores and the recorded trajectories are gathered, and each process runs
its piece of every micro-batch; the numbers are those of one process (:mod:`cogrpo.distributed`).
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cogrpo import distributed, plugins
from cogrpo.build import (
    build_actor,
    build_backbone,
    build_rewards,
    load_prompts,
    make_optimizer,
    trajectory_generators,
)
from cogrpo.checkpoint import TrainState, read_checkpoint, restore_training
from cogrpo.config import PhaseSettings, TrainConfig
from cogrpo.distributed import DistContext, UpdateSync
from cogrpo.errors import CogrpoError, RewardError
from cogrpo.generation import autocast_context, decode_in_batches, index_prompt, rollout_in_batches
from cogrpo.grpo import approx_kl, categorical_kl, clipped_surrogate, gaussian_kl, group_advantages, kl_k3
from cogrpo.metrics import Accumulator, MetricsLogger
from cogrpo.monitors import monitor_metrics
from cogrpo.protocols import SCHEDULE_COMPONENTS, Backbone, PromptEmbeds, Reward
from cogrpo.run import RunDir
from cogrpo.sampler import Rollout, replay_model_log_prob
from cogrpo.schedule import ScheduleActor

KEEP_FEATURES_AUTO_BYTES = 1 << 30  # store policy features when they take at most 1 GiB
PROGRESS_MARKS = (0.0, 0.25, 0.5, 0.75)


@dataclass
class TrainResult:
    run_dir: Path
    summary: dict[str, Any]


# =================================================================================================
# The loop
# =================================================================================================


def train(config: TrainConfig, pm: pluggy.PluginManager | None = None, console: Console | None = None) -> TrainResult:
    """Run Co-GRPO as configured; resumable, deterministic on CPU for a fixed seed.

    Under ``--distributed ddp|deepspeed`` every process of the launch runs this same loop on its
    share of the batch (see :mod:`cogrpo.distributed`); with ``none`` nothing changes.
    """
    config.validate()
    with distributed.start(RunDir.effective_config(config)) as dist:
        return train_loop(config, pm or plugins.default_plugin_manager(), console or Console(), dist)


def train_loop(config: TrainConfig, pm: pluggy.PluginManager, console: Console, dist: DistContext) -> TrainResult:
    """The loop of :func:`train` in one process of the run (``dist``: its rank and process group)."""
    if not dist.is_main:
        console = Console(quiet=True)  # logging, progress and files: rank 0 only
    if config.threads:
        torch.set_num_threads(config.threads)
    run = RunDir.open_shared(config, dist)  # creates the run directory (rank 0) or checks it against a resume
    config = run.config
    torch.manual_seed(config.seed)
    bf16 = config.precision == "bf16"

    # -- the two policies, the rewards, the prompts ---------------------------------------------
    backbone = build_backbone(pm, dist.localize(config))
    actor = build_actor(pm, config, backbone)
    policy = actor.policy  # φ (None in naive mode)
    rewards = build_rewards(pm, dist.localize(config))
    reward_weights = torch.tensor(config.reward_weights, dtype=torch.float32)
    prompts = load_prompts(pm, config.prompts)
    plan = config.phase_plan()
    trains_model = any(phase in ("model", "joint") for phase, _ in plan)
    trains_schedule = any(phase in ("schedule", "joint") for phase, _ in plan)

    optimizers: dict[str, torch.optim.Optimizer] = {}
    if trains_model:
        optimizers["model"] = make_optimizer(
            list(backbone.trainable_parameters()), config.model_optimizer, config.model_lr,
            config.model_weight_decay, config.model_betas,
        )
    else:
        backbone.model.requires_grad_(False)
    if trains_schedule:
        assert policy is not None
        optimizers["schedule"] = make_optimizer(
            list(policy.parameters()), config.schedule_optimizer, config.schedule_lr,
            config.schedule_weight_decay, config.schedule_betas,
        )
    references = build_references(config, backbone, policy, trains_model, trains_schedule)
    rng = torch.Generator().manual_seed(config.seed)  # prompts, minibatch order, timestep subsets
    generators = {"trainer": rng}

    state = TrainState()
    if config.init_from:
        init = read_checkpoint(config.init_from)
        restore_training(init, model=backbone.model, schedule_policy=policy, optimizers={}, generators={})
    loaded = read_checkpoint(run.path) if run.resuming else None
    if loaded is not None:
        distributed.check_resumable(loaded, config, dist)  # a ZeRO checkpoint needs its number of processes
        state = restore_training(
            loaded, model=backbone.model, schedule_policy=policy,
            optimizers=distributed.checkpointed_optimizers(config, optimizers), generators=generators,
        )
    dist.broadcast_parameters(backbone.model, policy)  # identical replicas on every process
    logger = MetricsLogger(run.path, console=console, enabled=dist.is_main)
    pm.hook.cogrpo_train_start(config=config, run_dir=run.path)
    last_iteration = len(plan) if config.max_iterations is None else min(len(plan), config.max_iterations)
    console.print(run.describe(backbone, policy, rewards, len(plan)) + dist.describe(), highlight=False)

    if config.eval_benchmark_name and config.eval_before and state.base_eval is None:
        from cogrpo.eval import evaluate_base

        state.base_eval = dist.on_main(
            lambda: evaluate_base(pm, config, backbone, actor, run.path / "eval" / "base", console)
        )

    # one process: plain backward/step; ddp: gradients all-reduced; deepspeed: θ becomes a ZeRO engine
    sync = distributed.make_sync(dist, config, backbone, optimizers)
    if loaded is not None:
        sync.load_sharded(loaded)

    with make_progress(console, config.progress and dist.is_main) as progress:
        task = progress.add_task("train", total=len(plan), completed=state.iteration)
        while state.iteration < last_iteration:
            iteration = state.iteration
            phase, cycle = plan[iteration]
            settings = config.phase_settings(phase)
            dist.check_lockstep(iteration, rng)
            t0 = time.perf_counter()
            progress.update(task, description=f"cycle {cycle} · {phase:8s}")

            # 1. prompts: B / G prompts, each repeated G times (groups contiguous); the same global
            #    sample on every process (shared seed), so the RNG stays in lock-step
            num_groups = settings.batch_size // settings.group_size
            prompt_idx = torch.randint(len(prompts), (num_groups,), generator=rng)
            traj_prompts = [prompts[i] for i in prompt_idx.tolist() for _ in range(settings.group_size)]

            # 2. rollouts (no grad) of this process's block of the batch (all of it in one process);
            #    the schedule actions come from π_φ unless the mode fixes them. Each trajectory's noise
            #    is seeded from its global index: the same on any rank and in any batching.
            action_mode = rollout_action_mode(config, phase)
            keep_features = phase in ("schedule", "joint") and should_keep_features(config, backbone, settings.batch_size)
            mine = dist.shard(len(traj_prompts))
            gens = trajectory_generators(config.seed, iteration, range(len(traj_prompts))[mine], backbone.device)
            traj, embeds = rollout_in_batches(
                backbone, actor, traj_prompts[mine], gens, num_steps=config.steps, action_mode=action_mode,
                batch_size=config.rollout_batch, guidance=config.guidance, keep_features=keep_features, bf16=bf16,
            )
            t_rollout = time.perf_counter()

            # 3. rewards -> group-relative advantages over the global batch (scores gathered first,
            #    so groups may straddle processes); the update then needs every trajectory
            images = decode_in_batches(backbone, traj.tokens, config.rollout_batch)
            local_scores = score_rewards(rewards, images, traj_prompts[mine], traj.tokens)  # [B / W, J]
            scores = dist.all_gather_cat(local_scores)  # [B, J]
            adv = group_advantages(scores, reward_weights, settings.group_size)
            traj, embeds = distributed.gather_rollout(dist, traj, embeds)
            pm.hook.cogrpo_after_rollout(
                iteration=iteration, phase=phase, prompts=traj_prompts,
                rewards={r.name: scores[:, j] for j, r in enumerate(rewards)},
            )
            t_reward = time.perf_counter()

            # 4. policy update ----------------------------------------------------------------
            update_stats = grpo_update(
                phase, backbone, actor, traj, embeds, adv.advantages,
                config=config, settings=settings, optimizers=optimizers, references=references, rng=rng, bf16=bf16,
                sync=sync,
            )
            if update_stats.get("ratio/first_max_dev", 0.0) > config.ratio_check_tol:
                logger.warn(
                    f"on-policy ratio check failed at iteration {iteration}: the first inner step's ratio deviates "
                    f"from 1 by {update_stats['ratio/first_max_dev']:.2e} (> {config.ratio_check_tol:g}); the replay "
                    "does not reproduce the rollout (non-deterministic backbone, dropout, or different precision)"
                )
            t_update = time.perf_counter()

            # 5. log and checkpoint -----------------------------------------------------------
            metrics: dict[str, Any] = {"phase": phase, "cycle": cycle, "phase_id": ["model", "schedule", "joint"].index(phase)}
            for j, reward in enumerate(rewards):
                metrics[f"reward/{reward.name}/mean"] = scores[:, j].mean().item()
                metrics[f"reward/{reward.name}/std"] = scores[:, j].std(unbiased=False).item()
            metrics["reward/mixed/mean"] = (scores * reward_weights).sum(-1).mean().item()
            metrics["adv/zero_std_ratio"] = adv.zero_std_ratio
            metrics["adv/abs_mean"] = adv.advantages.abs().mean().item()
            metrics.update(schedule_metrics(traj))
            # image monitors of this process's images, diversity of the global tokens; averaged over processes
            metrics.update(dist.mean(monitor_metrics(images, traj.tokens.cpu(), settings.group_size)))
            metrics.update(update_stats)
            metrics.update({
                "time/rollout": t_rollout - t0, "time/reward": t_reward - t_rollout,
                "time/update": t_update - t_reward, "time/iteration": t_update - t0,
            })
            state.reward_stats = {r.name: {"mean": metrics[f"reward/{r.name}/mean"], "std": metrics[f"reward/{r.name}/std"]} for r in rewards}
            state.phase, state.cycle = phase, cycle
            state.wall_time += t_update - t0
            state.iteration = iteration + 1
            logger.log(iteration, metrics)
            if dist.is_main:
                pm.hook.cogrpo_log_metrics(step=iteration, metrics=metrics)
            logger.print_line(format_line(iteration, len(plan), metrics, rewards))
            if state.iteration % config.checkpoint_every == 0 or state.iteration == last_iteration:
                sync.save_checkpoint(
                    run.path / "checkpoints", state, model=sync.unwrap(backbone) if trains_model else None,
                    schedule_policy=policy, optimizers=optimizers, generators=generators, keep=config.keep_checkpoints,
                )
            progress.update(task, completed=state.iteration)
            pm.hook.cogrpo_after_iteration(iteration=iteration, phase=phase, metrics=metrics)

    summary: dict[str, Any] = {"iterations": state.iteration, "total_iterations": len(plan), "wall_time_train": state.wall_time}
    if state.iteration == len(plan):
        from cogrpo.eval import finish_run

        rebuild = (lambda: build_backbone(pm, dist.localize(config))) if config.eval_benchmark_name else None
        eval_backbone = sync.release(backbone, rebuild)  # the plain model again (ZeRO-3: gathered on rank 0)
        summary.update(
            dist.on_main(lambda: finish_run(pm, config, eval_backbone, actor, run.path, state, console))
        )
    if dist.is_main:
        run.write_summary(summary)
    logger.close()
    pm.hook.cogrpo_train_end(run_dir=run.path, summary=summary)
    return TrainResult(run.path, summary)


# =================================================================================================
# The update
# =================================================================================================


def grpo_update(
    phase: str,
    backbone: Backbone,
    actor: ScheduleActor,
    traj: Rollout,
    embeds: PromptEmbeds,
    advantages: torch.Tensor,  # [B]
    *,
    config: TrainConfig,
    settings: PhaseSettings,
    optimizers: dict[str, torch.optim.Optimizer],
    references: dict[str, torch.nn.Module],
    rng: torch.Generator,
    bf16: bool = False,
    sync: UpdateSync | None = None,
) -> dict[str, float]:
    """Inner epochs × micro-batches × (sampled) steps of the clipped surrogate on the phase's ratio.

    Each optimizer step covers ``grad_accum`` micro-batches; its loss is the mean of ``pg`` over
    those trajectories and the sampled steps, back-propagated one step at a time. With several
    processes (``sync``), each runs its piece of every micro-batch and the gradients are summed
    before the step: the same optimizer steps over the same trajectories as one process.
    """
    sync = sync or UpdateSync()
    train_model, train_schedule = phase in ("model", "joint"), phase in ("schedule", "joint")
    active = [optimizers[k] for k in (("model",) if train_model else ()) + (("schedule",) if train_schedule else ())]
    params = [p for opt in active for group in opt.param_groups for p in group["params"]]
    num_steps, batch = traj.num_steps, traj.batch_size
    stats = Accumulator()
    first_max_dev = 0.0
    on_policy = True  # until the first optimizer step, θ = θ_old and φ = φ_old
    for _epoch in range(config.inner_epochs):
        train_steps = sample_train_steps(num_steps, config.timestep_fraction, rng)
        order = torch.randperm(batch, generator=rng)
        micro_batches = list(order.split(settings.micro_batch))
        accum = settings.grad_accum or len(micro_batches)
        for start in range(0, len(micro_batches), accum):
            group = micro_batches[start : start + accum]
            n_group = sum(len(mb) for mb in group)
            for mb in group:
                mb = sync.shard(mb)  # this process's piece of the micro-batch (all of it in one process)
                mb_traj, mb_prompt, mb_adv = traj.select(mb), index_prompt(embeds, mb), advantages[mb]
                for k in train_steps:
                    # -- log-ratio of the phase's policy at step k, [mb] -------------------------
                    logratio = torch.zeros(len(mb))
                    kl = torch.zeros(len(mb))
                    features = None
                    if train_model:
                        with autocast_context(backbone, bf16):
                            logp, guided, features = replay_model_log_prob(backbone, mb_traj, mb_prompt, k, config.guidance)
                        logratio = logratio + (logp - mb_traj.model_logp[k])
                        if config.kl_beta > 0:
                            kl = kl + token_kl(backbone, references["model"], mb_traj, mb_prompt, k, logp, guided, config, bf16)
                    if train_schedule:
                        # the policy's input is part of the recorded state (θ_old's features) when stored;
                        # else this step's replay features (θ, detached) or a no-grad recompute
                        if mb_traj.features is not None:
                            features = mb_traj.features[k]
                        elif features is None:
                            features = policy_features(backbone, mb_traj, mb_prompt, k, config.guidance, bf16)
                        slogp = actor.log_prob(features, k, num_steps, mb_traj.actions[k]).cpu()
                        logratio = logratio + (slogp - mb_traj.schedule_logp[k])
                        if config.kl_beta > 0:
                            progress = torch.full((len(mb),), k / num_steps)
                            mu = actor.mean(features, progress).cpu()
                            with torch.no_grad():
                                ref = references["schedule"]
                                param = next(ref.parameters())
                                mu_ref = ref(features.to(param.device, param.dtype), progress.to(param.device)).float().cpu()
                            kl = kl + gaussian_kl(mu, mu_ref, actor.sigma)
                    # -- clipped surrogate, one step's share of the mean over (g, k) ------------
                    pg_loss, clipped = clipped_surrogate(logratio, mb_adv, config.clip_eps_low, config.clip_eps_high)
                    loss = (pg_loss + config.kl_beta * kl).sum() / (n_group * len(train_steps))
                    sync.backward(loss, trains_model=train_model)
                    with torch.no_grad():
                        if on_policy:
                            first_max_dev = max(first_max_dev, (logratio.exp() - 1).abs().max().item())
                        stats.add("loss/pg", pg_loss.mean().item(), len(mb))
                        stats.add("loss/kl", kl.mean().item(), len(mb))
                        stats.add("ratio/clipfrac", clipped.float().mean().item(), len(mb))
                        stats.add("ratio/approx_kl", approx_kl(logratio).item(), len(mb))
                        stats.add("ratio/mean", logratio.exp().mean().item(), len(mb))
            # -- one optimizer step per accumulation group (gradients summed over processes) ----
            norm = sync.step(active, params, config.max_grad_norm)
            if norm is not None:
                stats.add("grad_norm", norm)
            on_policy = False
    out = sync.means(stats)  # over every process's trajectories
    out["ratio/first_max_dev"] = sync.max(first_max_dev)
    return out


def policy_features(backbone: Backbone, traj: Rollout, prompt: PromptEmbeds, step: int, guidance: bool, bf16: bool) -> torch.Tensor:
    """The schedule policy's input at a recorded step, recomputed without gradient (θ is frozen in a
    schedule phase, so this equals the rollout's features)."""
    with torch.no_grad(), autocast_context(backbone, bf16):
        return backbone.forward(traj.states[step], prompt, step, traj.num_steps, guidance).features


def token_kl(backbone, reference, traj, prompt, step, logp, guided, config: TrainConfig, bf16: bool) -> torch.Tensor:
    """KL(π_θ || π_ref) of the token action at ``step``: k3 on the sampled tokens, or exact."""
    with torch.no_grad(), swapped_model(backbone, reference), autocast_context(backbone, bf16):
        logp_ref, guided_ref, _ = replay_model_log_prob(backbone, traj, prompt, step, config.guidance)
    if config.kl_estimator == "exact":
        return categorical_kl(guided, guided_ref, traj.fill_mask(step)).cpu()
    return kl_k3(logp, logp_ref)


@contextmanager
def swapped_model(backbone: Backbone, module: torch.nn.Module):
    original = backbone.model
    backbone.model = module
    try:
        yield
    finally:
        backbone.model = original


# =================================================================================================
# Helpers
# =================================================================================================


def rollout_action_mode(config: TrainConfig, phase: str) -> str:
    if config.mode == "naive":
        return "base"
    if phase == "model":
        return config.model_phase_actions
    return "sample"


def should_keep_features(config: TrainConfig, backbone: Backbone, batch: int) -> bool:
    if config.keep_features != "auto":
        return config.keep_features == "yes"
    hf, wf = backbone.feature_grid
    size = config.steps * batch * backbone.feature_dim * hf * wf * 4
    return size <= KEEP_FEATURES_AUTO_BYTES


def sample_train_steps(num_steps: int, fraction: float, rng: torch.Generator) -> list[int]:
    """The steps trained on this epoch: all of them, or a random subset of ``ceil(fraction · T)``."""
    if fraction >= 1.0:
        return list(range(num_steps))
    count = max(1, math.ceil(fraction * num_steps))
    return sorted(torch.randperm(num_steps, generator=rng)[:count].tolist())


def build_references(config, backbone, policy, trains_model, trains_schedule) -> dict[str, torch.nn.Module]:
    """Frozen copies of the initial policies for the KL penalty (only when β > 0)."""
    refs: dict[str, torch.nn.Module] = {}
    if config.kl_beta > 0:
        if trains_model:
            refs["model"] = copy.deepcopy(backbone.model).requires_grad_(False).eval()
        if trains_schedule and policy is not None:
            refs["schedule"] = copy.deepcopy(policy).requires_grad_(False).eval()
    return refs


def score_rewards(rewards: list[Reward], images: torch.Tensor, prompts: list[str], tokens: torch.Tensor) -> torch.Tensor:
    """``[B, J]`` scores; a reward that raises or returns non-finite values stops the run cleanly."""
    columns = []
    for reward in rewards:
        try:
            with torch.no_grad():
                out = reward(images, prompts, tokens=tokens)
        except CogrpoError:
            raise
        except Exception as exc:
            raise RewardError(f"reward '{reward.name}' raised {type(exc).__name__}: {exc}") from exc
        scores = out.scores.detach().float().cpu().reshape(-1)
        if scores.shape[0] != len(prompts):
            raise RewardError(f"reward '{reward.name}' returned {scores.shape[0]} scores for {len(prompts)} images")
        if not torch.isfinite(scores).all():
            bad = (~torch.isfinite(scores)).sum().item()
            raise RewardError(f"reward '{reward.name}' returned {bad} non-finite score(s) (NaN/inf); check the reward model")
        columns.append(scores)
    return torch.stack(columns, dim=1)


def schedule_metrics(traj: Rollout) -> dict[str, float]:
    """``schedule/<component>/mean@<progress>``: the applied schedule averaged over trajectories."""
    num_steps = traj.num_steps
    out = {}
    for mark in PROGRESS_MARKS:
        k = min(num_steps - 1, round(mark * num_steps))
        for c, name in enumerate(SCHEDULE_COMPONENTS):
            out[f"schedule/{name}/mean@{mark:g}"] = traj.schedule[k, :, c].mean().item()
    return out


def format_line(iteration: int, total: int, metrics: dict[str, Any], rewards: list[Reward]) -> str:
    parts = [f"[bold]it {iteration + 1:>4}/{total}[/] [cyan]{metrics['phase']:<8}[/] c{metrics['cycle']}"]
    parts += [f"{r.name} {metrics[f'reward/{r.name}/mean']:.3f}" for r in rewards]
    parts.append(f"zero-std {metrics['adv/zero_std_ratio']:.2f}")
    if "ratio/clipfrac" in metrics:
        parts.append(f"clip {metrics['ratio/clipfrac']:.2f}")
    parts.append(f"{metrics['time/iteration']:.1f}s")
    return "  ".join(parts)


def make_progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not enabled, transient=False,
    )

