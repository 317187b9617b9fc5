"""Helpers for the distributed tests: a tiny config, launching 2 processes with torchrun on CPU/gloo,
reading the per-iteration parameter snapshots that ``dist_worker.py`` writes."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("dist_worker.py")
REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["a red circle", "two blue squares", "a green cross above a yellow square", "three purple triangles"]


def tiny_config(run_dir: Path, prompts: Path, **overrides) -> dict:
    """The tiny backbone, 4x4 tokens, T=4; B=12 trajectories in groups of G=4, so with 2 processes
    (6 trajectories each) the second group straddles the ranks; micro-batches of 4 (2 per process),
    2 micro-batches per optimizer step (two optimizer steps per iteration)."""
    values = dict(
        run_dir=str(run_dir),
        backbone="tiny",
        backbone_opt={"grid": [4, 4], "seed": 3},
        reward=["brightness"],
        reward_weights=[1.0],
        prompts=str(prompts),
        schedule_policy="tiny-head",
        eval_benchmark=None,
        device="cpu",
        steps=4,
        mode="alternating",
        cycles=2,
        model_iterations=1,
        schedule_iterations=1,
        model_group_size=4,
        model_batch_size=12,
        model_micro_batch=4,
        model_grad_accum=2,
        schedule_group_size=4,
        schedule_batch_size=12,
        schedule_micro_batch=4,
        schedule_grad_accum=2,
        rollout_batch=8,
        model_lr=1e-3,
        schedule_lr=3e-2,
        progress=False,
        checkpoint_every=1,
        threads=1,
    )
    values.update(overrides)
    return values


def aligned_one_process(config: dict, world_size: int = 2) -> dict:
    """The one-process run with the same global batch and the same trajectories per optimizer step,
    whose every forward has the size of one rank's piece (rollouts of B/W, micro-batches of
    micro/W, W times the accumulation)."""
    out = dict(config, distributed="none")
    for phase in ("model", "schedule"):
        out[f"{phase}_micro_batch"] = config[f"{phase}_micro_batch"] // world_size
        out[f"{phase}_grad_accum"] = config[f"{phase}_grad_accum"] * world_size
    out["rollout_batch"] = config["model_batch_size"] // world_size
    return out


def launch_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))  # DeepSpeed's op cache
    env.update(COGRPO_DISABLE_PLUGIN_AUTOLOAD="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def torchrun(args: list[str], log: Path, nproc: int = 2, check: bool = True) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node N ARGS`` on the CPU; the output goes to ``log``."""
    if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("torchrun is missing from this environment; run `bash scripts/setup.sh`")
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--standalone", f"--nproc_per_node={nproc}", *args]
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=launch_env(), timeout=600, cwd=REPO)
    if check and proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise AssertionError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
    return proc


def launch_worker(
    spec: dict, workdir: Path, name: str, nproc: int = 2, check: bool = True
) -> subprocess.CompletedProcess:
    spec_file = workdir / f"{name}.json"
    spec_file.write_text(json.dumps(spec))
    return torchrun([str(WORKER), str(spec_file)], workdir / f"{name}.log", nproc=nproc, check=check)


def snapshots(out: Path) -> dict[int, dict[str, torch.Tensor]]:
    """``{iteration: {"model.<name>" | "policy.<name>": tensor}}`` as written by the worker."""
    return {int(p.stem.split("_")[1]): load_file(str(p)) for p in sorted(out.glob("iter_*.safetensors"))}


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def requires_deepspeed() -> None:
    if importlib.util.find_spec("deepspeed") is None:
        pytest.fail("deepspeed is missing from this environment (pinned in requirements/cpu.txt); run `bash scripts/setup.sh`")
