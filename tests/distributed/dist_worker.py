"""One process of a distributed test run, and the same run in one process for the reference.

    torchrun --nproc_per_node 2 dist_worker.py SPEC.json

``SPEC.json``: ``{"config": {TrainConfig fields}, "out": DIR, "crash_after": N or null}``. The run
uses cogrpo's built-in test plugins plus :class:`Recorder`, which after every iteration gathers the
full θ and φ of every rank (ZeRO-3 shards included) and records whether the ranks hold identical
parameters; rank 0 writes the parameters of every iteration to ``DIR/iter_<n>.safetensors`` and a
``DIR/report.json``. ``crash_after`` raises on every rank after that iteration (a simulated kill).
A tiny benchmark ``brightness-bench`` is registered for runs that evaluate before and after.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import torch
from rich.console import Console
from safetensors.torch import save_file

import cogrpo.trainer as trainer_module
from cogrpo import hookimpl
from cogrpo.config import TrainConfig
from cogrpo.plugins import get_plugin_manager


class Crash(RuntimeError):
    pass


class Recorder:
    """Snapshots θ and φ after every iteration and checks that every rank holds the same values."""

    def __init__(self, out: Path, crash_after: int | None) -> None:
        self.out = out
        self.crash_after = crash_after
        self.model: torch.nn.Module | None = None
        self.policy: torch.nn.Module | None = None
        self.report: dict = {"iterations": [], "identical": [], "max_rank_diff": [], "world_size": 1}

    def capture(self) -> dict[str, torch.Tensor]:
        out = {}
        for prefix, module in (("model", self.model), ("policy", self.policy)):
            if module is None:
                continue
            params = list(module.named_parameters())
            with gathered([p for _, p in params]):
                out.update({f"{prefix}.{n}": p.detach().clone().contiguous() for n, p in params})
        return out

    @hookimpl
    def cogrpo_after_iteration(self, iteration, phase, metrics):
        snapshot = self.capture()
        flat = torch.cat([v.reshape(-1).double() for v in snapshot.values()])
        identical, max_diff, world = True, 0.0, 1
        if torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            every = [torch.empty_like(flat) for _ in range(world)]
            torch.distributed.all_gather(every, flat)
            identical = all(torch.equal(every[0], v) for v in every)
            max_diff = max((every[0] - v).abs().max().item() for v in every)
        if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            save_file(snapshot, str(self.out / f"iter_{iteration:03d}.safetensors"))
            self.report["iterations"].append(iteration)
            self.report["identical"].append(identical)
            self.report["max_rank_diff"].append(max_diff)
            self.report["world_size"] = world
            self.report[f"metrics_{iteration}"] = {k: v for k, v in metrics.items() if not k.startswith("time/")}
            (self.out / "report.json").write_text(json.dumps(self.report, indent=1))
        if self.crash_after is not None and iteration == self.crash_after:
            raise Crash(f"killed after iteration {iteration}")


class BrightnessBenchmark:
    """A tiny benchmark for the runs' before/after evaluation: mean brightness of 2 images per prompt."""

    name = "brightness-bench"
    images_per_item = 2

    def items(self):
        from cogrpo.protocols import EvalItem

        return [EvalItem(id=str(i), prompt=p) for i, p in enumerate(["a red circle", "two blue squares", "a cat"])]

    def evaluate(self, generated, out_dir):
        means = [item.images.mean().item() for item in generated]
        return {"overall": sum(means) / len(means)}


class BenchmarkPlugin:
    @hookimpl
    def cogrpo_register_benchmarks(self):
        return {"brightness-bench": lambda *, path=None, **options: BrightnessBenchmark()}


def gathered(params):
    """A context that makes ZeRO-3-partitioned parameters whole (a no-op for plain parameters)."""
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
    return contextlib.nullcontext()


def run(spec: dict) -> Recorder:
    """Train as ``spec`` says with a :class:`Recorder` (in this process, or as one rank of a launch)."""
    recorder = Recorder(Path(spec["out"]), spec.get("crash_after"))
    original_backbone, original_actor = trainer_module.build_backbone, trainer_module.build_actor

    def build_backbone(pm, cfg):
        backbone = original_backbone(pm, cfg)
        if recorder.model is None:
            recorder.model = backbone.model
        return backbone

    def build_actor(pm, cfg, backbone):
        actor = original_actor(pm, cfg, backbone)
        recorder.policy = actor.policy
        return actor

    trainer_module.build_backbone, trainer_module.build_actor = build_backbone, build_actor
    threads = torch.get_num_threads()
    try:
        config = TrainConfig.from_dict(spec["config"]).validate()
        trainer_module.train(
            config, get_plugin_manager([recorder, BenchmarkPlugin()], autoload=False), console=Console(quiet=True)
        )
    finally:
        trainer_module.build_backbone, trainer_module.build_actor = original_backbone, original_actor
        torch.set_num_threads(threads)
    return recorder


if __name__ == "__main__":
    run(json.loads(Path(sys.argv[1]).read_text()))
