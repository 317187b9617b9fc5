"""In-process checks of the distributed options: batch layout errors, launcher mismatches, the
DeepSpeed config cogrpo builds, resuming with the saved distributed settings, and a world of one
under ``--distributed ddp`` giving bitwise the numbers of a plain single-process run."""

from __future__ import annotations

import json
import os

import dist_worker
import pytest
import torch
from distributed_helpers import snapshots, tiny_config

from cogrpo.config import TrainConfig
from cogrpo.distributed import check_batch_layout, deepspeed_config, start
from cogrpo.errors import ConfigError
from cogrpo.run import RunDir

pytestmark = pytest.mark.distributed


def test_batches_must_split_evenly_over_the_processes() -> None:
    config = TrainConfig(
        model_batch_size=12,
        model_group_size=4,
        model_micro_batch=4,
        schedule_batch_size=16,
        schedule_group_size=8,
        schedule_micro_batch=16,
    )
    check_batch_layout(config, 2)  # 6 trajectories per process; micro-batches of 4 = 2 per process
    check_batch_layout(config, 1)
    with pytest.raises(ConfigError, match=r"--model-micro-batch 4 .* 8 processes; use a multiple of 8"):
        check_batch_layout(
            TrainConfig(
                model_batch_size=16,
                model_group_size=4,
                model_micro_batch=4,
                schedule_batch_size=16,
                schedule_micro_batch=16,
            ),
            8,
        )
    with pytest.raises(ConfigError, match=r"--model-batch-size 12 does not split over 8 processes"):
        check_batch_layout(config, 8)
    with pytest.raises(ConfigError, match=r"--schedule-micro-batch 6"):
        check_batch_layout(
            TrainConfig(
                model_batch_size=8,
                model_micro_batch=4,
                schedule_batch_size=12,
                schedule_group_size=4,
                schedule_micro_batch=6,
            ),
            4,
        )
    # a micro-batch of the whole batch needs no divisibility of its own
    check_batch_layout(
        TrainConfig(model_batch_size=8, model_micro_batch=32, schedule_batch_size=8, schedule_micro_batch=64), 4
    )


def test_a_launch_of_several_processes_needs_distributed(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="--distributed ddp"):
        with start(TrainConfig()):
            pass


def test_distributed_options_are_validated(tmp_path) -> None:
    with pytest.raises(ConfigError, match="--deepspeed-config needs --distributed deepspeed"):
        TrainConfig(deepspeed_config=str(tmp_path / "ds.json")).validate()
    with pytest.raises(ConfigError, match="--dist-timeout must be positive"):
        TrainConfig(dist_timeout=0).validate()
    with pytest.raises(ConfigError, match="--distributed must be"):
        TrainConfig(distributed="fsdp").validate()


def test_deepspeed_config(tmp_path) -> None:
    values = deepspeed_config(TrainConfig(distributed="deepspeed", zero=3, max_grad_norm=0.5), world_size=4)
    assert values["zero_optimization"] == {"stage": 3}
    assert values["managed_gradient_accumulation"] is False, "step() must be cogrpo's accumulation boundary"
    assert values["gradient_clipping"] == 0.5 and "optimizer" not in values
    assert (
        values["train_batch_size"]
        == values["train_micro_batch_size_per_gpu"] * values["gradient_accumulation_steps"] * 4
    )
    assert deepspeed_config(TrainConfig(distributed="deepspeed", max_grad_norm=None), 2)["gradient_clipping"] == 0.0

    extra = tmp_path / "ds.json"
    extra.write_text(json.dumps({"zero_optimization": {"offload_optimizer": {"device": "cpu"}}, "steps_per_print": 10}))
    merged = deepspeed_config(TrainConfig(distributed="deepspeed", zero=2, deepspeed_config=str(extra)), 2)
    assert merged["zero_optimization"] == {"stage": 2, "offload_optimizer": {"device": "cpu"}}
    assert merged["steps_per_print"] == 10 and merged["managed_gradient_accumulation"] is False
    for bad, message in [
        ({"optimizer": {"type": "Adam"}}, "must not set optimizer"),
        ({"bf16": {"enabled": True}, "managed_gradient_accumulation": True}, "not set bf16, managed_gradient_acc"),
        ({"zero_optimization": {"stage": 3}}, "sets ZeRO stage 3 but --zero is 2"),
    ]:
        extra.write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match=message):
            deepspeed_config(TrainConfig(distributed="deepspeed", zero=2, deepspeed_config=str(extra)), 2)
    with pytest.raises(ConfigError, match="not found"):
        deepspeed_config(TrainConfig(distributed="deepspeed", deepspeed_config=str(tmp_path / "missing.json")), 2)


def test_resume_uses_the_saved_distributed_settings(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    TrainConfig(distributed="deepspeed", zero=3, dist_timeout=60).save(run / "config.yaml")
    resumed = RunDir.effective_config(TrainConfig(resume=str(run), dist_timeout=120))
    assert (resumed.distributed, resumed.zero, resumed.dist_timeout) == ("deepspeed", 3, 120)
    assert resumed.resume is None and resumed.run_dir == str(run)
    assert not (run / "metrics.jsonl").exists()


def test_world_of_one_ddp_equals_a_plain_run_bitwise(tmp_path, prompts_path) -> None:
    """``--distributed ddp`` without a launcher: a gloo group of one; every number as without it."""
    env_before = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    plain = tiny_config(tmp_path / "plain", prompts_path)
    dist_worker.run({"config": plain, "out": str(tmp_path / "plain_out")})
    dist_worker.run(
        {"config": dict(plain, run_dir=str(tmp_path / "ddp"), distributed="ddp"), "out": str(tmp_path / "ddp_out")}
    )
    assert not torch.distributed.is_initialized()
    assert {k: os.environ.get(k) for k in env_before} == env_before, "launcher variables set for the run are removed"
    want, got = snapshots(tmp_path / "plain_out"), snapshots(tmp_path / "ddp_out")
    assert sorted(got) == [0, 1, 2, 3]
    for it in want:
        for name, value in want[it].items():
            assert torch.equal(got[it][name], value), (it, name)
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda r: {k: v for k, v in r.items() if not k.startswith("time/")}  # noqa: E731
    assert [strip(r) for r in rows] == [strip(r) for r in ref]
