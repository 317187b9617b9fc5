"""Kill-and-resume gives the uninterrupted result; a crash while checkpointing loses nothing."""

from __future__ import annotations

import json

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from cogrpo import hookimpl
from cogrpo.checkpoint import find_checkpoint, read_checkpoint
from cogrpo.config import TrainConfig
from cogrpo.errors import CheckpointError
from cogrpo.trainer import train

QUIET = Console(quiet=True)


def final_tensors(run_dir):
    ckpt = find_checkpoint(run_dir)
    out = {}
    for name in ("model.safetensors", "schedule_policy.safetensors", "optimizers.safetensors"):
        out.update({f"{name}:{k}": v for k, v in load_file(str(ckpt / name)).items()})
    return ckpt.name, out


class Crash(RuntimeError):
    pass


class CrashAfter:
    """Simulates a kill right after iteration ``n`` finished (its checkpoint is on disk)."""

    def __init__(self, n: int) -> None:
        self.n = n

    @hookimpl
    def cogrpo_after_iteration(self, iteration, phase, metrics):
        if iteration == self.n:
            raise Crash(f"killed after iteration {iteration}")


def config_for(make_config, run_dir, **kw):
    return make_config(run_dir=str(run_dir), model_iterations=3, schedule_iterations=3, **kw)


def test_killed_mid_phase_and_resumed_equals_uninterrupted(make_config, builtin_pm, tmp_path) -> None:
    reference = train(config_for(make_config, tmp_path / "ref"), builtin_pm(), console=QUIET)
    ref_name, ref_tensors = final_tensors(reference.run_dir)

    # stopped in the middle of the model phase (after iteration 1 of 0..2), then in the schedule phase
    run_dir = tmp_path / "killed"
    with pytest.raises(Crash):
        train(config_for(make_config, run_dir), builtin_pm(CrashAfter(1)), console=QUIET)
    assert read_checkpoint(run_dir).state.iteration == 2
    with pytest.raises(Crash):
        train(TrainConfig(resume=str(run_dir), progress=False), builtin_pm(CrashAfter(4)), console=QUIET)
    assert read_checkpoint(run_dir).state.phase == "schedule"
    resumed = train(TrainConfig(resume=str(run_dir), progress=False), builtin_pm(), console=QUIET)

    name, tensors = final_tensors(resumed.run_dir)
    assert name == ref_name and tensors.keys() == ref_tensors.keys()
    for key in tensors:
        assert torch.equal(tensors[key], ref_tensors[key]), key
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(6)), "every iteration logged once"
    ref_rows = [json.loads(line) for line in (reference.run_dir / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(rows, ref_rows):
        assert {k: v for k, v in a.items() if not k.startswith("time/")} == {k: v for k, v in b.items() if not k.startswith("time/")}


def test_max_iterations_stops_and_resume_finishes(make_config, builtin_pm, tmp_path) -> None:
    reference = train(config_for(make_config, tmp_path / "ref"), builtin_pm(), console=QUIET)
    partial = train(config_for(make_config, tmp_path / "part", max_iterations=2), builtin_pm(), console=QUIET)
    assert partial.summary["iterations"] == 2
    done = train(TrainConfig(resume=str(partial.run_dir), progress=False), builtin_pm(), console=QUIET)
    assert done.summary["iterations"] == 6
    _, a = final_tensors(reference.run_dir)
    _, b = final_tensors(done.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(make_config, builtin_pm, tmp_path, monkeypatch) -> None:
    import cogrpo.checkpoint as ckpt_module

    run_dir = tmp_path / "run"
    real_save = ckpt_module.save_file
    calls = {"n": 0}

    def flaky_save(tensors, filename, *args, **kwargs):
        calls["n"] += 1
        if "iter_000002" in filename and calls["n"] > 4:  # die in the middle of the second checkpoint
            real_save(tensors, filename, *args, **kwargs)
            raise OSError("disk full (simulated)")
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(ckpt_module, "save_file", flaky_save)
    with pytest.raises(OSError, match="simulated"):
        train(config_for(make_config, run_dir), builtin_pm(), console=QUIET)
    loaded = read_checkpoint(run_dir)
    assert loaded.path.name == "iter_000001" and loaded.state.iteration == 1
    assert loaded.model is not None and loaded.optimizer_tensors
    monkeypatch.setattr(ckpt_module, "save_file", real_save)
    resumed = train(TrainConfig(resume=str(run_dir), progress=False), builtin_pm(), console=QUIET)
    assert resumed.summary["iterations"] == 6
    assert not list((run_dir / "checkpoints").glob(".iter_*")), "the half-written checkpoint was cleaned up"


def test_corrupt_checkpoint_is_a_clear_error(make_config, builtin_pm, tmp_path) -> None:
    result = train(config_for(make_config, tmp_path / "run", max_iterations=1), builtin_pm(), console=QUIET)
    ckpt = find_checkpoint(result.run_dir)
    (ckpt / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(result.run_dir)
