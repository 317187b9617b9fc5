"""Bad input: one-line error, exit code 2, no traceback, and no existing run data lost."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import cogrpo.plugins
from cogrpo import RewardOutput, hookimpl
from cogrpo.cli import app
from cogrpo.plugins import get_plugin_manager

runner = CliRunner()


class BadRewards:
    """Test plugin: rewards that misbehave."""

    @hookimpl
    def cogrpo_register_rewards(self):
        def nan_reward(*, device, dtype, path=None, **options):
            """Returns NaN."""
            return _Reward("nan", lambda images: torch.full((images.shape[0],), float("nan")))

        def raising_reward(*, device, dtype, path=None, **options):
            """Raises."""

            def fail(images):
                raise RuntimeError("CUDA out of memory (simulated)")

            return _Reward("raising", fail)

        return {"nan": nan_reward, "raising": raising_reward}


class _Reward:
    def __init__(self, name, fn):
        self.name, self.fn = name, fn
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def __call__(self, images, prompts, *, tokens=None, metadata=None):
        return RewardOutput(self.fn(images))


@pytest.fixture(autouse=True)
def test_plugins(monkeypatch):
    pm = get_plugin_manager([BadRewards()], autoload=False)
    monkeypatch.setattr(cogrpo.plugins, "default_plugin_manager", lambda: pm)
    monkeypatch.delenv("COGRPO_DEBUG", raising=False)


@pytest.fixture
def base_args(tmp_path: Path, prompts_file: Path) -> list[str]:
    return [
        "train", "--backbone", "tiny", "--reward", "brightness", "--reward-weights", "1", "--prompts", str(prompts_file),
        "--schedule-policy", "tiny-head", "--eval-benchmark", "none", "--steps", "3", "--cycles", "1",
        "--model-iterations", "1", "--schedule-iterations", "1", "--model-batch-size", "4", "--model-group-size", "2",
        "--schedule-batch-size", "4", "--schedule-group-size", "2", "--rollout-batch", "4", "--no-progress",
        "--device", "cpu", "--backbone-opt", "grid=[4, 4]", "--checkpoint-every", "1",
    ]


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def existing_run(base_args, tmp_path) -> Path:
    run_dir = tmp_path / "existing"
    result = runner.invoke(app, base_args + ["--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    return run_dir


BAD_TRAIN_OPTIONS = [
    (["--backbone", "nope"], ["unknown backbone 'nope'", "available: tiny"]),
    (["--reward", "brightnes"], ["unknown reward 'brightnes'", "did you mean 'brightness'"]),
    (["--schedule-policy", "missing-head"], ["unknown schedule policy 'missing-head'", "tiny-head"]),
    (["--model-group-size", "-2"], ["--model-group-size must be >= 2"]),
    (["--model-group-size", "1"], ["--model-group-size must be >= 2"]),
    (["--schedule-group-size", "1"], ["--schedule-group-size must be >= 2"]),
    (["--clip-eps-low", "0"], ["--clip-eps-low must be > 0"]),
    (["--clip-eps-high", "-0.1"], ["--clip-eps-high must be > 0"]),
    (["--steps", "1"], ["--steps must be >= 2"]),
    (["--model-batch-size", "5"], ["multiple of --model-group-size"]),
    (["--reward-weights", "0.5,0.5"], ["1 rewards but 2 --reward-weights"]),
    (["--mode", "sideways"], ["--mode must be one of"]),
    (["--timestep-fraction", "0"], ["--timestep-fraction must be in (0, 1]"]),
    (["--schedule-sigma", "0"], ["--schedule-sigma must be > 0"]),
    (["--schedule-components", "r,gamma"], ["unknown --schedule-components"]),
    (["--model-lr", "nan"], ["--model-lr must be a finite number"]),
    (["--reward", "nan"], ["reward 'nan' returned", "non-finite"]),
    (["--reward", "raising"], ["reward 'raising' raised RuntimeError", "out of memory"]),
    (["--reward-opt", "other.path=/x"], ["--reward-opt names reward 'other'"]),
    (["--model-iterations", "abc"], []),  # a type error from the option parser itself
]


@pytest.mark.parametrize("extra,fragments", BAD_TRAIN_OPTIONS, ids=[" ".join(e) for e, _ in BAD_TRAIN_OPTIONS])
def test_bad_train_options(extra, fragments, base_args, tmp_path, existing_run) -> None:
    before = tree_digest(existing_run)
    result = runner.invoke(app, base_args + ["--run-dir", str(tmp_path / "new")] + extra)
    if fragments:
        assert_one_line_error(result, *fragments)
    else:
        assert result.exit_code == 2 and "Traceback" not in result.output
    assert tree_digest(existing_run) == before


def test_reward_failure_keeps_the_last_good_checkpoint(base_args, tmp_path) -> None:
    run_dir = tmp_path / "run"
    ok = runner.invoke(app, base_args + ["--run-dir", str(run_dir), "--model-iterations", "1", "--schedule-iterations", "0"])
    assert ok.exit_code == 0, ok.output
    ckpt = run_dir / "checkpoints"
    before = tree_digest(ckpt)
    config = (run_dir / "config.yaml").read_text().replace("- brightness", "- nan")
    (run_dir / "config.yaml").write_text(config.replace("model_iterations: 1", "model_iterations: 2"))
    result = runner.invoke(app, ["train", "--resume", str(run_dir)])
    assert_one_line_error(result, "reward 'nan'")
    assert tree_digest(ckpt) == before


def test_existing_run_directory_is_never_overwritten(base_args, existing_run) -> None:
    before = tree_digest(existing_run)
    result = runner.invoke(app, base_args + ["--run-dir", str(existing_run)])
    assert_one_line_error(result, "already holds a run", "--resume")
    assert tree_digest(existing_run) == before


def test_resume_errors(base_args, tmp_path, existing_run) -> None:
    assert_one_line_error(runner.invoke(app, ["train", "--resume", str(tmp_path / "nowhere")]), "no config.yaml")
    assert_one_line_error(runner.invoke(app, ["train", "--resume", str(existing_run), "--model-lr", "0.1"]), "drop --model-lr")
    state = sorted((existing_run / "checkpoints").glob("iter_*"))[-1] / "state.json"
    before = state.read_bytes()
    state.write_text("{not json")
    assert_one_line_error(runner.invoke(app, ["train", "--resume", str(existing_run)]), "corrupt")
    assert state.read_text() == "{not json", "a failed resume must not touch the checkpoint"
    state.write_bytes(before)


def test_prompt_and_config_file_errors(base_args, tmp_path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert_one_line_error(runner.invoke(app, base_args + ["--run-dir", str(tmp_path / "a"), "--prompts", str(empty)]), "no prompts")
    assert_one_line_error(runner.invoke(app, base_args + ["--run-dir", str(tmp_path / "b"), "--prompts", str(tmp_path / "no.txt")]), "prompt file not found")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  lr: 1.0e-4\n  learning_rate: 3\n")
    assert_one_line_error(runner.invoke(app, ["train", "--config", str(bad)]), "unknown config key(s): model_learning_rate")
    broken = tmp_path / "broken.toml"
    broken.write_text("steps = = 3")
    assert_one_line_error(runner.invoke(app, ["train", "--config", str(broken)]), "cannot parse")
    assert_one_line_error(runner.invoke(app, ["train", "--config", str(tmp_path / "none.yaml")]), "config file not found")


def test_other_commands_bad_input(tmp_path) -> None:
    assert_one_line_error(runner.invoke(app, ["generate", "--backbone", "tiny"]), "no prompts")
    assert_one_line_error(runner.invoke(app, ["generate", "x", "--run", str(tmp_path / "missing")]), "no such run or checkpoint")
    assert_one_line_error(runner.invoke(app, ["eval", "--benchmark", "nope", "--backbone", "tiny"]), "unknown benchmark 'nope'")
    assert_one_line_error(runner.invoke(app, ["eval", "--backbone", "tiny"]), "give --benchmark")
    assert_one_line_error(runner.invoke(app, ["eval", "--compare", str(tmp_path), str(tmp_path)]), "no results.json")
    bad = tmp_path / "det.jsonl"
    bad.write_text('{"id": "x"}\n')
    assert_one_line_error(runner.invoke(app, ["eval", "geneval-score", "--detections", str(bad)]), "line 1")


def test_debug_env_shows_the_traceback(base_args, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COGRPO_DEBUG", "1")
    result = runner.invoke(app, base_args + ["--run-dir", str(tmp_path / "x"), "--backbone", "nope"])
    assert result.exit_code != 0 and result.exception is not None
    assert "unknown backbone" in str(result.exception)


def test_geneval_score_command_on_the_fixture() -> None:
    cases = Path(__file__).parents[1] / "fixtures/geneval/cases.jsonl"
    result = runner.invoke(app, ["eval", "geneval-score", "--detections", str(cases)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    expected = {json.loads(line)["id"]: json.loads(line)["expected_correct"] for line in cases.read_text().splitlines()}
    verdicts = {row["id"]: row["correct"] for row in lines[:-1]}
    assert verdicts == expected
    summary = lines[-1]["summary"]
    assert summary["overall"] == pytest.approx(0.5)  # 25 of 50 correct in each of the six tags
    assert set(summary) == {"single_object", "two_object", "counting", "colors", "position", "color_attr", "overall"}


def test_deepspeed_launcher_local_rank_is_accepted(monkeypatch) -> None:
    from cogrpo.cli import _strip_launcher_local_rank

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert _strip_launcher_local_rank(["cogrpo", "--local_rank=1", "train", "--steps", "4"]) == ["cogrpo", "train", "--steps", "4"]
    import os

    assert os.environ["LOCAL_RANK"] == "1"
    assert _strip_launcher_local_rank(["cogrpo", "train", "--local_rank", "3"]) == ["cogrpo", "train"]
