"""Fixtures for core tests: a tiny, fast configuration on the built-in test plugins only."""

from __future__ import annotations

from pathlib import Path

import pytest

from cogrpo.config import TrainConfig
from cogrpo.plugins import get_plugin_manager

PROMPTS = ["a red circle", "two blue squares", "a green cross above a yellow square", "three purple triangles"]


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


@pytest.fixture
def make_config(tmp_path: Path, prompts_file: Path):
    """``make_config(**overrides)``: the tiny backbone, a tiny head, the brightness reward, 4x4 tokens."""

    def make(**overrides) -> TrainConfig:
        values = dict(
            run_dir=str(tmp_path / "run"),
            backbone="tiny",
            backbone_opt={"grid": [4, 4], "seed": 3},
            reward=["brightness"],
            reward_weights=[1.0],
            prompts=str(prompts_file),
            schedule_policy="tiny-head",
            eval_benchmark=None,
            device="cpu",
            steps=4,
            cycles=1,
            model_iterations=2,
            schedule_iterations=2,
            model_group_size=4,
            model_batch_size=8,
            model_micro_batch=4,
            schedule_group_size=4,
            schedule_batch_size=8,
            schedule_micro_batch=4,
            rollout_batch=8,
            model_lr=1e-3,
            schedule_lr=3e-2,
            progress=False,
            checkpoint_every=1,
        )
        values.update(overrides)
        return TrainConfig.from_dict(values).validate()

    return make


@pytest.fixture
def builtin_pm():
    """A plugin manager with only cogrpo's built-in plugins (tiny backbone, tiny-head, brightness)."""
    return lambda *plugins: get_plugin_manager(list(plugins), autoload=False)
