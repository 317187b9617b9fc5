"""The main job's acceptance measurement: `cogrpo train` over several seeds, base vs trained.

Runs ``cogrpo train --seed S --threads 2 --no-progress [EXTRA]`` once per seed, one after another
(never in parallel: on 2 cores that doubles every wall time), and reports from each run's
``summary.json`` and ``eval/*/results.jsonl``:

* the held-out toy-GenEval per task: the base row, one row per seed, mean ± std over the seeds;
* the gain (mean trained − base) against the seed-to-seed standard deviation;
* the same, re-scored on the first K images of each prompt (``--first-images 4``: GenEval's
  4 images per prompt, taken from the 16 that the main job evaluates);
* wall time of each command (everything: start-up, both evaluations, plots) and of its training;
* the learned schedule, mean over seeds, against the default.

Usage::

    .venv/bin/python bench/bench_main_job.py                       # seeds 0,1,2, the defaults
    .venv/bin/python bench/bench_main_job.py --seeds 0,1,2,3,4 --json main_job.json
    .venv/bin/python bench/bench_main_job.py --out /tmp/mj -- --model-iterations 8 --schedule-iterations 6

Arguments after ``--`` go to ``cogrpo train`` unchanged. Runs whose directory already holds a
``summary.json`` are reused (delete the folder to rerun them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from cogrpo.geneval import GENEVAL_TAGS as TAGS
from cogrpo.geneval import summarize
from cogrpo.protocols import SCHEDULE_COMPONENTS as COMPONENTS


def rescore(results_jsonl: Path, first_images: int | None) -> dict[str, float]:
    """Per-task accuracy and overall from a ``results.jsonl``, optionally on the first K images per prompt."""
    rows = [json.loads(line) for line in results_jsonl.read_text().splitlines()]
    return summarize((r["tag"], r["correct"]) for r in rows if first_images is None or r["image_index"] < first_images)


def table(base: dict[str, float], trained: dict[int, dict[str, float]]) -> tuple[str, dict[str, float]]:
    """A markdown table (base, each seed, mean ± std) and the summary numbers of ``overall``."""
    keys = (*TAGS, "overall")
    lines = ["| | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines.append("| base | " + " | ".join(f"{base[k]:.3f}" for k in keys) + " |")
    for seed, scores in trained.items():
        lines.append(f"| seed {seed} | " + " | ".join(f"{scores[k]:.3f}" for k in keys) + " |")
    mean = {k: statistics.fmean(s[k] for s in trained.values()) for k in keys}
    std = {k: statistics.stdev(s[k] for s in trained.values()) if len(trained) > 1 else 0.0 for k in keys}
    lines.append("| mean ± std | " + " | ".join(f"{mean[k]:.3f} ± {std[k]:.3f}" for k in keys) + " |")
    gains = [s["overall"] - base["overall"] for s in trained.values()]
    numbers = {
        "base": base["overall"], "trained_mean": mean["overall"], "trained_std": std["overall"],
        "gain": mean["overall"] - base["overall"], "seeds_above_base": sum(g > 0 for g in gains), "seeds": len(gains),
    }
    return "\n".join(lines), numbers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated")
    parser.add_argument("--out", default="runs/bench-main-job", help="folder of the runs (one per seed)")
    parser.add_argument("--first-images", type=int, default=4, help="also score on the first K images per prompt (0: skip)")
    parser.add_argument("--json", default=None, help="write every number here")
    parser.add_argument("extra", nargs="*", help="arguments for `cogrpo train` (after --)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    cogrpo = shutil.which("cogrpo", path=str(Path(sys.executable).parent)) or "cogrpo"
    out = Path(args.out)
    walls: dict[int, float] = {}
    for seed in seeds:
        run_dir = out / f"seed-{seed}"
        if (run_dir / "summary.json").is_file():
            print(f"seed {seed}: reusing {run_dir}")
            continue
        command = [cogrpo, "train", "--seed", str(seed), "--threads", "2", "--no-progress", "--run-dir", str(run_dir), *args.extra]
        print("$ " + " ".join(command), flush=True)
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        walls[seed] = time.perf_counter() - start
        print(f"seed {seed}: {walls[seed]:.0f} s", flush=True)

    report: dict = {"seeds": seeds, "extra": args.extra, "wall_s": walls, "views": {}}
    summaries = {seed: json.loads((out / f"seed-{seed}" / "summary.json").read_text()) for seed in seeds}
    report["train_s"] = {seed: s.get("wall_time_train") for seed, s in summaries.items()}
    views = {"all images": None} | ({f"first {args.first_images} images per prompt": args.first_images} if args.first_images else {})
    for name, first in views.items():
        base = rescore(out / f"seed-{seeds[0]}" / "eval" / "base" / "results.jsonl", first)
        trained = {seed: rescore(out / f"seed-{seed}" / "eval" / "trained" / "results.jsonl", first) for seed in seeds}
        markdown, numbers = table(base, trained)
        report["views"][name] = {"table": markdown, **numbers}
        print(f"\n## held-out toy-GenEval, {name}\n\n{markdown}\n")
        print(
            f"gain {numbers['gain']:+.3f} vs seed std {numbers['trained_std']:.3f} "
            f"({'larger' if numbers['gain'] > numbers['trained_std'] else 'NOT larger'}); "
            f"{numbers['seeds_above_base']}/{numbers['seeds']} seeds above the base"
        )

    learned = [s["learned_schedule"]["mean"] for s in summaries.values() if "learned_schedule" in s]
    if learned:
        default = next(iter(summaries.values()))["learned_schedule"]["default"]
        steps = len(default)
        mean = [[statistics.fmean(run[k][c] for run in learned) for c in range(len(COMPONENTS))] for k in range(steps)]
        report["learned_schedule_mean"], report["default_schedule"] = mean, default
        print("\nlearned schedule (mean over seeds) vs default, per step:")
        for c, name in enumerate(COMPONENTS):
            print(f"  {name:6s} learned " + " ".join(f"{mean[k][c]:.2f}" for k in range(steps)))
            print(f"  {'':6s} default " + " ".join(f"{default[k][c]:.2f}" for k in range(steps)))
    if walls:
        print(f"\nwall time per command: {min(walls.values()):.0f}-{max(walls.values()):.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
