"""Cost of the distributed modes on this machine: seconds per Co-GRPO iteration, 1 vs 2 processes.

    .venv/bin/python bench/bench_distributed.py [--iterations 4] [--grid 8] [--dim 128] [--depth 4]

Runs the same model-phase config (tiny test backbone, T=8, 32 trajectories in groups of 8, micro-
batches of 8) as one process with 1 and 2 threads, and as 2 processes × 1 thread with ``ddp`` and
DeepSpeed ZeRO-1/2/3 (torchrun, gloo), and prints the median rollout / update / iteration time
(first iteration dropped) and the wall time of the whole command (process start-up included).
On 2 CPU cores this measures the plumbing's overhead, not GPU scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["a red circle", "two blue squares", "a green cross above a yellow square", "three purple triangles"]


def run(mode: str, zero: int, threads: int, args: argparse.Namespace, work: Path) -> dict[str, float]:
    run_dir = work / f"{mode}{zero}-{threads}"
    config = dict(
        run_dir=str(run_dir), backbone="tiny",
        backbone_opt={"grid": [args.grid, args.grid], "dim": args.dim, "depth": args.depth, "seed": 0},
        reward=["brightness"], reward_weights=[1.0], prompts=str(work / "prompts.txt"), schedule_policy="tiny-head",
        eval_benchmark=None, device="cpu", steps=8, mode="naive", cycles=1, model_iterations=args.iterations,
        schedule_iterations=0, model_group_size=8, model_batch_size=32, model_micro_batch=8, rollout_batch=32,
        progress=False, checkpoint_every=10**6, threads=threads, distributed=mode, zero=zero,
    )
    config_file = work / f"{mode}{zero}-{threads}.json"
    config_file.write_text(json.dumps(config))
    env = dict(os.environ, COGRPO_DISABLE_PLUGIN_AUTOLOAD="1", OMP_NUM_THREADS="1")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    bindir = Path(sys.executable).parent
    cli = ["-m", "cogrpo.cli", "train", "--config", str(config_file)]
    cmd = [sys.executable, *cli] if mode == "none" else [str(bindir / "torchrun"), "--standalone", "--nproc_per_node=2", *cli]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1:]
    med = {k: statistics.median(r[f"time/{k}"] for r in rows) for k in ("rollout", "update", "iteration")}
    return {**med, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--grid", type=int, default=8)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
        print(f"tiny backbone {args.grid}x{args.grid} tokens, dim {args.dim}, depth {args.depth}; T=8, B=32, G=8, "
              f"micro-batch 8; {args.iterations} model iterations (median of all but the first)\n")
        print("| mode | processes × threads | rollout s | update s | iteration s | command wall s |")
        print("|---|---|---|---|---|---|")
        modes = [("none", 0, 1), ("none", 0, 2), ("ddp", 0, 1), ("deepspeed", 1, 1), ("deepspeed", 2, 1), ("deepspeed", 3, 1)]
        for mode, zero, threads in modes:
            r = run(mode, zero or 2, threads, args, work)
            label = {"none": "one process", "ddp": "ddp"}.get(mode, f"deepspeed ZeRO-{zero}")
            layout = f"1 × {threads}" if mode == "none" else "2 × 1"
            print(f"| {label} | {layout} | {r['rollout']:.2f} | {r['update']:.2f} | {r['iteration']:.2f} | {r['wall']:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
