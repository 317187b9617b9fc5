"""Building the pieces of a run from a config and the plugin manager.

Shared by ``cogrpo train``, ``cogrpo generate`` and ``cogrpo eval``: the backbone (θ), the schedule
actor (base schedule + learned head φ), the rewards, the prompts and the optimizers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pluggy
import torch
from torch import nn

from cogrpo import plugins
from cogrpo.config import TrainConfig
from cogrpo.errors import CogrpoError, ConfigError
from cogrpo.protocols import Backbone, Reward
from cogrpo.reward_utils import resolve_device
from cogrpo.schedule import ScheduleActor


def compute_dtype(config: TrainConfig) -> torch.dtype:
    return torch.bfloat16 if config.precision == "bf16" else torch.float32


def build_backbone(pm: pluggy.PluginManager, config: TrainConfig) -> Backbone:
    device = resolve_device(config.device)
    return plugins.create(
        pm,
        "backbone",
        config.backbone,
        device=device,
        dtype=torch.float32,  # master weights stay fp32; bf16 runs under autocast
        path=config.backbone_path,
        **config.backbone_opt,
    )


def build_base_schedule(pm: pluggy.PluginManager, config: TrainConfig, backbone: Backbone):
    if config.base_schedule == "default":
        if config.base_schedule_opt:
            raise ConfigError("--base-schedule-opt needs a named --base-schedule (e.g. cosine), not 'default'")
        return backbone.default_schedule()
    return plugins.create(pm, "fixed_schedule", config.base_schedule, **config.base_schedule_opt)


def build_schedule_policy(pm: pluggy.PluginManager, config: TrainConfig, backbone: Backbone) -> nn.Module | None:
    """The learned head φ (None for naive GRPO, which keeps the fixed schedule)."""
    if config.mode == "naive":
        return None
    policy = plugins.create(
        pm,
        "schedule_policy",
        config.schedule_policy,
        feature_dim=backbone.feature_dim,
        feature_grid=tuple(backbone.feature_grid),
        components=tuple(config.schedule_components),
        **config.schedule_policy_opt,
    )
    return policy.to(backbone.device, torch.float32)


def build_actor(pm: pluggy.PluginManager, config: TrainConfig, backbone: Backbone) -> ScheduleActor:
    base = build_base_schedule(pm, config, backbone)
    return ScheduleActor(base, build_schedule_policy(pm, config, backbone), sigma=config.schedule_sigma)


def reward_options(config: TrainConfig) -> dict[str, dict[str, Any]]:
    """``--reward-opt imagereward.path=X`` -> ``{"imagereward": {"path": "X"}}``."""
    out: dict[str, dict[str, Any]] = {name: {} for name in config.reward}
    for key, value in config.reward_opt.items():
        name, _, option = key.partition(".")
        if not option:
            raise ConfigError(f"--reward-opt expects NAME.KEY=VALUE, got '{key}={value}'")
        if name not in out:
            raise ConfigError(f"--reward-opt names reward '{name}', which is not in --reward {','.join(config.reward)}")
        out[name][option] = value
    return out


def build_rewards(pm: pluggy.PluginManager, config: TrainConfig) -> list[Reward]:
    device = resolve_device(config.reward_device or config.device)
    options = reward_options(config)
    rewards = []
    for name in config.reward:
        opts = dict(options[name])
        path = opts.pop("path", None)
        rewards.append(plugins.create(pm, "reward", name, device=device, dtype=torch.float32, path=path, **opts))
    return rewards


def load_prompts(pm: pluggy.PluginManager, spec: str) -> list[str]:
    """A registered prompt set by name, or a ``.txt`` (one per line) / ``.jsonl`` (``{"prompt": ...}``) file."""
    path = Path(spec)
    if path.suffix in (".txt", ".jsonl", ".json") or path.exists():
        if not path.is_file():
            raise ConfigError(f"prompt file not found: {path}")
        if path.suffix == ".jsonl":
            prompts = [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]
        elif path.suffix == ".json":
            data = json.loads(path.read_text())
            prompts = [d["prompt"] if isinstance(d, dict) else str(d) for d in data]
        else:
            prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        prompts = list(plugins.create(pm, "prompt_set", spec))
    if not prompts:
        raise ConfigError(f"no prompts in '{spec}': give a file with at least one prompt")
    return prompts


def make_optimizer(params: Sequence[nn.Parameter], kind: str, lr: float, weight_decay: float, betas: Sequence[float]):
    params = [p for p in params if p.requires_grad]
    if not params:
        raise CogrpoError("nothing to optimise: the module has no trainable parameters")
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas))


def trajectory_seed(seed: int, iteration: int, index: int, salt: str = "rollout") -> int:
    """A stable 63-bit seed for trajectory ``index`` of an iteration (independent of batching/ranks)."""
    digest = hashlib.blake2b(f"{salt}/{seed}/{iteration}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def trajectory_generators(seed: int, iteration: int, indices: Sequence[int], device: torch.device, salt: str = "rollout"):
    """One generator per trajectory, seeded from (seed, iteration, global trajectory index)."""
    return [torch.Generator(device=device).manual_seed(trajectory_seed(seed, iteration, int(i), salt)) for i in indices]
