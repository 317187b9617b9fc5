"""Time one Co-GRPO iteration of the toy world for candidate sizes (CPU, fp32).

For each candidate (grid, width, depth, steps T, trajectories B = prompts x G) it measures, with
random weights of that architecture:

* rollout: ``cogrpo.sampler.rollout`` of B trajectories with CFG (2B sequences per forward);
* update: the model phase's replayed update as the trainer does it, step by step with gradient
  accumulation: for k in 0..T-1: ``logp = replay_model_log_prob(k)``; ``ratio = exp(logp - old)``;
  ``loss_k = -(ratio * A).mean() / T``; ``loss_k.backward()``; then one Adam step;
* reward: ``toy-geneval`` + ``toy-quality`` on the B final grids;
* schedule-phase rollout overhead is the same rollout (the head is ~1% of the backbone).

With ``--scores`` it instead measures a backbone's held-out toy-GenEval (4 images per prompt, strict
verdicts) and mean ``toy-quality`` for a grid of fixed schedules (CFG scale x T x re-mask
temperature): how the release defaults in ``weights/README.md`` were chosen.

Usage::

    .venv/bin/python bench/bench_toyworld.py                 # the default candidate table
    .venv/bin/python bench/bench_toyworld.py --quick         # one candidate, one repeat
    .venv/bin/python bench/bench_toyworld.py --json out.json
    .venv/bin/python bench/bench_toyworld.py --scores        # the shipped weights' base scores
    .venv/bin/python bench/bench_toyworld.py --scores --weights FILE --cfg 1,2,3,4,5 --steps 8,12,16

Numbers are medians over ``--repeats`` (after one warm-up), with ``torch.set_num_threads``
threads (2 by default, the CI machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from cogrpo.sampler import replay_model_log_prob, rollout
from cogrpo.schedule import ScheduleActor
from cogrpo_toyworld.model import ToyBackbone, ToyConfig, grammar_vocabulary
from cogrpo_toyworld.prompts import balanced_train_prompts
from cogrpo_toyworld.rewards import ToyGenEvalReward, ToyQualityReward

# (grid, dim, depth, T, prompts, G)
CANDIDATES = [
    ((7, 7), 128, 4, 8, 8, 4),  # the shipped architecture
    ((7, 7), 128, 4, 8, 8, 8),
    ((7, 7), 128, 4, 12, 8, 4),
    ((7, 7), 128, 4, 12, 8, 8),
    ((7, 7), 128, 4, 16, 8, 4),
    ((7, 7), 128, 4, 8, 16, 4),
    ((7, 7), 96, 4, 8, 8, 4),
    ((8, 8), 128, 4, 8, 8, 4),
    ((10, 10), 128, 4, 8, 8, 4),
    ((12, 12), 128, 4, 8, 8, 4),
]


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_one(grid, dim, depth, num_steps, n_prompts, group, repeats: int) -> dict:
    config = ToyConfig(grid=grid, dim=dim, depth=depth, heads=4, vocab=tuple(grammar_vocabulary()))
    bb = ToyBackbone(random_weights=True, config=config, seed=0, cfg_scale=3.0)
    prompts = [p for p in balanced_train_prompts()[::24][:n_prompts] for _ in range(group)]
    embeds = bb.encode_prompts(prompts)
    actor = ScheduleActor(bb.default_schedule())
    batch = len(prompts)
    optimizer = torch.optim.Adam(bb.trainable_parameters(), lr=1e-5)
    rewards = [ToyGenEvalReward(grid=grid), ToyQualityReward(grid=grid)]
    state: dict = {}

    def do_rollout() -> None:
        gens = [torch.Generator().manual_seed(i) for i in range(batch)]
        state["traj"] = rollout(bb, embeds, num_steps=num_steps, actor=actor, action_mode="base", generators=gens)

    def do_update() -> None:
        traj = state["traj"]
        advantages = torch.randn(batch, generator=torch.Generator().manual_seed(1))
        bb.model.train()
        optimizer.zero_grad(set_to_none=True)
        for k in range(num_steps):
            logp, _, _ = replay_model_log_prob(bb, traj, embeds, k)
            ratio = torch.exp(logp - traj.model_logp[k])
            loss = -(ratio * advantages).mean() / num_steps
            loss.backward()
        optimizer.step()
        bb.model.eval()

    def do_reward() -> None:
        traj = state["traj"]
        images = bb.decode(traj.tokens)
        for reward in rewards:
            reward(images, prompts, tokens=traj.tokens)

    do_rollout()
    t_rollout = _time(do_rollout, repeats)
    t_update = _time(do_update, repeats)
    t_reward = _time(do_reward, repeats)
    params = bb.num_parameters()
    return {
        "grid": f"{grid[0]}x{grid[1]}",
        "dim": dim,
        "depth": depth,
        "params_model": params["model"],
        "params_text": params["text_encoder"],
        "T": num_steps,
        "prompts": n_prompts,
        "G": group,
        "trajectories": batch,
        "rollout_s": round(t_rollout, 3),
        "update_s": round(t_update, 3),
        "reward_s": round(t_reward, 3),
        "iteration_s": round(t_rollout + t_update + t_reward, 3),
    }


def base_scores(weights: str | None, cfgs: list[float], steps: list[int], remask: list[float], seed: int) -> list[dict]:
    """Held-out toy-GenEval and mean toy-quality of a backbone for each fixed schedule."""
    from cogrpo_schedulers.fixed import CosineSchedule
    from cogrpo_toyworld.benchmark import ToyGenEvalBenchmark, generate

    bb = ToyBackbone(path=weights)
    bench = ToyGenEvalBenchmark()
    items = bench.items()
    quality = ToyQualityReward()
    rows = []
    for num_steps in steps:
        for tau_r in remask:
            for cfg in cfgs:
                actor = ScheduleActor(CosineSchedule(cfg_scale=cfg, remask_temperature=(tau_r, 0.0)))
                t0 = time.perf_counter()
                generated = list(generate(bb, items, images_per_item=4, num_steps=num_steps, actor=actor, seed=seed))
                seconds = time.perf_counter() - t0
                tokens = torch.cat([g.tokens for g in generated])
                import tempfile

                with tempfile.TemporaryDirectory() as tmp:
                    scores = bench.evaluate(generated, tmp)
                q = quality(bb.decode(tokens), ["a square"] * len(tokens), tokens=tokens).scores.mean().item()
                row = {"T": num_steps, "tau_r": tau_r, "cfg": cfg, **{k: round(v, 3) for k, v in scores.items()},
                       "quality": round(q, 3), "images": len(tokens), "generate_s": round(seconds, 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="first candidate only, one repeat")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--scores", action="store_true", help="measure base toy-GenEval instead of timings")
    parser.add_argument("--weights", default=None, help="weights file for --scores (default: the shipped ones)")
    parser.add_argument("--cfg", default="3", help="CFG scales for --scores, comma-separated")
    parser.add_argument("--steps", default="8", help="numbers of steps T for --scores, comma-separated")
    parser.add_argument("--remask", default="2", help="initial re-mask temperatures for --scores (-> 0)")
    parser.add_argument("--seed", type=int, default=1234, help="generation seed for --scores (the eval seed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.scores:
        floats = lambda text: [float(v) for v in text.split(",")]  # noqa: E731
        rows = base_scores(args.weights, floats(args.cfg), [int(v) for v in args.steps.split(",")],
                           floats(args.remask), args.seed)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"torch": torch.__version__, "rows": rows}, f, indent=2)
        return
    candidates = CANDIDATES[:1] if args.quick else CANDIDATES
    repeats = 1 if args.quick else args.repeats
    rows = []
    header = "| grid | dim | depth | params (MDM + text) | T | prompts x G | rollout s | update s | reward s | iteration s |"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {args.threads} threads, load average {load:.1f} at start")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for cand in candidates:
        row = bench_one(*cand, repeats=repeats)
        rows.append(row)
        print(
            f"| {row['grid']} | {row['dim']} | {row['depth']} | {row['params_model'] / 1e6:.2f}M + "
            f"{row['params_text'] / 1e6:.2f}M | {row['T']} | {row['prompts']} x {row['G']} | {row['rollout_s']:.2f} | "
            f"{row['update_s']:.2f} | {row['reward_s']:.3f} | {row['iteration_s']:.2f} |",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "torch": torch.__version__, "load_at_start": load, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
