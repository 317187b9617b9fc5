"""The ``cogrpo`` command line: train, generate, eval, plugins (+ commands that plugins add).

Errors from bad input are one line (``error: ...``) with exit code 2 and no traceback; set
``COGRPO_DEBUG=1`` for the traceback.
"""

import dataclasses
import functools
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional, get_args, get_origin, get_type_hints

import typer
from rich.console import Console
from rich.table import Table

from cogrpo import __version__
from cogrpo.config import TrainConfig
from cogrpo.errors import CogrpoError, ConfigError

console = Console()
err_console = Console(stderr=True)


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def handle_errors(func):
    """One-line errors with exit code 2 for :class:`CogrpoError` (traceback with COGRPO_DEBUG=1)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CogrpoError as exc:
            if os.environ.get("COGRPO_DEBUG", "") not in ("", "0"):
                raise
            _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except KeyboardInterrupt:
            err_console.print("interrupted: the last checkpoint is intact; continue with --resume RUN_DIR")
            raise typer.Exit(code=130) from None

    return wrapper


class App(typer.Typer):
    """A Typer app whose commands (including plugins' commands) report CogrpoError as one line."""

    def command(self, *args: Any, **kwargs: Any):
        register = super().command(*args, **kwargs)

        def decorator(func):
            register(handle_errors(func))
            return func

        return decorator


app = App(
    name="cogrpo",
    help="Co-GRPO: schedule-aware GRPO for masked diffusion models. `cogrpo train` runs the embedded toy world.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"cogrpo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = None,
) -> None:
    """Co-GRPO: schedule-aware GRPO for masked diffusion models."""


# -- train ----------------------------------------------------------------------------------------------


def _cli_type(hint: Any) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    inner = [a for a in args if a is not type(None)]
    if origin is dict or (inner and get_origin(inner[0]) is dict):
        return Optional[list[str]]
    if origin is list or (inner and get_origin(inner[0]) is list):
        return Optional[str]
    base = inner[0] if inner else hint
    return Optional[base]


def config_parameters() -> list[inspect.Parameter]:
    """One ``--option`` per TrainConfig field, with its help text and help panel."""
    hints = get_type_hints(TrainConfig)
    defaults = TrainConfig()
    params = []
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, list):
            shown = ",".join(str(v) for v in default)
        elif isinstance(default, dict):
            shown = "none"
        else:
            shown = str(default)
        is_bool = hint is bool or get_args(hint) == (bool, type(None))
        decls = [f"{flag}/--no-{f.name.replace('_', '-')}"] if is_bool else [flag]
        option = typer.Option(*decls, help=f.metadata["help"], rich_help_panel=f.metadata["panel"], show_default=shown)
        params.append(
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[_cli_type(hint), option])
        )
    return params


def config_from_cli(config_file: Optional[Path], values: dict[str, Any]) -> TrainConfig:
    """Defaults < config file < command-line options."""
    base = TrainConfig.load(config_file) if config_file else TrainConfig()
    given = {k: v for k, v in values.items() if v is not None}
    if given.get("resume"):
        from cogrpo.run import RUN_CONTROL_FIELDS

        changed = sorted(set(given) - set(RUN_CONTROL_FIELDS))
        if changed or config_file:
            flags = ", ".join("--" + c.replace("_", "-") for c in changed) or "--config"
            raise ConfigError(f"--resume continues a run with its saved config; drop {flags} (only run-control options may change)")
    return TrainConfig.from_dict(given, base=base).validate()


def train(config_file: Optional[Path] = None, **values: Any) -> None:
    """Train a backbone and its schedule policy with Co-GRPO (defaults: the embedded toy world)."""
    from cogrpo.plugins import default_plugin_manager
    from cogrpo.trainer import train as run_training

    config = config_from_cli(config_file, values)
    result = run_training(config, default_plugin_manager(), console=console)
    if os.environ.get("RANK", "0") == "0":
        console.print(f"run directory: {result.run_dir}")


train.__signature__ = inspect.Signature(
    [
        inspect.Parameter(
            "config_file",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=None,
            annotation=Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML or TOML config file (CLI options override it).", rich_help_panel="Run")],
        ),
        *config_parameters(),
    ]
)
app.command(name="train", context_settings={"max_content_width": 120})(train)


# -- generate ---------------------------------------------------------------------------------------------


