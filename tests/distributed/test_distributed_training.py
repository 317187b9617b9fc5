"""Acceptance of issue 7 on the CPU with gloo: 2-process runs (torchrun) equal 1-process runs.

* ZeRO-2, ZeRO-3 and DDP end with the parameters of a one-process run of the same global batch,
  seeds and gradient accumulation (θ and φ, every iteration, 1e-6), and the ranks hold identical
  parameters after every update (the worker all-gathers θ and φ from every rank).
* The advantages (and rewards) logged by 2 processes, whose second group of 4 trajectories is split
  over the two ranks, equal the one-process ones exactly.
* A 2-process ZeRO-2 run killed after an iteration and resumed ends bitwise where the
  uninterrupted run ends.
* ``torchrun -m cogrpo.cli train --distributed ddp`` works, and only rank 0 writes the logs.

Why the AdamW comparison leaves out the attention key biases: their exact gradient is zero (a
constant added to every key shifts all attention logits of a query alike; softmax ignores it), so
what backward computes for them is float rounding noise, and AdamW divides it by its own running
magnitude: a step of size ~lr in a direction set by the noise. Any change in float summation order
(a different micro-batch size in ONE process already does it) changes that noise. The SGD runs
compare every parameter; the AdamW run compares every other parameter at 1e-6 and checks that the
key biases do not change the model's function.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dist_worker
import pytest
import torch
from distributed_helpers import (
    WORKER,
    aligned_one_process,
    launch_env,
    launch_worker,
    report,
    requires_deepspeed,
    snapshots,
    tiny_config,
    torchrun,
)
from safetensors.torch import load_file

from cogrpo.checkpoint import find_checkpoint
from cogrpo.testing import TinyBackbone

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

TOL = 1e-6
EXACT_METRICS = (
    "reward/brightness/mean",
    "reward/brightness/std",
    "reward/mixed/mean",
    "adv/zero_std_ratio",
    "adv/abs_mean",
)


def one_process(config: dict, out: Path) -> Path:
    """The reference: the same run in this process (``--distributed none``)."""
    dist_worker.run({"config": config, "out": str(out)})
    return out


def key_bias_mask(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """True where a parameter entry is an attention key bias (exact gradient zero)."""
    mask = torch.zeros_like(tensor, dtype=torch.bool)
    if name.endswith("qkv.bias"):
        dim = tensor.shape[0] // 3
        mask[dim : 2 * dim] = True
    return mask


def assert_same_parameters(got: dict, want: dict, tol: float = TOL, skip_key_biases: bool = False) -> float:
    assert got.keys() == want.keys() and got, "the same iterations must be recorded"
    worst = 0.0
    for it in want:
        assert got[it].keys() == want[it].keys()
        for name, expected in want[it].items():
            diff = (got[it][name] - expected).abs()
            if skip_key_biases:
                diff = diff[~key_bias_mask(name, diff)]
            worst = max(worst, diff.max().item() if diff.numel() else 0.0)
            assert worst <= tol, f"iteration {it}: {name} differs by {diff.max().item():.3g} (> {tol:g})"
    return worst


def assert_ranks_identical(out: Path, iterations: int) -> None:
    rep = report(out)
    assert rep["world_size"] == 2
    assert len(rep["identical"]) == iterations and all(rep["identical"]), rep["max_rank_diff"]


def assert_same_metrics(dist_out: Path, ref_out: Path) -> None:
    got, want = report(dist_out), report(ref_out)
    for it in want["iterations"]:
        g, w = got[f"metrics_{it}"], want[f"metrics_{it}"]
        assert set(g) == set(w)
        for key in EXACT_METRICS:  # gathered before normalisation: the very same numbers
            assert g[key] == w[key], (it, key, g[key], w[key])
        for key, value in w.items():
            if isinstance(value, float):
                assert g[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (it, key)


# -------------------------------------------------------------------------------------------------
# ZeRO-2 with AdamW: equal to one process, and kill-and-resume
# -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zero2_adamw(tmp_path_factory, prompts_path):
    """One uninterrupted 2-process ZeRO-2 run (AdamW for θ and φ) and its one-process reference."""
    requires_deepspeed()
    work = tmp_path_factory.mktemp("zero2")
    config = tiny_config(work / "run", prompts_path, distributed="deepspeed", zero=2)
    launch_worker({"config": config, "out": str(work / "out")}, work, "zero2")
    ref = one_process(aligned_one_process(tiny_config(work / "ref_run", prompts_path)), work / "ref")
    return config, work, ref


def test_zero2_adamw_equals_one_process(zero2_adamw) -> None:
    config, work, ref = zero2_adamw
    dist_snaps, ref_snaps = snapshots(work / "out"), snapshots(ref)
    assert sorted(dist_snaps) == [0, 1, 2, 3]
    assert_same_parameters(dist_snaps, ref_snaps, skip_key_biases=True)
    assert_ranks_identical(work / "out", 4)
    assert_same_metrics(work / "out", ref)
    # the key biases only: the model's function is the same (logits on a fixed batch)
    outputs = []
    for snap in (dist_snaps[3], ref_snaps[3]):
        backbone = TinyBackbone(grid=(4, 4), seed=3)
        backbone.model.load_state_dict({k.removeprefix("model."): v for k, v in snap.items() if k.startswith("model.")})
        tokens = torch.randint(0, 17, (3, 16), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            outputs.append(
                backbone.forward(tokens, backbone.encode_prompts(["a", "two red", "blue cats"]), 1, 4, True).cond_logits
            )
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)
    # and the checkpoint holds DeepSpeed's sharded state next to cogrpo's full θ
    ckpt = find_checkpoint(work / "run")
    assert (ckpt / "deepspeed").is_dir() and (ckpt / "model.safetensors").is_file()
    assert json.loads((ckpt / "state.json").read_text())["train_state"]["extra"]["distributed"] == {
        "mode": "deepspeed",
        "world_size": 2,
        "zero": 2,
    }
    final = load_file(str(ckpt / "model.safetensors"))
    assert all(torch.equal(final[k], dist_snaps[3][f"model.{k}"]) for k in final)


def test_zero2_kill_and_resume_equals_uninterrupted(zero2_adamw) -> None:
    config, work, _ = zero2_adamw
    killed = dict(config, run_dir=str(work / "killed"))
    # killed after iteration 1 (a model and a schedule iteration done: both optimizers have state),
    # then resumed: iteration 2 steps θ with the restored ZeRO state, iteration 3 steps φ
    proc = launch_worker(
        {"config": killed, "out": str(work / "killed_out"), "crash_after": 1}, work, "killed", check=False
    )
    assert proc.returncode != 0 and "killed after iteration 1" in (work / "killed.log").read_text()
    assert find_checkpoint(work / "killed").name == "iter_000002"
    resume = {"resume": str(work / "killed"), "progress": False, "threads": 1}
    # the ZeRO state is sharded over 2 processes: resuming it in one is a one-line error
    wrong = run_without_launcher({"config": resume, "out": str(work / "wrong_out")}, work, "wrong")
    assert wrong.returncode != 0
    log = (work / "wrong.log").read_text()
    assert "written by 2 process(es) (deepspeed, ZeRO 2); resume it with the same launch" in log
    launch_worker({"config": resume, "out": str(work / "resumed_out")}, work, "resumed")

    uninterrupted, resumed = snapshots(work / "out"), snapshots(work / "resumed_out")
    assert sorted(resumed) == [2, 3]
    for it in (2, 3):
        for name, value in uninterrupted[it].items():
            assert torch.equal(resumed[it][name], value), (it, name)
    assert_ranks_identical(work / "resumed_out", 2)
    rows = [json.loads(line) for line in (work / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3], "rank 0 logs every iteration once"


# -------------------------------------------------------------------------------------------------
# ZeRO-3 and DDP with SGD: every parameter equals the one-process run of the very same config
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode,zero,extra",
    [
        # joint: one loss through the ZeRO-3 engine (θ) and the replicated head (φ) at once; clipping
        # off, because DeepSpeed clips θ by θ's norm where one process clips θ and φ by their joint norm
        ("deepspeed", 3, {"mode": "joint", "max_grad_norm": None, "model_lr": 1e-2, "schedule_lr": 1e-1}),
        ("ddp", 2, {}),
    ],
    ids=["zero3-joint", "ddp-alternating"],
)
def test_sgd_run_equals_one_process_of_the_same_config(tmp_path, prompts_path, mode, zero, extra) -> None:
    """Also evaluates before and after training (rank 0 alone; under ZeRO-3 on a gathered θ)."""
    if mode == "deepspeed":
        requires_deepspeed()
    sgd = dict(
        model_optimizer="sgd",
        schedule_optimizer="sgd",
        model_lr=3e-2,
        schedule_lr=3e-1,
        eval_benchmark="brightness-bench",
        sample_grid=0,
    )
    sgd.update(extra)
    config = tiny_config(tmp_path / "run", prompts_path, distributed=mode, zero=zero, **sgd)
    launch_worker({"config": config, "out": str(tmp_path / "out")}, tmp_path, mode)
    ref = one_process(tiny_config(tmp_path / "ref_run", prompts_path, **sgd), tmp_path / "ref")
    assert_same_parameters(snapshots(tmp_path / "out"), snapshots(ref))
    assert_ranks_identical(tmp_path / "out", 4)
    assert_same_metrics(tmp_path / "out", ref)
    got, want = (json.loads((d / "summary.json").read_text()) for d in (tmp_path / "run", tmp_path / "ref_run"))
    assert got["base"] == want["base"], "the base model is evaluated before any update: the same numbers"
    assert got["trained"]["overall"] == pytest.approx(want["trained"]["overall"], abs=1e-6)
    assert got["trained"]["overall"] != got["base"]["overall"]


def run_without_launcher(spec: dict, workdir: Path, name: str) -> subprocess.CompletedProcess:
    """``python dist_worker.py SPEC`` (no torchrun); the output goes to ``workdir/name.log``."""
    spec_file = workdir / f"{name}.json"
    spec_file.write_text(json.dumps(spec))
    with open(workdir / f"{name}.log", "w") as log:
        cmd = [sys.executable, str(WORKER), str(spec_file)]
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=launch_env(), timeout=600)


def test_deepspeed_without_a_launcher_is_a_world_of_one(tmp_path, prompts_path) -> None:
    """``cogrpo train --distributed deepspeed`` on one device, no launcher: ZeRO-2 in one process."""
    requires_deepspeed()
    sgd = dict(model_optimizer="sgd", schedule_optimizer="sgd", model_lr=3e-2, schedule_lr=3e-1)
    config = tiny_config(tmp_path / "run", prompts_path, distributed="deepspeed", zero=2, **sgd)
    proc = run_without_launcher({"config": config, "out": str(tmp_path / "out")}, tmp_path, "run")
    assert proc.returncode == 0, (tmp_path / "run.log").read_text()[-3000:]
    ref = one_process(tiny_config(tmp_path / "ref_run", prompts_path, **sgd), tmp_path / "ref")
    assert_same_parameters(snapshots(tmp_path / "out"), snapshots(ref))
    assert report(tmp_path / "out")["world_size"] == 1


# -------------------------------------------------------------------------------------------------
# The command line under torchrun
# -------------------------------------------------------------------------------------------------


def test_cli_under_torchrun_logs_from_rank_zero_only(tmp_path, prompts_path) -> None:
    run_dir = tmp_path / "run"
    sgd = dict(model_optimizer="sgd", schedule_optimizer="sgd", model_lr=3e-2, schedule_lr=3e-1)
    config = tiny_config(run_dir, prompts_path, **sgd)
    config_file = tmp_path / "config.json"  # YAML is a superset of JSON
    config_file.write_text(json.dumps(dict(config, distributed="ddp")))
    torchrun(["-m", "cogrpo.cli", "train", "--config", str(config_file)], tmp_path / "cli.log")

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3], "one row per iteration: only rank 0 logs"
    assert len(list((run_dir / "tb").glob("events.*"))) == 1
    ref = one_process(tiny_config(tmp_path / "ref_run", prompts_path, **sgd), tmp_path / "ref")
    final = load_file(str(find_checkpoint(run_dir) / "model.safetensors"))
    want = snapshots(ref)[3]
    for name, value in final.items():
        torch.testing.assert_close(value, want[f"model.{name}"], atol=TOL, rtol=0)
