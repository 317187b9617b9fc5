"""Evaluation: run a benchmark with a backbone and a (fixed or learned) schedule.

Used three ways: the base/trained evaluation around ``cogrpo train``; ``cogrpo eval`` (step sweeps,
several seeds with bootstrap CIs, held-out rewards, ``--compare``); and benchmark plugins' own
tests. Images are generated item by item and streamed to the benchmark's ``evaluate`` so large
benchmarks never sit in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from safetensors.torch import load_file, save_file

from cogrpo import plugins
from cogrpo.build import build_actor, build_backbone, build_base_schedule, build_rewards
from cogrpo.checkpoint import TrainState, find_checkpoint, load_module_state, read_checkpoint
from cogrpo.config import TrainConfig
from cogrpo.errors import CheckpointError, CogrpoError
from cogrpo.generation import generate
from cogrpo.metrics import read_metrics
from cogrpo.plots import captioned_grid, plot_rewards, plot_schedule
from cogrpo.protocols import Backbone, Benchmark, GeneratedItem, Reward
from cogrpo.schedule import ScheduleActor
from cogrpo.stats import bootstrap_ci


@dataclass
class BenchmarkRun:
    """One benchmark pass: its metrics, the schedule it used and a few sample images."""

    metrics: dict[str, float]
    schedule_mean: torch.Tensor  # [T, 4]
    schedule_std: torch.Tensor  # [T, 4]
    samples: torch.Tensor  # [S, 3, H, W] first image of the first S items
    captions: list[str] = field(default_factory=list)


def build_benchmark(pm: pluggy.PluginManager, name: str, options: dict[str, Any] | None = None) -> Benchmark:
    options = dict(options or {})
    path = options.pop("path", None)
    return plugins.create(pm, "benchmark", name, path=path, **options)


def run_benchmark(
    benchmark: Benchmark,
    backbone: Backbone,
    actor: ScheduleActor,
    *,
    num_steps: int,
    seed: int,
    action_mode: str,
    out_dir: Path,
    batch_size: int = 64,
    guidance: bool = True,
    bf16: bool = False,
    extra_rewards: Sequence[Reward] = (),
    limit: int | None = None,
    keep_samples: int = 0,
    console: Console | None = None,
    progress: bool = True,
) -> BenchmarkRun:
    """Generate ``images_per_item`` images per item and let the benchmark score them.

    Extra (held-out) rewards are averaged per item, then over items (mean of per-prompt means),
    and reported as ``reward/<name>``.
    """
    items = benchmark.items()[:limit] if limit else benchmark.items()
    if not items:
        raise CogrpoError(f"benchmark '{benchmark.name}' has no items")
    per_item = benchmark.images_per_item
    chunk = max(1, batch_size // per_item)
    out_dir.mkdir(parents=True, exist_ok=True)
    schedule_sum = schedule_sq = None
    count = 0
    samples: list[torch.Tensor] = []
    captions: list[str] = []
    reward_means: dict[str, list[float]] = {r.name: [] for r in extra_rewards}

    def stream(task_progress: Progress | None, task_id: Any) -> Iterator[GeneratedItem]:
        nonlocal schedule_sum, schedule_sq, count
        for start in range(0, len(items), chunk):
            batch_items = items[start : start + chunk]
            gen = generate(
                backbone, actor, [it.prompt for it in batch_items], num_steps=num_steps, seed=seed,
                per_prompt=per_item, action_mode=action_mode, batch_size=batch_size, guidance=guidance,
                bf16=bf16, first_index=start,
            )
            values = gen.schedule.double()  # [T, n, 4]
            schedule_sum = values.sum(1) if schedule_sum is None else schedule_sum + values.sum(1)
            schedule_sq = (values**2).sum(1) if schedule_sq is None else schedule_sq + (values**2).sum(1)
            count += values.shape[1]
            for reward in extra_rewards:
                flat_prompts = [it.prompt for it in batch_items for _ in range(per_item)]
                metadata = [it.metadata for it in batch_items for _ in range(per_item)]
                scores = reward(gen.images, flat_prompts, tokens=gen.tokens, metadata=metadata).scores
                reward_means[reward.name] += scores.view(len(batch_items), per_item).mean(1).tolist()
            for i, item in enumerate(batch_items):
                sl = slice(i * per_item, (i + 1) * per_item)
                if len(samples) < keep_samples:
                    samples.append(gen.images[sl][0])
                    captions.append(item.prompt)
                yield GeneratedItem(item=item, images=gen.images[sl], tokens=gen.tokens[sl])
            if task_progress is not None:
                task_progress.update(task_id, advance=len(batch_items))

    with Progress(console=console, disable=not progress, transient=True) as bar:
        task_id = bar.add_task(f"eval {benchmark.name} T={num_steps}", total=len(items))
        metrics = dict(benchmark.evaluate(stream(bar, task_id), out_dir))
    for name, values in reward_means.items():
        metrics[f"reward/{name}"] = sum(values) / len(values)
    mean = schedule_sum / count
    std = (schedule_sq / count - mean**2).clamp(min=0).sqrt()
    sample_tensor = torch.stack(samples) if samples else torch.zeros(0)
    return BenchmarkRun(metrics, mean.float(), std.float(), sample_tensor, captions)


# -- around `cogrpo train` ----------------------------------------------------------------------------


def evaluate_base(pm, config: TrainConfig, backbone: Backbone, actor: ScheduleActor, out_dir: Path, console: Console) -> dict:
    """The base model with the default (base) schedule, before any update."""
    benchmark = build_benchmark(pm, config.eval_benchmark_name, config.eval_options)
    console.print(f"evaluating the base model on {benchmark.name} (T={config.steps}, fixed schedule) ...")
    result = run_benchmark(
        benchmark, backbone, actor, num_steps=config.steps, seed=config.eval_seed, action_mode="base", out_dir=out_dir,
        batch_size=config.rollout_batch, guidance=config.guidance, bf16=config.precision == "bf16",
        keep_samples=config.sample_grid, console=console, progress=config.progress,
    )
    if len(result.samples):
        save_file({"images": result.samples.contiguous()}, str(out_dir / "samples.safetensors"))
    return {"metrics": result.metrics, "captions": result.captions}


def finish_run(pm, config: TrainConfig, backbone: Backbone, actor: ScheduleActor, run_dir: Path, state: TrainState, console: Console) -> dict:
    """After the last iteration: evaluate the trained policies, print base vs trained, write plots."""
    summary: dict[str, Any] = {}
    rows = read_metrics(run_dir)
    plot_rewards(rows, config.reward, run_dir / "plots" / "rewards.png")
    default = actor.base_values(config.steps)
    if not config.eval_benchmark_name:
        return summary
    benchmark = build_benchmark(pm, config.eval_benchmark_name, config.eval_options)
    mode = "mean" if actor.policy is not None else "base"
    console.print(f"evaluating the trained model on {benchmark.name} (T={config.steps}, {'learned' if mode == 'mean' else 'fixed'} schedule) ...")
    trained = run_benchmark(
        benchmark, backbone, actor, num_steps=config.steps, seed=config.eval_seed, action_mode=mode,
        out_dir=run_dir / "eval" / "trained", batch_size=config.rollout_batch, guidance=config.guidance,
        bf16=config.precision == "bf16", keep_samples=config.sample_grid, console=console, progress=config.progress,
    )
    plot_schedule(default, trained.schedule_mean, trained.schedule_std, run_dir / "plots" / "schedule.png",
                  title=f"{config.mode}: learned schedule (mean ± std over eval trajectories) vs default")
    summary["trained"] = trained.metrics
    summary["learned_schedule"] = {"mean": trained.schedule_mean.tolist(), "default": default.tolist()}
    base = (state.base_eval or {}).get("metrics")
    if base is not None:
        summary["base"] = base
        summary["delta"] = {k: trained.metrics[k] - base[k] for k in trained.metrics if k in base}
        per_item = getattr(benchmark, "images_per_item", None)
        title = f"{benchmark.name}: base (default schedule) vs trained" + (f", {per_item} images/prompt" if per_item else "")
        console.print(comparison_table(title, base, trained.metrics, "base", "trained"))
        base_samples = run_dir / "eval" / "base" / "samples.safetensors"
        if base_samples.is_file() and len(trained.samples):
            base_images = load_file(str(base_samples))["images"]
            n = min(len(base_images), len(trained.samples))
            captioned_grid([base_images[:n], trained.samples[:n]], ["base", "trained"], trained.captions[:n], run_dir / "samples.png")
    elif len(trained.samples):
        captioned_grid([trained.samples], ["trained"], trained.captions, run_dir / "samples.png")
    return summary


def comparison_table(title: str, a: dict[str, float], b: dict[str, float], label_a: str, label_b: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column(label_a, justify="right")
    table.add_column(label_b, justify="right")
    table.add_column("Δ", justify="right")
    for key in [k for k in a if k in b]:
        delta = b[key] - a[key]
        color = "green" if delta > 0 else "red" if delta < 0 else "white"
        table.add_row(key, f"{a[key]:.4f}", f"{b[key]:.4f}", f"[{color}]{delta:+.4f}[/]")
    return table


# -- `cogrpo eval` ------------------------------------------------------------------------------------


def load_run_policies(pm, source: str | None, config: TrainConfig) -> tuple[TrainConfig, Backbone, ScheduleActor, str]:
    """Backbone and schedule actor from a run / checkpoint directory (or the base model when ``source`` is None).

    :return: ``(config, backbone, actor, label)``.
    """
    if source is None:
        backbone = build_backbone(pm, config)
        return config, backbone, ScheduleActor(build_base_schedule(pm, config, backbone)), "base"
    ckpt = find_checkpoint(source)
    run_dir = ckpt.parent.parent
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir} has no config.yaml: pass a cogrpo run directory or one of its checkpoints")
    run_config = TrainConfig.load(run_dir / "config.yaml")
    run_config.device, run_config.precision = config.device, config.precision
    backbone = build_backbone(pm, run_config)
    actor = build_actor(pm, run_config, backbone)
    loaded = read_checkpoint(ckpt)
    if loaded.model is not None:
        load_module_state(backbone.model, loaded.model, "model")
    if actor.policy is not None and loaded.schedule_policy is not None:
        load_module_state(actor.policy, loaded.schedule_policy, "schedule policy")
    return run_config, backbone, actor, f"{run_dir.name}@{ckpt.name}"


def run_eval(
    pm,
    *,
    benchmark_name: str,
    source: str | None,
    config: TrainConfig,
    steps: Sequence[int],
    seeds: Sequence[int],
    schedule: str,
    extra_rewards: Sequence[str],
    out_dir: Path,
    bench_options: dict[str, Any],
    limit: int | None,
    console: Console,
) -> dict[str, Any]:
    """Evaluate one policy on one benchmark for every step count and seed; write results.json,
    results.md and per-run benchmark outputs under ``out_dir``."""
    benchmark = build_benchmark(pm, benchmark_name, bench_options)
    run_config, backbone, actor, label = load_run_policies(pm, source, config)
    mode = "base" if schedule == "fixed" or actor.policy is None else "mean"
    rewards = []
    if extra_rewards:
        reward_config = TrainConfig(reward=list(extra_rewards), reward_weights=[1.0] * len(extra_rewards),
                                    reward_opt=config.reward_opt, device=config.device, reward_device=config.reward_device)
        rewards = build_rewards(pm, reward_config)
    results: dict[str, Any] = {"benchmark": benchmark.name, "source": label, "schedule": "learned" if mode == "mean" else "fixed", "steps": {}}
    for num_steps in steps:
        per_seed: dict[str, dict[str, float]] = {}
        for seed in seeds:
            run = run_benchmark(
                benchmark, backbone, actor, num_steps=num_steps, seed=seed, action_mode=mode,
                out_dir=out_dir / f"steps{num_steps}" / f"seed{seed}", batch_size=run_config.rollout_batch,
                guidance=run_config.guidance, bf16=config.precision == "bf16", extra_rewards=rewards, limit=limit,
                console=console,
            )
            per_seed[str(seed)] = run.metrics
            console.print(f"  T={num_steps} seed={seed}: " + "  ".join(f"{k} {v:.4f}" for k, v in run.metrics.items()))
        keys = list(next(iter(per_seed.values())))
        summary = {}
        for key in keys:
            mean, low, high = bootstrap_ci([per_seed[s][key] for s in per_seed])
            summary[key] = {"mean": mean, "ci95": [low, high]}
        results["steps"][str(num_steps)] = {"seeds": per_seed, "summary": summary}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    (out_dir / "results.md").write_text(results_markdown(results))
    return results


def results_markdown(results: dict[str, Any]) -> str:
    steps = list(results["steps"])
    keys = list(results["steps"][steps[0]]["summary"])
    seeds = len(next(iter(results["steps"].values()))["seeds"])
    lines = [
        f"# {results['benchmark']} — {results['source']} ({results['schedule']} schedule)",
        "",
        f"Mean over {seeds} seed(s); 95% bootstrap CI in brackets.",
        "",
        "| steps | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for s in steps:
        cells = []
        for k in keys:
            entry = results["steps"][s]["summary"][k]
            lo, hi = entry["ci95"]
            cells.append(f"{entry['mean']:.4f} [{lo:.4f}, {hi:.4f}]" if seeds > 1 else f"{entry['mean']:.4f}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare_results(path_a: Path, path_b: Path) -> tuple[Table, list[dict[str, Any]]]:
    """Side-by-side table of two ``cogrpo eval`` outputs (directories or results.json files)."""
    a, b = (_read_results(p) for p in (path_a, path_b))
    table = Table(title=f"{a['benchmark']}: {a['source']} vs {b['source']}")
    for col in ("steps", "metric", "A", "B", "Δ (B − A)"):
        table.add_column(col, justify="right" if col not in ("metric",) else "left")
    rows = []
    for s in [s for s in a["steps"] if s in b["steps"]]:
        sa, sb = a["steps"][s]["summary"], b["steps"][s]["summary"]
        for key in [k for k in sa if k in sb]:
            va, vb = sa[key]["mean"], sb[key]["mean"]
            rows.append({"steps": int(s), "metric": key, "a": va, "b": vb, "delta": vb - va})
            color = "green" if vb > va else "red" if vb < va else "white"
            table.add_row(s, key, f"{va:.4f}", f"{vb:.4f}", f"[{color}]{vb - va:+.4f}[/]")
    if not rows:
        raise CogrpoError("the two results share no step count and metric; were they run on the same benchmark?")
    return table, rows


def _read_results(path: Path) -> dict[str, Any]:
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise CogrpoError(f"no results.json at {path}: run `cogrpo eval --benchmark NAME --out {path}` first")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise CogrpoError(f"{file} is not valid JSON ({exc})") from exc


def geneval_score_lines(lines: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Score pre-computed detections (the fixture line format): per-line verdicts and the summary."""
    from cogrpo.geneval import Detection, evaluate, summarize

    verdicts, per_tag = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            metadata = row["metadata"]
            detections = [Detection.from_json(d) for d in row["detections"]]
            row_id = row["id"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CogrpoError(f"line {number}: expected a JSON object with id, metadata, image_size and detections ({exc!r})") from exc
        correct, _ = evaluate(metadata, detections)
        verdicts.append({"id": row_id, "correct": correct})
        per_tag.append((metadata["tag"], correct))
    return verdicts, summarize(per_tag)


__all__ = [
    "BenchmarkRun",
    "build_benchmark",
    "compare_results",
    "evaluate_base",
    "finish_run",
    "geneval_score_lines",
    "load_run_policies",
    "run_benchmark",
    "run_eval",
]
