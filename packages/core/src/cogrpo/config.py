"""The one training configuration: typed fields with help text, YAML/TOML loading, validation.

Every field is a ``cogrpo train`` option (``model_lr`` -> ``--model-lr``) whose help is the field's
``help`` metadata; a config file gives defaults that the command line overrides. In a file, keys
may be flat (``model_lr: 1.0e-5``) or nested one level (``model: {lr: 1.0e-5}``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import tomllib
import yaml

from cogrpo.errors import ConfigError
from cogrpo.protocols import SCHEDULE_COMPONENTS

MODES = ("alternating", "joint", "naive", "schedule-only")
#: ``--eval-benchmark auto``: the benchmark that fits a backbone, with its options (none for the
#: others: the 1B backbones' benchmarks need reward weights and minutes of GPU time, so they are
#: opt-in). The toy world evaluates 16 images per held-out prompt around training (the benchmark's
#: own default is GenEval's 4): with 4, the sampling noise of the overall score alone is ±0.025
#: (std over 8 evaluation seeds; 0.017 at 16), as large as the effect the main job measures.
DEFAULT_EVAL_BENCHMARKS: dict[str, tuple[str, dict[str, Any]]] = {"toy": ("toy-geneval", {"images_per_item": 16})}
PHASES = ("model", "schedule", "joint")


def _f(default: Any, help: str, panel: str, **kw: Any) -> Any:
    meta = {"help": help, "panel": panel, **kw}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Co-GRPO training configuration. The defaults are the embedded toy world's main job."""

    # -- Run --------------------------------------------------------------------------------------
    run_dir: str | None = _f(None, "Run directory (default: runs/<backbone>-<mode>-<time>).", "Run")
    resume: str | None = _f(None, "Resume the run in this directory from its latest checkpoint.", "Run")
    seed: int = _f(0, "Seed for prompts, rollouts and updates: same seed and config, same numbers.", "Run")
    device: str = _f("auto", "Device for the backbone and schedule policy: auto, cpu, cuda, cuda:1 ...", "Run")
    precision: str = _f("fp32", "fp32, or bf16 (autocast on GPU; log-probs stay fp32).", "Run")
    threads: int | None = _f(None, "torch CPU threads (default: torch's choice).", "Run")
    checkpoint_every: int = _f(10, "Save a checkpoint every N iterations (and at the end).", "Run")
    keep_checkpoints: int = _f(2, "Keep the newest N checkpoints.", "Run")
    max_iterations: int | None = _f(None, "Stop after this many iterations in total (resumable).", "Run")
    progress: bool = _f(True, "Show progress bars.", "Run")

    # -- Model ------------------------------------------------------------------------------------
    backbone: str = _f("toy", "Backbone plugin (see `cogrpo plugins`).", "Model")
    backbone_path: str | None = _f(None, "Local weights for the backbone (directory or file).", "Model")
    backbone_opt: dict[str, Any] = _f({}, "Backbone option KEY=VALUE (repeatable).", "Model")
    init_from: str | None = _f(None, "Start θ and φ from a run directory or checkpoint directory.", "Model")
    prompts: str = _f("toy-train", "Training prompts: a registered prompt set or a .txt/.jsonl file.", "Model")

    # -- Rewards ----------------------------------------------------------------------------------
    reward: list[str] = _f(["toy-geneval", "toy-quality"], "Reward plugins, comma-separated.", "Rewards")
    reward_weights: list[float] = _f([0.5, 0.5], "Advantage weights, one per reward (comma-separated).", "Rewards")
    reward_device: str | None = _f(None, "Device for the reward models (default: --device).", "Rewards")
    reward_opt: dict[str, Any] = _f({}, "Reward option NAME.KEY=VALUE (repeatable), e.g. imagereward.path=...", "Rewards")

    # -- Sampling and schedule --------------------------------------------------------------------
    steps: int = _f(12, "Sampling steps T during training.", "Schedule")
    guidance: bool = _f(True, "Classifier-free guidance (both branches in one forward).", "Schedule")
    base_schedule: str = _f("default", "Fixed base schedule: 'default' (the backbone's) or a registered one.", "Schedule")
    base_schedule_opt: dict[str, Any] = _f({}, "Base schedule option KEY=VALUE (e.g. gamma=1.5).", "Schedule")
    schedule_policy: str = _f("paper-head", "Learned schedule-policy head.", "Schedule")
    schedule_policy_opt: dict[str, Any] = _f({}, "Schedule-policy option KEY=VALUE.", "Schedule")
    schedule_components: list[str] = _f(list(SCHEDULE_COMPONENTS), "Trainable schedule components.", "Schedule")
    schedule_sigma: float = _f(0.3, "σ of the Gaussian schedule policy (pre-activation space).", "Schedule")
    model_phase_actions: str = _f("sample", "Schedule actions during model phases: sample or mean.", "Schedule")
    keep_features: str = _f("auto", "Store policy features during rollouts: auto, yes or no.", "Schedule")
    rollout_batch: int = _f(64, "Trajectories per backbone forward during rollouts and decoding.", "Schedule")

    # -- GRPO -------------------------------------------------------------------------------------
    mode: str = _f("alternating", "alternating | joint | naive | schedule-only.", "GRPO")
    cycles: int = _f(3, "Alternating cycles (each: model iterations, then schedule iterations).", "GRPO")
    model_iterations: int = _f(16, "N_m: model-phase iterations per cycle.", "GRPO")
    schedule_iterations: int = _f(8, "N_s: schedule-phase iterations per cycle.", "GRPO")
    clip_eps_low: float = _f(0.2, "ε_low: the ratio is clipped below at 1 − ε_low.", "GRPO")
    clip_eps_high: float = _f(0.2, "ε_high: the ratio is clipped above at 1 + ε_high.", "GRPO")
    kl_beta: float = _f(0.0, "β of the KL penalty to the initial policies (0 as in the paper).", "GRPO")
    kl_estimator: str = _f("k3", "Token-action KL: k3 (sampled) or exact (categorical).", "GRPO")
    inner_epochs: int = _f(1, "Passes over each iteration's trajectories.", "GRPO")
    timestep_fraction: float = _f(0.5, "Fraction of the T steps trained on (random subset per epoch).", "GRPO")
    max_grad_norm: float | None = _f(1.0, "Gradient-norm clip per optimizer step (none to disable).", "GRPO")
    ratio_check_tol: float = _f(1e-5, "Warn when the on-policy ratio deviates from 1 by more than this.", "GRPO")

    # -- Model phase ------------------------------------------------------------------------------
    model_group_size: int = _f(8, "G in model phases (trajectories per prompt).", "Model phase")
    model_batch_size: int = _f(32, "Trajectories per model-phase iteration (a multiple of G).", "Model phase")
    model_micro_batch: int = _f(
        32, "Trajectories per forward/backward in model updates (summed over processes when distributed).", "Model phase"
    )
    model_grad_accum: int | None = _f(None, "Micro-batches per optimizer step (default: all of them).", "Model phase")
    model_lr: float = _f(2e-4, "Learning rate of θ.", "Model phase")
    model_weight_decay: float = _f(0.0, "Weight decay of θ.", "Model phase")
    model_optimizer: str = _f("adamw", "Optimizer of θ: adamw, adam or sgd.", "Model phase")
    model_betas: list[float] = _f([0.9, 0.95], "Adam betas of θ.", "Model phase")

    # -- Schedule phase ---------------------------------------------------------------------------
    schedule_group_size: int = _f(8, "G in schedule phases.", "Schedule phase")
    schedule_batch_size: int = _f(64, "Trajectories per schedule-phase iteration (a multiple of G).", "Schedule phase")
    schedule_micro_batch: int = _f(
        64, "Trajectories per forward/backward in schedule updates (summed over processes when distributed).", "Schedule phase"
    )
    schedule_grad_accum: int | None = _f(None, "Micro-batches per optimizer step (default: all).", "Schedule phase")
    schedule_lr: float = _f(1e-3, "Learning rate of φ.", "Schedule phase")
    schedule_weight_decay: float = _f(0.0, "Weight decay of φ.", "Schedule phase")
    schedule_optimizer: str = _f("adamw", "Optimizer of φ: adamw, adam or sgd.", "Schedule phase")
    schedule_betas: list[float] = _f([0.9, 0.95], "Adam betas of φ.", "Schedule phase")

    # -- Evaluation -------------------------------------------------------------------------------
    eval_benchmark: str | None = _f(
        "auto", "Benchmark run before and after training: auto (toy-geneval for the toy backbone, else none), a name, or none.", "Evaluation"
    )
    eval_opt: dict[str, Any] = _f(
        {}, "Benchmark option KEY=VALUE, over the auto benchmark's own (toy-geneval: images_per_item=16).", "Evaluation"
    )
    eval_before: bool = _f(True, "Evaluate the base model with the default schedule before training.", "Evaluation")
    eval_seed: int = _f(1234, "Seed of the evaluation rollouts.", "Evaluation")
    sample_grid: int = _f(16, "Prompts in the captioned sample grid (0 to skip).", "Evaluation")

    # -- Distributed ------------------------------------------------------------------------------
    distributed: str = _f(
        "none", "none, ddp or deepspeed (launch with torchrun or deepspeed; see docs/distributed.md).", "Distributed"
    )
    zero: int = _f(2, "DeepSpeed ZeRO stage of the model θ (1, 2 or 3); the schedule head φ stays replicated.", "Distributed")
    deepspeed_config: str | None = _f(
        None, "JSON file of extra DeepSpeed settings (e.g. offload, bucket sizes) merged over cogrpo's.", "Distributed"
    )
    dist_timeout: int = _f(1800, "Seconds a process waits in a collective before the run fails.", "Distributed")

    # ------------------------------------------------------------------------------------------------

    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` (one line, with the fix) for any invalid value; return self."""

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(self.mode in MODES, f"--mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        need(self.steps >= 2, f"--steps must be >= 2 (a step count below 2 cannot re-mask), got {self.steps}")
        for phase in ("model", "schedule"):
            g, b = getattr(self, f"{phase}_group_size"), getattr(self, f"{phase}_batch_size")
            need(g >= 2, f"--{phase}-group-size must be >= 2 (GRPO compares trajectories within a group), got {g}")
            need(b > 0, f"--{phase}-batch-size must be positive, got {b}")
            need(b % g == 0, f"--{phase}-batch-size ({b}) must be a multiple of --{phase}-group-size ({g})")
            mb = getattr(self, f"{phase}_micro_batch")
            need(mb > 0, f"--{phase}-micro-batch must be positive, got {mb}")
            lr = getattr(self, f"{phase}_lr")
            need(math.isfinite(lr) and lr >= 0, f"--{phase}-lr must be a finite number >= 0, got {lr}")
            need(getattr(self, f"{phase}_weight_decay") >= 0, f"--{phase}-weight-decay must be >= 0")
            opt = getattr(self, f"{phase}_optimizer")
            need(opt in ("adamw", "adam", "sgd"), f"--{phase}-optimizer must be adamw, adam or sgd, got '{opt}'")
            betas = getattr(self, f"{phase}_betas")
            need(len(betas) == 2 and all(0 <= x < 1 for x in betas), f"--{phase}-betas must be two numbers in [0, 1)")
            accum = getattr(self, f"{phase}_grad_accum")
            need(accum is None or accum > 0, f"--{phase}-grad-accum must be positive")
        for name in ("clip_eps_low", "clip_eps_high"):
            eps = getattr(self, name)
            need(eps > 0, f"--{name.replace('_', '-')} must be > 0, got {eps}")
        need(self.kl_beta >= 0, f"--kl-beta must be >= 0, got {self.kl_beta}")
        need(self.kl_estimator in ("k3", "exact"), f"--kl-estimator must be k3 or exact, got '{self.kl_estimator}'")
        need(self.inner_epochs >= 1, f"--inner-epochs must be >= 1, got {self.inner_epochs}")
        need(0 < self.timestep_fraction <= 1, f"--timestep-fraction must be in (0, 1], got {self.timestep_fraction}")
        need(self.schedule_sigma > 0, f"--schedule-sigma must be > 0, got {self.schedule_sigma}")
        need(self.cycles >= 1, f"--cycles must be >= 1, got {self.cycles}")
        need(self.model_iterations >= 0 and self.schedule_iterations >= 0, "iterations per phase must be >= 0")
        need(self.total_iterations > 0, "nothing to train: --model-iterations and --schedule-iterations are both 0")
        need(len(self.reward) > 0, "give at least one --reward")
        need(len(set(self.reward)) == len(self.reward), f"--reward lists a reward twice: {','.join(self.reward)}")
        need(
            len(self.reward_weights) == len(self.reward),
            f"{len(self.reward)} rewards but {len(self.reward_weights)} --reward-weights; give one weight per reward",
        )
        need(all(math.isfinite(w) for w in self.reward_weights), "--reward-weights must be finite numbers")
        unknown = [c for c in self.schedule_components if c not in SCHEDULE_COMPONENTS]
        need(not unknown, f"unknown --schedule-components {unknown}; choose from {','.join(SCHEDULE_COMPONENTS)}")
        need(
            bool(self.schedule_components) or self.mode == "naive",
            "--schedule-components is empty: train at least one component, or use --mode naive",
        )
        need(self.model_phase_actions in ("sample", "mean"), "--model-phase-actions must be sample or mean")
        need(self.keep_features in ("auto", "yes", "no"), "--keep-features must be auto, yes or no")
        need(self.precision in ("fp32", "bf16"), f"--precision must be fp32 or bf16, got '{self.precision}'")
        need(self.rollout_batch > 0, "--rollout-batch must be positive")
        need(self.checkpoint_every > 0, "--checkpoint-every must be positive")
        need(self.keep_checkpoints >= 1, "--keep-checkpoints must be >= 1")
        need(self.max_iterations is None or self.max_iterations >= 0, "--max-iterations must be >= 0")
        need(self.distributed in ("none", "ddp", "deepspeed"), "--distributed must be none, ddp or deepspeed")
        need(self.zero in (1, 2, 3), f"--zero must be 1, 2 or 3, got {self.zero}")
        need(self.dist_timeout > 0, f"--dist-timeout must be positive, got {self.dist_timeout}")
        need(
            self.deepspeed_config is None or self.distributed == "deepspeed",
            "--deepspeed-config needs --distributed deepspeed",
        )
        need(self.ratio_check_tol > 0, "--ratio-check-tol must be > 0")
        return self

    def _eval_choice(self) -> tuple[str | None, dict[str, Any]]:
        """``(benchmark, its own options)``: ``auto`` resolved against the backbone."""
        if self.eval_benchmark == "auto":
            return DEFAULT_EVAL_BENCHMARKS.get(self.backbone, (None, {}))
        return self.eval_benchmark or None, {}

    @property
    def eval_benchmark_name(self) -> str | None:
        """The benchmark evaluated around training (``auto`` resolved against the backbone)."""
        return self._eval_choice()[0]

    @property
    def eval_options(self) -> dict[str, Any]:
        """Options of that benchmark: the ``auto`` choice's own, updated with ``--eval-opt``."""
        return {**self._eval_choice()[1], **self.eval_opt}

    # -- the phase plan ---------------------------------------------------------------------------

    @property
    def total_iterations(self) -> int:
        return self.cycles * (self.model_iterations + self.schedule_iterations)

    def phase_plan(self) -> list[tuple[str, int]]:
        """``(phase, cycle)`` for every iteration. Alternating: per cycle N_m model then N_s schedule
        iterations; the other modes run the same total number of iterations in one phase."""
        per_cycle = self.model_iterations + self.schedule_iterations
        single = {"joint": "joint", "naive": "model", "schedule-only": "schedule"}.get(self.mode)
        plan: list[tuple[str, int]] = []
        for cycle in range(self.cycles):
            if single is None:
                plan += [("model", cycle)] * self.model_iterations + [("schedule", cycle)] * self.schedule_iterations
            else:
                plan += [(single, cycle)] * per_cycle
        return plan

    def phase_settings(self, phase: str) -> PhaseSettings:
        """Group size, batch and micro-batching of a phase (joint and naive use the model phase's)."""
        key = "schedule" if phase == "schedule" else "model"
        return PhaseSettings(
            group_size=getattr(self, f"{key}_group_size"),
            batch_size=getattr(self, f"{key}_batch_size"),
            micro_batch=getattr(self, f"{key}_micro_batch"),
            grad_accum=getattr(self, f"{key}_grad_accum"),
        )

    # -- (de)serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        """Write the resolved config as YAML (loadable with ``--config``)."""
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
        """A config from flat or one-level-nested keys, on top of ``base`` (default: the defaults)."""
        flat = flatten_keys(values)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(flat) - names)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)} (see `cogrpo train --help`)")
        current = (base or cls()).to_dict()
        hints = get_type_hints(cls)
        for key, value in flat.items():
            current[key] = coerce(key, value, hints[key])
        return cls(**current)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Load a YAML or TOML file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            if path.suffix == ".toml":
                values = tomllib.loads(path.read_text())
            else:
                values = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from exc
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a mapping of config keys")
        return cls.from_dict(values)


@dataclass(frozen=True)
class PhaseSettings:
    group_size: int
    batch_size: int
    micro_batch: int
    grad_accum: int | None


def flatten_keys(values: dict[str, Any]) -> dict[str, Any]:
    """``{"model": {"lr": 1}}`` -> ``{"model_lr": 1}``; option dicts (``*_opt``) stay as they are."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        key = key.replace("-", "_")
        if isinstance(value, dict) and not key.endswith("_opt"):
            for sub, inner in value.items():
                flat[f"{key}_{sub.replace('-', '_')}"] = inner
        else:
            flat[key] = value
    return flat


def parse_option_value(text: str) -> Any:
    """A CLI option value as YAML: ``3`` -> 3, ``1e-4`` -> 0.0001, ``true`` -> True, ``[1, 2]`` -> list."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _is_float(value):
        return float(value)
    return value


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_key_values(items: list[str] | dict[str, Any], option: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values parsed as YAML)."""
    if isinstance(items, dict):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{option} expects KEY=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_option_value(value.strip())
    return out


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Coerce a file or CLI value to the field's type, with a one-line error on failure."""
    origin, args = get_origin(hint), get_args(hint)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args):
        if type(None) in args:
            return None
        raise ConfigError(f"{key} cannot be empty")
    inner = [a for a in args if a is not type(None)]
    if origin is not None and type(None) in args and len(inner) == 1:
        return coerce(key, value, inner[0])
    try:
        if hint is bool or (inner == [bool]):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if origin is list:
            (item_type,) = args
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            return [coerce(key, v, item_type) for v in value]
        if origin is dict:
            if isinstance(value, (list, tuple)):
                return parse_key_values(list(value), f"--{key.replace('_', '-')}")
            if isinstance(value, str):
                return parse_key_values([value], f"--{key.replace('_', '-')}")
            return dict(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: cannot read {value!r} as {getattr(hint, '__name__', hint)}") from exc
    return value


def config_json(config: TrainConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)
