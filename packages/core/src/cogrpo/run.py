"""The run directory: created once, never silently overwritten, resumable.

::

    runs/<name>/
        config.yaml        the resolved configuration (load it with --config to repeat the run)
        metrics.jsonl      one row per iteration (namespaced metrics, SPEC §6)
        tb/                TensorBoard events
        checkpoints/       iter_<n>/ (safetensors + JSON), latest.json
        eval/              base/ and trained/ benchmark outputs
        plots/             schedule.png, rewards.png
        samples.png        captioned sample grid (base vs trained)
        summary.json       final numbers
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cogrpo.checkpoint import atomic_write_text, find_checkpoint
from cogrpo.config import TrainConfig
from cogrpo.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from cogrpo.distributed import DistContext

#: Fields that may differ between a run and its resumption (they do not change the numbers).
RUN_CONTROL_FIELDS = (
    "resume", "max_iterations", "progress", "threads", "checkpoint_every", "keep_checkpoints", "dist_timeout",
)


class RunDir:
    def __init__(self, path: Path, config: TrainConfig, resuming: bool) -> None:
        self.path = path
        self.config = config
        self.resuming = resuming

    @classmethod
    def open(cls, config: TrainConfig) -> RunDir:
        if config.resume:
            return cls._resume(config)
        path = Path(config.run_dir or f"runs/{config.backbone}-{config.mode}-{time.strftime('%Y%m%d-%H%M%S')}")
        if path.exists() and any(path.iterdir()):
            if (path / "config.yaml").exists() or (path / "checkpoints").exists():
                raise ConfigError(
                    f"run directory {path} already holds a run; continue it with --resume {path} or choose another --run-dir"
                )
        path.mkdir(parents=True, exist_ok=True)
        config = dataclasses.replace(config, run_dir=str(path), resume=None)
        # --max-iterations stops this invocation only; the saved config describes the whole run
        dataclasses.replace(config, max_iterations=None).save(path / "config.yaml")
        return cls(path, config, resuming=False)

    @classmethod
    def open_shared(cls, config: TrainConfig, ctx: DistContext) -> RunDir:
        """:meth:`open` on rank 0 only; every other process gets the same directory and config."""
        if not ctx.active:
            return cls.open(config)

        def open_on_main() -> tuple[str, dict[str, Any], bool]:
            run = cls.open(config)
            return str(run.path), run.config.to_dict(), run.resuming

        path, values, resuming = ctx.on_main(open_on_main)
        return cls(Path(path), TrainConfig(**values), resuming)

    @staticmethod
    def effective_config(config: TrainConfig) -> TrainConfig:
        """The config the run will use: ``config``, or for ``--resume`` the saved one with the
        run-control options given now (reads only; nothing is written)."""
        if not config.resume:
            return config
        path = Path(config.resume)
        saved_file = path / "config.yaml"
        if not saved_file.is_file():
            raise CheckpointError(f"cannot resume {path}: no config.yaml there (is it a cogrpo run directory?)")
        saved = TrainConfig.load(saved_file).validate()
        defaults = TrainConfig()
        control = {  # run-control options given for the resumption (those left at their default keep the saved value)
            name: getattr(config, name)
            for name in RUN_CONTROL_FIELDS
            if name != "resume" and getattr(config, name) != getattr(defaults, name)
        }
        return dataclasses.replace(saved, **control, run_dir=str(path), resume=None)

    @classmethod
    def _resume(cls, config: TrainConfig) -> RunDir:
        path = Path(config.resume)
        merged = cls.effective_config(config)
        try:
            find_checkpoint(path)
            resuming = True
        except CheckpointError:
            resuming = False  # stopped before its first checkpoint: start over in the same directory
            for name in ("metrics.jsonl",):
                (path / name).unlink(missing_ok=True)
        return cls(path, merged, resuming=resuming)

    def describe(self, backbone: Any, policy: Any, rewards: list[Any], total_iterations: int) -> str:
        c = self.config
        n_model = sum(p.numel() for p in backbone.model.parameters())
        n_train = sum(p.numel() for p in backbone.trainable_parameters())
        n_head = sum(p.numel() for p in policy.parameters()) if policy is not None else 0
        weights = ", ".join(f"{r.name}×{w:g}" for r, w in zip(rewards, c.reward_weights))
        verb = "resuming" if self.resuming else "starting"
        return (
            f"[bold]cogrpo[/] {verb} [cyan]{c.mode}[/] run in {self.path}\n"
            f"  backbone {c.backbone}: {n_model / 1e6:.2f}M params ({n_train / 1e6:.2f}M trainable), "
            f"grid {backbone.token_grid[0]}x{backbone.token_grid[1]}, T={c.steps}\n"
            f"  schedule: base '{c.base_schedule}'"
            + (f", head {c.schedule_policy} ({n_head / 1e3:.1f}K params) on {','.join(c.schedule_components)}, σ={c.schedule_sigma:g}" if policy is not None else ", fixed")
            + f"\n  rewards: {weights}; {total_iterations} iterations"
        )

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=2, default=str))
