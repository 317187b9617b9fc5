"""Config: help for every field, YAML/TOML files, CLI precedence, the resolved config in the run."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from cogrpo.cli import app, config_from_cli
from cogrpo.config import TrainConfig
from cogrpo.errors import ConfigError


def test_every_field_has_help_and_a_cli_option() -> None:
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata["help"], f.name
        assert "--" + f.name.replace("_", "-") in result.stdout, f.name


def test_yaml_nested_and_flat_keys(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("mode: joint\nmodel:\n  lr: 1.0e-5\n  group_size: 6\nreward: [a, b]\nreward_weights: [0.5, 0.5]\nbackbone_opt: {lora_rank: 8}\n")
    config = TrainConfig.load(path)
    assert (config.mode, config.model_lr, config.model_group_size) == ("joint", 1e-5, 6)
    assert config.reward == ["a", "b"] and config.backbone_opt == {"lora_rank": 8}


def test_toml_file(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('steps = 48\n[schedule]\nlr = 0.0001\ngroup_size = 8\nbatch_size = 256\n')
    config = TrainConfig.load(path)
    assert (config.steps, config.schedule_lr, config.schedule_group_size, config.schedule_batch_size) == (48, 1e-4, 8, 256)


def test_cli_overrides_the_file_which_overrides_defaults(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\nmodel_lr: 0.5\n")
    config = config_from_cli(path, {"steps": 7, "reward": "x,y", "reward_weights": "0.25,0.75", "backbone_opt": ["grid=[8, 8]", "seed=3"]})
    assert config.steps == 7 and config.model_lr == 0.5 and config.seed == TrainConfig().seed
    assert config.reward == ["x", "y"] and config.reward_weights == [0.25, 0.75]
    assert config.backbone_opt == {"grid": [8, 8], "seed": 3}


def test_saved_config_round_trips(tmp_path) -> None:
    config = TrainConfig(mode="naive", steps=9, reward_opt={"imagereward.path": "/w/ImageReward.pt"}, model_betas=[0.8, 0.9])
    config.save(tmp_path / "config.yaml")
    assert TrainConfig.load(tmp_path / "config.yaml") == config


def test_phase_plans() -> None:
    base = dict(cycles=2, model_iterations=2, schedule_iterations=1)
    assert TrainConfig(mode="alternating", **base).phase_plan() == [("model", 0), ("model", 0), ("schedule", 0), ("model", 1), ("model", 1), ("schedule", 1)]
    assert [p for p, _ in TrainConfig(mode="joint", **base).phase_plan()] == ["joint"] * 6
    assert [p for p, _ in TrainConfig(mode="naive", **base).phase_plan()] == ["model"] * 6
    assert [p for p, _ in TrainConfig(mode="schedule-only", **base).phase_plan()] == ["schedule"] * 6


@pytest.mark.parametrize(
    "values,message",
    [
        ({"model_group_size": 0}, "must be >= 2"),
        ({"schedule_batch_size": 20, "schedule_group_size": 8}, "multiple"),
        ({"kl_estimator": "k2"}, "k3 or exact"),
        ({"precision": "fp8"}, "fp32 or bf16"),
        ({"model_iterations": 0, "schedule_iterations": 0}, "nothing to train"),
        ({"reward": ["a", "a"], "reward_weights": [1, 1]}, "twice"),
        ({"schedule_components": [], "mode": "alternating"}, "empty"),
        ({"zero": 4}, "--zero"),
    ],
)
def test_validation_messages(values, message) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(values).validate()


def test_type_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="steps"):
        TrainConfig.from_dict({"steps": "many"})
    with pytest.raises(ConfigError, match="progress"):
        TrainConfig.from_dict({"progress": "maybe"})


def test_eval_benchmark_auto_follows_the_backbone() -> None:
    assert TrainConfig().eval_benchmark_name == "toy-geneval"
    assert TrainConfig(backbone="meissonic").eval_benchmark_name is None
    assert TrainConfig.from_dict({"backbone": "meissonic"}).eval_benchmark_name is None
    assert TrainConfig(backbone="meissonic", eval_benchmark="geneval").eval_benchmark_name == "geneval"
    assert TrainConfig.from_dict({"eval_benchmark": "none"}).eval_benchmark_name is None


def test_eval_options_of_the_auto_benchmark_and_overrides() -> None:
    # the toy world's auto benchmark evaluates 16 images per held-out prompt ...
    assert TrainConfig().eval_options == {"images_per_item": 16}
    # ... --eval-opt overrides its options and adds others
    assert TrainConfig(eval_opt={"images_per_item": 2}).eval_options == {"images_per_item": 2}
    assert TrainConfig(eval_opt={"tags": ["colors"]}).eval_options == {"images_per_item": 16, "tags": ["colors"]}
    # a benchmark named explicitly gets only what the user passed (its own defaults apply)
    assert TrainConfig(eval_benchmark="toy-geneval").eval_options == {}
    assert TrainConfig(backbone="meissonic", eval_benchmark="geneval", eval_opt={"images_per_item": 1}).eval_options == {
        "images_per_item": 1
    }
    assert TrainConfig(backbone="meissonic").eval_options == {}
