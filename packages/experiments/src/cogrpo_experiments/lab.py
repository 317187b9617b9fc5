"""The study runner: cached training runs and evaluations, and paired comparisons over seeds.

Every training run is keyed by its resolved configuration (a hash), so studies that need the same
arm (e.g. the alternating all-components run is the last row of Table 5a, the "alternating" row of
5d, the source of the cycle curve of 5c and of the step sweep of 5b) train it once. Evaluations are
cached the same way. Everything lands under ``<out>/runs`` and ``<out>/evals``; re-running a study
reuses what is there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
import torch
from rich.console import Console

from cogrpo.build import build_backbone, build_rewards
from cogrpo.config import TrainConfig
from cogrpo.eval import build_benchmark, load_run_policies, run_benchmark
from cogrpo.schedule import ScheduleActor
from cogrpo.stats import bootstrap_ci
from cogrpo.trainer import train


@dataclass
class Settings:
    """The study-wide settings (full or ``--quick``)."""

    base: dict[str, Any]  # TrainConfig overrides shared by every training arm
    eval_limit: int | None  # evaluate the first N benchmark items (None: all)
    eval_images_per_item: int
    sensitivity_steps: tuple[int, int] = (4, 12)  # Table 2's "few" and "many" steps
    sweep_steps: list[int] = field(default_factory=lambda: [4, 6, 8, 12, 16, 24])  # Table 5b's step counts
    reference_steps: int = 4  # Appendix B: the trained model's step count that the base model must match
    eval_batch: int = 64
    benchmark: str = "toy-geneval"
    held_out_reward: str = "toy-quality"


def full_settings() -> Settings:
    """The main job's settings as they were for docs/results-toy.md (3 × (8 + 6); the main job
    now runs 3 × (16 + 8)), pinned, with one change that makes every arm compute-matched: both
    phases roll out the same 32 trajectories (G = 8) per iteration, so naive, alternating, joint and
    schedule-only arms of the same length see the same number of rollouts (42 × 32)."""
    base = dict(
        backbone="toy", prompts="toy-train", reward=["toy-geneval", "toy-quality"], reward_weights=[0.5, 0.5],
        eval_benchmark=None, progress=False, steps=12, cycles=3, model_iterations=8, schedule_iterations=6,
        model_group_size=8, schedule_group_size=8, model_batch_size=32, schedule_batch_size=32,
        model_lr=2e-4, schedule_lr=1e-3, timestep_fraction=0.5,
    )
    return Settings(base=base, eval_limit=None, eval_images_per_item=4)


def quick_settings() -> Settings:
    """Tiny settings for the test suite: a couple of iterations, a handful of eval prompts."""
    settings = full_settings()
    settings.base.update(
        cycles=1, model_iterations=1, schedule_iterations=1, model_batch_size=8, schedule_batch_size=8,
        model_group_size=4, schedule_group_size=4, model_micro_batch=8, schedule_micro_batch=8, steps=4,
    )
    settings.eval_limit = 3
    settings.eval_images_per_item = 1
    settings.sensitivity_steps = (3, 4)
    settings.sweep_steps = [3, 4]
    settings.reference_steps = 3
    return settings


@dataclass
class Measurement:
    """One number per seed for one arm."""

    values: dict[int, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        seeds = sorted(self.values)
        mean, low, high = bootstrap_ci([self.values[s] for s in seeds])
        return {"mean": mean, "ci95": [low, high], "per_seed": {str(s): self.values[s] for s in seeds}}


def paired_difference(a: Measurement, b: Measurement) -> dict[str, Any]:
    """``b − a`` per seed (the same seeds: paired), with its mean and bootstrap 95% CI."""
    seeds = sorted(set(a.values) & set(b.values))
    diffs = [b.values[s] - a.values[s] for s in seeds]
    mean, low, high = bootstrap_ci(diffs)
    return {"mean": mean, "ci95": [low, high], "per_seed": diffs}


def verdict(diff: dict[str, Any], expected_sign: int) -> str:
    """``reproduced`` when the CI of the paired difference excludes 0 on the paper's side,
    ``not reproduced`` when it excludes 0 on the other side, else ``inconclusive``."""
    low, high = diff["ci95"]
    if expected_sign > 0:
        return "reproduced" if low > 0 else "not reproduced" if high < 0 else "inconclusive"
    return "reproduced" if high < 0 else "not reproduced" if low > 0 else "inconclusive"


class Lab:
    """Trains and evaluates arms with caching; the studies call :meth:`train_arm` and :meth:`evaluate`."""

    def __init__(self, pm: pluggy.PluginManager, out: Path, settings: Settings, seeds: Sequence[int], console: Console) -> None:
        self.pm = pm
        self.out = out
        self.settings = settings
        self.seeds = list(seeds)
        self.console = console
        self.train_seconds = 0.0
        self.eval_seconds = 0.0

    # -- training ---------------------------------------------------------------------------------

    def config(self, overrides: dict[str, Any], seed: int) -> TrainConfig:
        values = {**self.settings.base, **overrides, "seed": seed}
        return TrainConfig.from_dict(values).validate()

    def train_arm(self, overrides: dict[str, Any], seed: int) -> Path:
        """The run directory of this arm and seed (trained now unless cached). Every run keeps a
        checkpoint at the end of each cycle (for the cycles study)."""
        config = self.config(overrides, seed)
        per_cycle = config.model_iterations + config.schedule_iterations
        config = dataclasses.replace(config, checkpoint_every=per_cycle, keep_checkpoints=config.cycles + 1)
        key = _hash({k: v for k, v in config.to_dict().items() if k not in ("run_dir", "progress", "threads")})
        run_dir = self.out / "runs" / f"{key}-seed{seed}"
        if (run_dir / "summary.json").is_file():
            return run_dir
        if run_dir.exists():  # an interrupted earlier attempt: start it again
            import shutil

            shutil.rmtree(run_dir)
        t0 = time.perf_counter()
        train(dataclasses.replace(config, run_dir=str(run_dir)), self.pm, console=Console(quiet=True))
        self.train_seconds += time.perf_counter() - t0
        return run_dir

    # -- evaluation -------------------------------------------------------------------------------

    def evaluate(
        self,
        source: Path | None,
        *,
        steps: int,
        seed: int,
        schedule: str = "learned",
        gamma: float | None = None,
        held_out: bool = False,
    ) -> dict[str, float]:
        """Benchmark metrics of a run/checkpoint (or the base model when ``source`` is None).

        :param gamma: evaluate with the backbone's default schedule but a cosine-γ re-mask ratio
            (the paper's Table 2 perturbation) instead of the run's schedule.
        """
        s = self.settings
        spec = {
            "source": str(source) if source else None, "steps": steps, "seed": seed, "schedule": schedule,
            "gamma": gamma, "held_out": held_out, "limit": s.eval_limit, "per_item": s.eval_images_per_item,
            "benchmark": s.benchmark,
        }
        key = _hash(spec)
        cache = self.out / "evals" / f"{key}.json"
        if cache.is_file():
            return json.loads(cache.read_text())["metrics"]
        t0 = time.perf_counter()
        base_config = TrainConfig.from_dict({k: v for k, v in s.base.items() if k in ("backbone", "backbone_opt", "backbone_path")})
        config, backbone, actor, _ = load_run_policies(self.pm, str(source) if source else None, base_config)
        if gamma is not None:
            actor = ScheduleActor(dataclasses.replace(backbone.default_schedule(), gamma=float(gamma)))
        mode = "mean" if schedule == "learned" and actor.policy is not None else "base"
        benchmark = build_benchmark(self.pm, s.benchmark, {"images_per_item": s.eval_images_per_item})
        rewards = []
        if held_out:
            reward_config = TrainConfig(reward=[s.held_out_reward], reward_weights=[1.0], device="cpu")
            rewards = build_rewards(self.pm, reward_config)
        result = run_benchmark(
            benchmark, backbone, actor, num_steps=steps, seed=1000 + seed, action_mode=mode,
            out_dir=self.out / "evals" / key, batch_size=s.eval_batch, extra_rewards=rewards, limit=s.eval_limit,
            progress=False,
        )
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"spec": spec, "metrics": result.metrics}, indent=1))
        self.eval_seconds += time.perf_counter() - t0
        return result.metrics

    def base_backbone_steps(self) -> int:
        return self.config({}, 0).steps

    def reward_model(self, name: str):
        return build_rewards(self.pm, TrainConfig(reward=[name], reward_weights=[1.0], device="cpu"))[0]

    def backbone(self):
        return build_backbone(self.pm, self.config({}, 0))


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def checkpoints_by_iteration(run_dir: Path) -> dict[int, Path]:
    """``{iteration: checkpoint dir}`` of a run (its state.json's iteration)."""
    out = {}
    for ckpt in sorted((run_dir / "checkpoints").glob("iter_*")):
        if (ckpt / "state.json").is_file():
            out[json.loads((ckpt / "state.json").read_text())["train_state"]["iteration"]] = ckpt
    return out


def torch_threads() -> int:
    return torch.get_num_threads()
