"""Registers the toy world with cogrpo: backbone ``toy``, rewards ``toy-geneval`` / ``toy-quality``,
benchmark ``toy-geneval``, prompt set ``toy-train`` and the ``cogrpo pretrain`` command.

Heavy modules (torch, the model) are imported inside the factories so ``cogrpo plugins`` stays fast.
"""

from pathlib import Path
from typing import Annotated, Any

from cogrpo import hookimpl

#: The recipe of the shipped weights (``weights/README.md``); the command's defaults.
SHIPPED_STEPS = 3000
SHIPPED_SEED = 0
SHIPPED_BATCH_SIZE = 64
SHIPPED_LR = 2e-3


def toy_backbone(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """Toy world MDM (~1M params, 7x7 palette tokens), shipped pretrained weights by default."""
    import torch

    from cogrpo_toyworld.model import ToyBackbone, ToyConfig

    if isinstance(options.get("config"), dict):
        options["config"] = ToyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in options["config"].items()})
    return ToyBackbone(device=device, dtype=dtype or torch.float32, path=path, **options)


def toy_geneval_reward(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """GenEval's rules on the parsed toy grid, in [0, 1] (partial credit per check for training)."""
    import torch

    from cogrpo_toyworld.rewards import ToyGenEvalReward

    return ToyGenEvalReward(device=device or "cpu", dtype=dtype or torch.float32, **options)


def toy_quality_reward(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """Share of the toy canvas's coloured cells inside well-formed shapes, in [0, 1]."""
    import torch

    from cogrpo_toyworld.rewards import ToyQualityReward

    return ToyQualityReward(device=device or "cpu", dtype=dtype or torch.float32, **options)


def toy_geneval_benchmark(*, path: str | None = None, **options: Any):
    """Held-out toy prompts of GenEval's six tasks, 4 images each, strict GenEval verdicts."""
    from cogrpo_toyworld.benchmark import ToyGenEvalBenchmark

    return ToyGenEvalBenchmark(**options)


def toy_train_prompts() -> list[str]:
    """Toy-world training prompts, 32 per GenEval task (disjoint from the toy-geneval benchmark)."""
    from cogrpo_toyworld.prompts import balanced_train_prompts

    return balanced_train_prompts()


@hookimpl
def cogrpo_register_backbones() -> dict:
    return {"toy": toy_backbone}


@hookimpl
def cogrpo_register_rewards() -> dict:
    return {"toy-geneval": toy_geneval_reward, "toy-quality": toy_quality_reward}


@hookimpl
def cogrpo_register_benchmarks() -> dict:
    return {"toy-geneval": toy_geneval_benchmark}


@hookimpl
def cogrpo_register_prompt_sets() -> dict:
    return {"toy-train": toy_train_prompts}


@hookimpl
def cogrpo_register_commands(app: Any) -> None:
    import typer

    @app.command("pretrain", rich_help_panel="Toy world")
    def pretrain_command(
        backbone: Annotated[str, typer.Option(help="Backbone to pretrain (only 'toy' can be trained from scratch).")] = "toy",
        steps: Annotated[int, typer.Option(help="Optimiser steps.", min=1)] = SHIPPED_STEPS,
        seed: Annotated[int, typer.Option(help="Seed of the initial weights, scenes and masks.")] = SHIPPED_SEED,
        batch_size: Annotated[int, typer.Option(help="Scenes per step.", min=1)] = SHIPPED_BATCH_SIZE,
        lr: Annotated[float, typer.Option(help="AdamW learning rate (after a 100-step warm-up).")] = SHIPPED_LR,
        out: Annotated[Path, typer.Option(help="Weights file to write (safetensors).")] = Path("toy-pretrained.safetensors"),
        save_every: Annotated[int, typer.Option(help="Also write <out>-step<S> every S steps (0: off).", min=0)] = 0,
        threads: Annotated[int, typer.Option(help="CPU threads (the shipped weights used 2).", min=1)] = 2,
        quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    ) -> None:
        """Pretrain the toy backbone (BERT-style masked objective on grammar scenes, CPU fp32)."""
        from cogrpo.errors import ConfigError

        if backbone != "toy":
            raise ConfigError(f"pretraining is only implemented for --backbone toy, not '{backbone}'")
        import torch

        from cogrpo_toyworld.pretrain import PretrainConfig, run_pretraining

        torch.set_num_threads(threads)
        recipe = PretrainConfig(steps=steps, seed=seed, batch_size=batch_size, lr=lr)
        command = (
            f"cogrpo pretrain --backbone toy --steps {steps} --seed {seed} --batch-size {batch_size} "
            f"--lr {lr:g} --threads {threads} --out {out.name}"
        )
        summary = run_pretraining(recipe, out, show_progress=not quiet, command=command, save_every=save_every)
        typer.echo(f"wrote {out} (final loss {summary['final_loss']}, {summary['seconds']} s)")
