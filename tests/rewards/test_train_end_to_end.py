"""`cogrpo train --reward imagereward,hps` end to end on the tiny backbone with random-weight reward models."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import cogrpo.plugins
from cogrpo.cli import app
from cogrpo.plugins import get_plugin_manager
from cogrpo_rewards import plugin as rewards_plugin
from cogrpo_rewards.testing import reward_opt_flags, write_tiny_reward_checkpoints


@pytest.mark.slow
def test_train_with_imagereward_and_hps(tmp_path, monkeypatch) -> None:
    pm = get_plugin_manager([rewards_plugin], autoload=False)
    monkeypatch.setattr(cogrpo.plugins, "default_plugin_manager", lambda: pm)
    options = write_tiny_reward_checkpoints(tmp_path / "weights")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a cat\na red car on a street\n")
    run_dir = tmp_path / "run"
    args = [
        "train", "--backbone", "tiny", "--backbone-opt", "grid=[4, 4]", "--schedule-policy", "tiny-head",
        "--reward", "imagereward,hps", "--reward-weights", "0.5,0.5", *reward_opt_flags(options),
        "--prompts", str(prompts), "--eval-benchmark", "none", "--steps", "3", "--cycles", "1",
        "--model-iterations", "1", "--schedule-iterations", "1", "--model-batch-size", "4", "--model-group-size", "2",
        "--schedule-batch-size", "4", "--schedule-group-size", "2", "--rollout-batch", "4", "--device", "cpu",
        "--no-progress", "--run-dir", str(run_dir),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["model", "schedule"]
    for row in rows:
        for name in ("imagereward", "hps"):
            assert isinstance(row[f"reward/{name}/mean"], float) and f"reward/{name}/std" in row
        assert "adv/zero_std_ratio" in row and "monitor/diversity" in row
        assert row["ratio/first_max_dev"] <= 1e-5
    config = (run_dir / "config.yaml").read_text()
    assert "- 0.5\n- 0.5" in config and "imagereward.path" in config
