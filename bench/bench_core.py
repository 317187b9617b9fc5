"""Benchmarks of the core engine (issue 2, acceptance 10). A script, not a test.

Measures, on a tiny-but-not-trivial backbone (the test backbone scaled up):

1. peak memory of one model-phase update at T=48 vs T=8 (goal <= 1.1x: the per-step backward keeps
   memory flat in T), next to what a whole-trajectory backward would need;
2. model-phase update time at T=32 vs T=8 (goal <= 4.4x);
3. the schedule policy's share of rollout wall time (goal <= 1% for a head ~1% of the backbone);
4. schedule-phase update time vs model-phase update time on the same batch (goal <= 20%).

Usage: ``python bench/bench_core.py [--device cpu|cuda] [--dim 256 --depth 6 --grid 16]``
CPU peak memory is read from glibc's allocator (mallinfo2) by a 1 kHz sampling thread; on CUDA from
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import threading
import time

import torch

from cogrpo.config import TrainConfig
from cogrpo.sampler import replay_model_log_prob, rollout
from cogrpo.schedule import ScheduleActor
from cogrpo.testing import TinyBackbone
from cogrpo.trainer import grpo_update


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


class PeakMemory:
    """Peak bytes allocated during a ``with`` block, relative to its start."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        if device.type == "cpu":
            self._libc = ctypes.CDLL("libc.so.6")
            self._libc.mallinfo2.restype = _MallInfo2

    def _allocated(self) -> int:
        info = self._libc.mallinfo2()
        return info.uordblks + info.hblkhd

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            return self
        self._start = self._allocated()
        self._running = True
        self._max = self._start

        def sample() -> None:
            while self._running:
                self._max = max(self._max, self._allocated())
                time.sleep(0.001)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._start
            return
        self._running = False
        self._thread.join()
        self.peak = max(self._max, self._allocated()) - self._start


def build(args, device):
    backbone = TinyBackbone(codebook_size=64, grid=(args.grid, args.grid), dim=args.dim, depth=args.depth, heads=4, device=device)
    from cogrpo_schedulers.paper_head import PaperHead

    n_backbone = sum(p.numel() for p in backbone.model.parameters())
    head = PaperHead(feature_dim=args.dim, feature_grid=(args.grid, args.grid), components=("r", "tau_r", "tau_s", "cfg"), hidden_dim=args.head_hidden).to(device)
    n_head = sum(p.numel() for p in head.parameters())
    with torch.no_grad():  # a trained-looking head (not exactly zero) so all code paths run
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return backbone, ScheduleActor(backbone.default_schedule(), head, sigma=0.3), n_backbone, n_head


def make_batch(backbone, actor, num_steps, batch, device, keep_features=False):
    prompts = [f"prompt {i // 4}" for i in range(batch)]
    embeds = backbone.encode_prompts(prompts)
    gens = [torch.Generator(device=device).manual_seed(i) for i in range(batch)]
    traj = rollout(backbone, embeds, num_steps=num_steps, actor=actor, action_mode="sample", generators=gens, keep_features=keep_features)
    adv = torch.randn(batch, generator=torch.Generator().manual_seed(0))
    return traj, embeds, adv


def update(phase, backbone, actor, traj, embeds, adv, micro_batch):
    config = TrainConfig(steps=traj.num_steps, max_grad_norm=1.0)
    settings = type(config.phase_settings("model"))(group_size=4, batch_size=traj.batch_size, micro_batch=micro_batch, grad_accum=None)
    opts = {
        "model": torch.optim.AdamW(backbone.model.parameters(), lr=1e-6),
        "schedule": torch.optim.AdamW(actor.policy.parameters(), lr=1e-6),
    }
    for opt in opts.values():  # materialise optimizer state before measuring
        for group in opt.param_groups:
            for p in group["params"]:
                opt.state[p]["step"] = torch.tensor(0.0)
                opt.state[p]["exp_avg"] = torch.zeros_like(p)
                opt.state[p]["exp_avg_sq"] = torch.zeros_like(p)
    return lambda: grpo_update(phase, backbone, actor, traj, embeds, adv, config=config, settings=settings, optimizers=opts, references={}, rng=torch.Generator().manual_seed(0))


def whole_trajectory_backward(backbone, traj, embeds, adv):
    """What the per-step backward avoids: one graph over all T steps."""
    loss = 0
    for k in range(traj.num_steps):
        logp, _, _ = replay_model_log_prob(backbone, traj, embeds, k)
        loss = loss + (-(torch.exp(logp - traj.model_logp[k]) * adv)).mean()
    loss.backward()
    backbone.model.zero_grad(set_to_none=True)


