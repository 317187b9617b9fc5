"""The main job (`cogrpo train` with no arguments), shortened to a handful of iterations.

Everything else is the default: toy backbone with the shipped weights, alternating mode, the
paper's head over all four schedule components, toy-geneval + toy-quality mixed 0.5/0.5, the
held-out toy-GenEval before and after. The full-length numbers are in docs/toyworld.md.
"""

from __future__ import annotations

import json

import pytest
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from cogrpo.cli import get_app

SHORT = [
    "--cycles", "1", "--model-iterations", "1", "--schedule-iterations", "1",
    "--model-batch-size", "16", "--schedule-batch-size", "16",
    "--eval-opt", "images_per_item=1", "--sample-grid", "4", "--no-progress",
]


def _train(run_dir, *extra: str):
    result = CliRunner().invoke(get_app(), ["train", "--run-dir", str(run_dir), *SHORT, *extra])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("main") / "run"
    return run_dir, _train(run_dir)


def test_the_defaults_are_the_main_job(main_job) -> None:
    run_dir, _ = main_job
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["backbone"] == "toy" and config["mode"] == "alternating"
    assert config["schedule_policy"] == "paper-head"
    assert config["schedule_components"] == ["r", "tau_r", "tau_s", "cfg"]
    assert config["reward"] == ["toy-geneval", "toy-quality"] and config["reward_weights"] == [0.5, 0.5]


def test_prints_base_vs_trained_table(main_job) -> None:
    _, result = main_job
    out = result.output
    assert "base" in out and "trained" in out
    for tag in ("single_object", "two_object", "counting", "colors", "position", "color_attr", "overall"):
        assert tag in out, tag


def test_run_directory_contents(main_job) -> None:
    run_dir, _ = main_job
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "samples.png", "plots/schedule.png", "plots/rewards.png"):
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    assert list((run_dir / "tb").glob("events.out.tfevents.*")), "TensorBoard events"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["model", "schedule"]
    assert {"reward/toy-geneval/mean", "reward/toy-quality/mean", "monitor/diversity"} <= set(rows[0])
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    ckpt = run_dir / "checkpoints" / latest["checkpoint"]
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "state.json").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("base", "trained", "delta"):
        assert set(summary[key]) >= {"overall", "position", "color_attr"}, key
        assert 0.0 <= summary["base"]["overall"] <= 1.0
    for side in ("base", "trained"):
        scores = json.loads((run_dir / "eval" / side / "scores.json").read_text())
        assert scores["images"] == 52, scores  # every held-out prompt, one image each here
        assert (run_dir / "eval" / side / "grid.png").is_file()


def test_same_seed_same_numbers(main_job, tmp_path) -> None:
    run_dir, _ = main_job
    again = tmp_path / "again"
    _train(again)
    first = json.loads((run_dir / "summary.json").read_text())
    second = json.loads((again / "summary.json").read_text())
    assert first["trained"] == second["trained"] and first["base"] == second["base"]
    assert (run_dir / "metrics.jsonl").read_text().count("\n") == (again / "metrics.jsonl").read_text().count("\n")
    a = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (again / "metrics.jsonl").read_text().splitlines()]
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if not k.startswith("time/")} == {k: v for k, v in rb.items() if not k.startswith("time/")}
    ckpt_a, ckpt_b = (max((d / "checkpoints").glob("iter_*")) for d in (run_dir, again))
    wa, wb = load_file(ckpt_a / "model.safetensors"), load_file(ckpt_b / "model.safetensors")
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


def test_eval_step_sweep_on_the_trained_run(main_job, tmp_path) -> None:
    """`cogrpo eval --benchmark toy-geneval --steps 8,16,48` on the run, a short setting."""
    run_dir, _ = main_job
    out = tmp_path / "sweep"
    result = CliRunner().invoke(get_app(), [
        "eval", "--benchmark", "toy-geneval", "--run", str(run_dir), "--steps", "8,16,48",
        "--limit", "6", "--bench-opt", "images_per_item=1", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["benchmark"] == "toy-geneval" and set(results["steps"]) == {"8", "16", "48"}
    for steps in ("8", "16", "48"):
        assert 0.0 <= results["steps"][steps]["summary"]["overall"]["mean"] <= 1.0
        assert (out / f"steps{steps}" / "seed0" / "grid.png").is_file()
    assert (out / "results.md").is_file()