@app.command()
def generate(
    prompts: Annotated[Optional[list[str]], typer.Argument(help="Prompts (or use --prompts-file).")] = None,
    prompts_file: Annotated[Optional[Path], typer.Option(help="A .txt (one per line) or .jsonl file of prompts.")] = None,
    run: Annotated[Optional[str], typer.Option("--run", "--checkpoint", help="Run or checkpoint directory (trained θ and φ).")] = None,
    backbone: Annotated[str, typer.Option(help="Backbone when no --run is given.")] = "toy",
    backbone_path: Annotated[Optional[str], typer.Option(help="Local backbone weights.")] = None,
    backbone_opt: Annotated[Optional[list[str]], typer.Option(help="Backbone option KEY=VALUE (repeatable).")] = None,
    steps: Annotated[int, typer.Option(help="Sampling steps T.")] = 12,
    schedule: Annotated[str, typer.Option(help="learned (the run's head, mean action) or fixed (the base schedule).")] = "learned",
    per_prompt: Annotated[int, typer.Option(help="Images per prompt.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed (per image: same prompt and seed, same image).")] = 0,
    out: Annotated[Path, typer.Option(help="Output directory for the PNG files.")] = Path("samples"),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32 or bf16.")] = "fp32",
    batch_size: Annotated[int, typer.Option(help="Images per forward.")] = 32,
) -> None:
    """Generate PNG images for prompts with a backbone and a (learned or fixed) schedule."""
    from cogrpo.build import load_prompts
    from cogrpo.eval import load_run_policies
    from cogrpo.generation import generate as run_generate
    from cogrpo.plugins import default_plugin_manager

    pm = default_plugin_manager()
    texts = list(prompts or [])
    if prompts_file is not None:
        texts += load_prompts(pm, str(prompts_file))
    if not texts:
        raise ConfigError("no prompts: pass them as arguments or with --prompts-file")
    if steps < 2:
        raise ConfigError(f"--steps must be >= 2, got {steps}")
    if schedule not in ("learned", "fixed"):
        raise ConfigError(f"--schedule must be learned or fixed, got '{schedule}'")
    config = TrainConfig.from_dict({"backbone": backbone, "backbone_path": backbone_path, "backbone_opt": backbone_opt or [], "device": device, "precision": precision})
    _, bb, actor, label = load_run_policies(pm, run, config)
    mode = "mean" if (schedule == "learned" and actor.policy is not None) else "base"
    gen = run_generate(bb, actor, texts, num_steps=steps, seed=seed, per_prompt=per_prompt, action_mode=mode, batch_size=batch_size, bf16=precision == "bf16")
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    index = []
    for i, image in enumerate(gen.images):
        name = f"{i // per_prompt:04d}_{i % per_prompt:02d}.png"
        Image.fromarray((image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()).save(out / name)
        index.append({"file": name, "prompt": gen.prompts[i // per_prompt], "seed": seed})
    (out / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in index))
    console.print(f"wrote {len(index)} image(s) from {label} ({'learned' if mode == 'mean' else 'fixed'} schedule, T={steps}) to {out}")


# -- eval -------------------------------------------------------------------------------------------------

eval_app = App(help="Evaluate on a benchmark (step sweeps, seeds, held-out rewards), or compare two evaluations.", rich_markup_mode="rich")
app.add_typer(eval_app, name="eval")


def _int_list(text: Optional[str], flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()] if text else []
    except ValueError:
        raise ConfigError(f"{flag} expects comma-separated integers, got '{text}'") from None


@eval_app.callback(invoke_without_command=True)
def eval_main(
    ctx: typer.Context,
    benchmark: Annotated[Optional[str], typer.Option(help="Benchmark plugin (see `cogrpo plugins`).")] = None,
    run: Annotated[Optional[str], typer.Option("--run", "--checkpoint", help="Run or checkpoint directory; omit for the base model.")] = None,
    backbone: Annotated[str, typer.Option(help="Backbone when no --run is given.")] = "toy",
    backbone_path: Annotated[Optional[str], typer.Option(help="Local backbone weights.")] = None,
    backbone_opt: Annotated[Optional[list[str]], typer.Option(help="Backbone option KEY=VALUE (repeatable).")] = None,
    steps: Annotated[Optional[str], typer.Option(help="Step counts, comma-separated (e.g. 8,16,32,48,64).")] = None,
    seeds: Annotated[int, typer.Option(help="Number of seeds (mean and bootstrap 95% CI).")] = 1,
    seed: Annotated[int, typer.Option(help="First seed.")] = 0,
    schedule: Annotated[str, typer.Option(help="learned (the run's head) or fixed (the base schedule).")] = "learned",
    rewards: Annotated[Optional[str], typer.Option(help="Held-out rewards to score the images with, comma-separated.")] = None,
    reward_opt: Annotated[Optional[list[str]], typer.Option(help="Reward option NAME.KEY=VALUE (repeatable).")] = None,
    bench_opt: Annotated[Optional[list[str]], typer.Option(help="Benchmark option KEY=VALUE (repeatable).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Evaluate only the first N items.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output directory (default: eval/<benchmark>-<source>).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32 or bf16.")] = "fp32",
    compare: Annotated[Optional[tuple[str, str]], typer.Option(help="Compare two eval outputs: --compare RUN_A RUN_B.")] = None,
) -> None:
    """Evaluate a run (or the base model) on a benchmark, or compare two evaluations."""
    if ctx.invoked_subcommand is not None:
        return
    handle_errors(_eval_main)(
        benchmark, run, backbone, backbone_path, backbone_opt, steps, seeds, seed, schedule, rewards, reward_opt,
        bench_opt, limit, out, device, precision, compare,
    )


def _eval_main(benchmark, run, backbone, backbone_path, backbone_opt, steps, seeds, seed, schedule, rewards, reward_opt,
               bench_opt, limit, out, device, precision, compare) -> None:
    from cogrpo.config import parse_key_values
    from cogrpo.eval import compare_results, run_eval
    from cogrpo.plugins import default_plugin_manager

    if compare:
        table, _ = compare_results(Path(compare[0]), Path(compare[1]))
        console.print(table)
        return
    if not benchmark:
        raise ConfigError("give --benchmark NAME (see `cogrpo plugins`) or --compare RUN_A RUN_B")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if schedule not in ("learned", "fixed"):
        raise ConfigError(f"--schedule must be learned or fixed, got '{schedule}'")
    pm = default_plugin_manager()
    reward_names = [r.strip() for r in (rewards or "").split(",") if r.strip()]
    config = TrainConfig.from_dict({
        "backbone": backbone, "backbone_path": backbone_path, "backbone_opt": backbone_opt or [], "device": device,
        "precision": precision, "reward_opt": reward_opt or [],
    })
    step_list = _int_list(steps, "--steps")
    if any(s < 2 for s in step_list):
        raise ConfigError(f"--steps must all be >= 2, got {steps}")
    if not step_list:
        step_list = [TrainConfig.load(_run_config_path(run)).steps if run else config.steps]
    source = Path(run).name if run else "base"
    out_dir = out or Path("eval") / f"{benchmark}-{source}"
    results = run_eval(
        pm, benchmark_name=benchmark, source=run, config=config, steps=step_list, seeds=list(range(seed, seed + seeds)),
        schedule=schedule, extra_rewards=reward_names, out_dir=out_dir,
        bench_options=parse_key_values(bench_opt or [], "--bench-opt"), limit=limit, console=console,
    )
    console.print((out_dir / "results.md").read_text())
    console.print(f"wrote {out_dir}/results.json ({len(results['steps'])} step count(s))")


def _run_config_path(run: str) -> Path:
    from cogrpo.checkpoint import find_checkpoint

    return find_checkpoint(run).parent.parent / "config.yaml"


@eval_app.command("geneval-score")
def geneval_score(
    detections: Annotated[Path, typer.Option(help="JSONL of {id, metadata, image_size, detections} per line.")],
) -> None:
    """Score pre-computed detections with GenEval's rules: one JSON line per input, then the summary."""
    from cogrpo.eval import geneval_score_lines

    if not detections.is_file():
        raise ConfigError(f"detections file not found: {detections}")
    verdicts, summary = geneval_score_lines(detections.read_text().splitlines())
    if not verdicts:
        raise ConfigError(f"{detections} holds no detection lines")
    for v in verdicts:
        print(json.dumps(v))
    print(json.dumps({"summary": summary}))


# -- plugins ----------------------------------------------------------------------------------------------


@app.command("plugins")
def plugins_cmd(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List the installed plugins: backbones, rewards, schedule policies, fixed schedules, benchmarks, prompt sets."""
    from cogrpo.plugins import default_plugin_manager, list_plugins

    rows = list_plugins(default_plugin_manager())
    if as_json:
        print(json.dumps([{"kind": r.kind, "name": r.name, "distribution": r.distribution, "plugin": r.plugin, "description": r.description} for r in rows], indent=1))
        return
    table = Table(title=f"cogrpo {__version__} plugins")
    for col in ("kind", "name", "distribution", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.kind.replace("_", " "), r.name, r.distribution, r.description)
    console.print(table)


# -- plugin commands and entry point ----------------------------------------------------------------------


_plugin_commands_registered = False


def get_app() -> typer.Typer:
    """The root app with the installed plugins' commands added (once)."""
    global _plugin_commands_registered
    if not _plugin_commands_registered:
        from cogrpo.plugins import default_plugin_manager

        default_plugin_manager().hook.cogrpo_register_commands(app=app)
        _plugin_commands_registered = True
    return app


def _strip_launcher_local_rank(argv: list[str]) -> list[str]:
    """The ``deepspeed`` launcher appends ``--local_rank=N``; move it into ``LOCAL_RANK``."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg.startswith("--local_rank=") or arg.startswith("--local-rank="):
            os.environ.setdefault("LOCAL_RANK", arg.split("=", 1)[1])
        elif arg in ("--local_rank", "--local-rank") and i + 1 < len(argv):
            os.environ.setdefault("LOCAL_RANK", argv[i + 1])
            skip = True
        else:
            out.append(arg)
    return out


def main() -> None:
    sys.argv = _strip_launcher_local_rank(sys.argv)
    try:
        root = get_app()
    except CogrpoError as exc:
        if os.environ.get("COGRPO_DEBUG", "") not in ("", "0"):
            raise
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
    root()


if __name__ == "__main__":
    main()