def timed(fn, repeat=3, device=None):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--head-hidden", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    backbone, actor, n_backbone, n_head = build(args, device)
    out = {"device": str(device), "backbone_params": n_backbone, "head_params": n_head, "head_share_params": n_head / n_backbone}
    print(f"backbone {n_backbone / 1e6:.2f}M params, paper-head {n_head / 1e3:.1f}K ({100 * n_head / n_backbone:.2f}%), grid {args.grid}x{args.grid}, batch {args.batch}")

    # 1. memory flat in T ---------------------------------------------------------------------------
    peaks = {}
    for num_steps in (8, 48):
        traj, embeds, adv = make_batch(backbone, actor, num_steps, args.batch, device)
        run = update("model", backbone, actor, traj, embeds, adv, args.micro_batch)
        run()
        with PeakMemory(device) as mem:
            run()
        peaks[num_steps] = mem.peak
        out[f"peak_update_T{num_steps}_MB"] = mem.peak / 2**20
        line = f"T={num_steps:2d}: model-phase update peak {mem.peak / 2**20:8.1f} MB"
        if num_steps == 8:  # the whole-trajectory graph grows linearly in T (T=48 would not fit in RAM here)
            with PeakMemory(device) as whole:
                whole_trajectory_backward(backbone, traj, embeds, adv)
            out[f"peak_whole_trajectory_T{num_steps}_MB"] = whole.peak / 2**20
            line += f"   (one backward through the whole trajectory instead: {whole.peak / 2**20:8.1f} MB)"
        print(line)
    out["memory_ratio_T48_T8"] = peaks[48] / peaks[8]
    print(f"  -> peak memory T=48 / T=8 = {out['memory_ratio_T48_T8']:.3f}  (goal <= 1.1)")

    # 2. update time T=32 vs T=8 ----------------------------------------------------------------------
    times = {}
    for num_steps in (8, 32):
        traj, embeds, adv = make_batch(backbone, actor, num_steps, args.batch, device)
        times[num_steps] = timed(update("model", backbone, actor, traj, embeds, adv, args.micro_batch), device=device)
        out[f"update_time_T{num_steps}_s"] = times[num_steps]
    out["time_ratio_T32_T8"] = times[32] / times[8]
    print(f"update time T=8 {times[8]:.3f}s, T=32 {times[32]:.3f}s -> ratio {out['time_ratio_T32_T8']:.2f}  (goal <= 4.4)")

    # 3. the schedule policy's share of rollout wall time -----------------------------------------------
    num_steps = 16
    prompts = [f"prompt {i // 4}" for i in range(args.batch)]
    embeds = backbone.encode_prompts(prompts)
    head_time = [0.0]
    original_mean = actor.mean

    def timed_mean(features, progress):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        mu = original_mean(features, progress)
        if device.type == "cuda":
            torch.cuda.synchronize()
        head_time[0] += time.perf_counter() - t0
        return mu

    actor.mean = timed_mean
    gens = lambda: [torch.Generator(device=device).manual_seed(i) for i in range(args.batch)]  # noqa: E731
    total = timed(lambda: rollout(backbone, embeds, num_steps=num_steps, actor=actor, action_mode="sample", generators=gens()), device=device)
    head_time[0] = 0.0
    t0 = time.perf_counter()
    rollout(backbone, embeds, num_steps=num_steps, actor=actor, action_mode="sample", generators=gens())
    total = time.perf_counter() - t0
    actor.mean = original_mean
    fixed = timed(lambda: rollout(backbone, embeds, num_steps=num_steps, actor=actor, action_mode="base", generators=gens()), device=device)
    out["rollout_time_learned_s"] = total
    out["rollout_time_fixed_s"] = fixed
    out["head_share_of_rollout"] = head_time[0] / total
    print(f"rollout T={num_steps}: {total:.3f}s with the learned head ({fixed:.3f}s with the fixed schedule); "
          f"head forward {100 * head_time[0] / total:.2f}% of it  (goal <= 1%)")

    # 4. schedule-phase vs model-phase update on the same batch ------------------------------------------
    traj, embeds, adv = make_batch(backbone, actor, 16, args.batch, device, keep_features=True)
    model_time = timed(update("model", backbone, actor, traj, embeds, adv, args.micro_batch), device=device)
    schedule_time = timed(update("schedule", backbone, actor, traj, embeds, adv, args.micro_batch), device=device)
    out["model_update_s"], out["schedule_update_s"] = model_time, schedule_time
    out["schedule_vs_model_update"] = schedule_time / model_time
    print(f"update on the same batch (T=16): model phase {model_time:.3f}s, schedule phase {schedule_time:.4f}s "
          f"-> {100 * schedule_time / model_time:.1f}%  (goal <= 20%)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
