"""Registers ``cogrpo experiment NAME`` with the cogrpo command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cogrpo import hookimpl


def experiment(
    name: Annotated[str, typer.Argument(help="A study (schedule-sensitivity, action-space, steps-transfer, cycles, strategy, transfer-rewards) or 'all'.")],
    seeds: Annotated[int, typer.Option(help="Seeds per arm (mean and bootstrap 95% CI).")] = 3,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny settings (a smoke test of the whole study).")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Output directory (default: experiments/<name>).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads.")] = None,
    backbone_path: Annotated[Optional[str], typer.Option(help="Other toy weights than the shipped ones.")] = None,
) -> None:
    """Run one of the paper's ablations on the toy world: report.md, results.json and PNG plots."""
    import dataclasses
    import sys

    import torch
    from rich.console import Console

    from cogrpo.errors import ConfigError
    from cogrpo.plugins import default_plugin_manager
    from cogrpo_experiments.lab import Lab, full_settings, quick_settings
    from cogrpo_experiments.report import write_report
    from cogrpo_experiments.studies import STUDIES, run_study

    names = list(STUDIES) if name == "all" else [name]
    unknown = [n for n in names if n not in STUDIES]
    if unknown:
        raise ConfigError(f"unknown study '{unknown[0]}'; choose from {', '.join(STUDIES)} or 'all'")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if threads:
        torch.set_num_threads(threads)
    console = Console()
    settings = quick_settings() if quick else full_settings()
    if backbone_path:
        settings.base["backbone_path"] = backbone_path
    out_dir = out or Path("experiments") / name
    lab = Lab(default_plugin_manager(), out_dir, settings, seeds=range(seeds), console=console)
    results = []
    for study in names:
        console.print(f"[bold]{study}[/] ({seeds} seed(s){', quick' if quick else ''}) ...")
        result = run_study(study, lab)
        for claim in result.claims:
            d = claim["difference"]
            console.print(f"  {claim['verdict']:>15}: {claim['claim']} (Δ {d['mean']:+.3f}, CI [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}])")
        console.print(f"  {result.seconds / 60:.1f} min")
        results.append(result)
    command = "cogrpo experiment " + " ".join(sys.argv[sys.argv.index("experiment") + 1 :]) if "experiment" in sys.argv else f"cogrpo experiment {name}"
    report = write_report(results, out_dir, seeds=seeds, command=command, settings=dataclasses.asdict(settings))
    console.print(f"wrote {report}")


@hookimpl
def cogrpo_register_commands(app: typer.Typer) -> None:
    app.command("experiment")(experiment)
