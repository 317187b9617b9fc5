"""report.md, results.json and the PNG plots of a set of studies."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cogrpo_experiments.studies import METRIC, StudyResult


def _fmt(summary: dict[str, Any], seeds: int) -> str:
    if seeds == 1:
        return f"{summary['mean']:.3f}"
    lo, hi = summary["ci95"]
    return f"{summary['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def study_to_json(result: StudyResult) -> dict[str, Any]:
    return {
        "name": result.name, "title": result.title, "paper_table": result.paper_table, "description": result.description,
        "arms": {label: {m: meas.summary() for m, meas in metrics.items()} for label, metrics in result.arms.items()},
        "paper": result.paper, "claims": result.claims, "series": result.series, "notes": result.notes,
        "seconds": result.seconds,
    }


def plot_study(result: StudyResult, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label in result.arms if METRIC in result.arms[label] and not label.startswith(("spread", "gain@"))]
    if not labels:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(labels)), 3.8))
    if result.name == "steps-transfer" and result.series:
        steps = result.series["steps"]
        for key, color in (("base", "gray"), ("Co-GRPO", "C0")):
            arms = [result.arms[f"{key} @ {t}"][METRIC].summary() for t in steps]
            means = [a["mean"] for a in arms]
            lo = [a["mean"] - a["ci95"][0] for a in arms]
            hi = [a["ci95"][1] - a["mean"] for a in arms]
            ax.errorbar(steps, means, yerr=[lo, hi], marker="o", capsize=3, color=color, label=key)
        ax.set_xlabel("inference steps T")
        ax.set_xscale("log", base=2)
        ax.legend()
    elif result.name == "cycles" and result.series:
        cycles = result.series["cycles"]
        arms = [result.arms[f"{c} cycles"][METRIC].summary() for c in cycles]
        ax.errorbar(cycles, [a["mean"] for a in arms], yerr=[[a["mean"] - a["ci95"][0] for a in arms], [a["ci95"][1] - a["mean"] for a in arms]], marker="o", capsize=3)
        ax.set_xlabel("alternating cycles")
        ax.set_xticks(cycles)
    else:
        summaries = [result.arms[label][METRIC].summary() for label in labels]
        means = [s["mean"] for s in summaries]
        err = [[s["mean"] - s["ci95"][0] for s in summaries], [s["ci95"][1] - s["mean"] for s in summaries]]
        ax.bar(range(len(labels)), means, yerr=err, capsize=4, color=[f"C{i % 10}" for i in range(len(labels))])
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("toy-GenEval overall")
    ax.set_title(f"{result.paper_table}: {result.title}")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: Sequence[StudyResult], out: Path, *, seeds: int, command: str, settings: dict[str, Any]) -> Path:
    """Write ``report.md``, ``results.json`` and ``plots/<study>.png`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Co-GRPO ablations on the toy world",
        "",
        f"Regenerate with: `{command}`",
        "",
        f"{seeds} seed(s) per arm; numbers are means with a bootstrap 95% CI over seeds. A claim is **reproduced** when "
        "the CI of the paired (same seed) difference excludes 0 on the paper's side, **not reproduced** when it excludes "
        "0 on the other side, and **inconclusive** otherwise. The paper's numbers are Meissonic's (ImageReward, HPSv2 ...); "
        "ours are toy-GenEval overall: compare directions and relative sizes, not values.",
        "",
        "## Summary",
        "",
        "| study | claim | paper | ours: Δ [95% CI] | verdict |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        for c in r.claims:
            d = c["difference"]
            lines.append(f"| {r.paper_table} | {c['claim']} | {c['paper']} | {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] | {c['verdict']} |")
    for r in results:
        plot = plot_study(r, out / "plots" / f"{r.name}.png")
        lines += ["", f"## {r.paper_table} — {r.title} (`{r.name}`)", "", r.description, ""]
        metrics = sorted({m for arm in r.arms.values() for m in arm if not m.startswith("time")})
        shown = [m for m in (METRIC, *[m for m in metrics if m.startswith("reward/")]) if m in metrics]
        lines.append("| arm | " + " | ".join(shown) + " | paper |")
        lines.append("|---|" + "---|" * (len(shown) + 1))
        for label, arm in r.arms.items():
            if label.startswith(("spread", "gain@")):
                continue
            paper = ", ".join(f"{k} {v:g}" for k, v in r.paper.get(label, {}).items())
            cells = [_fmt(arm[m].summary(), seeds) if m in arm else "" for m in shown]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {paper} |")
        if r.claims:
            lines += ["", "| claim | paper | ours: Δ [95% CI] | per seed | verdict |", "|---|---|---|---|---|"]
            for c in r.claims:
                d = c["difference"]
                per_seed = ", ".join(f"{x:+.3f}" for x in d["per_seed"])
                lines.append(f"| {c['claim']} | {c['paper']} | {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] | {per_seed} | **{c['verdict']}** |")
        for note in r.notes:
            lines += ["", note]
        if plot is not None:
            lines += ["", f"![{r.name}](plots/{r.name}.png)"]
    lines += ["", "## Settings", "", "```json", json.dumps(settings, indent=1, default=str), "```", ""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps({"seeds": seeds, "command": command, "settings": settings,
                                                   "studies": [study_to_json(r) for r in results]}, indent=1, default=str))
    return out / "report.md"
