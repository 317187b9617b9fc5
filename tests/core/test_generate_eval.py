"""`cogrpo generate` and the eval runner on the tiny backbone with a stand-in benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import cogrpo.plugins
from cogrpo import EvalItem, hookimpl
from cogrpo.cli import app
from cogrpo.plugins import get_plugin_manager

runner = CliRunner()


class CountingBenchmark:
    """A stand-in benchmark: metric = mean brightness; writes one PNG per image."""

    name = "brightness-bench"
    images_per_item = 2

    def items(self):
        return [EvalItem(id=f"{i:03d}", prompt=p, metadata={"i": i}) for i, p in enumerate(["a red circle", "two cats", "a blue dog"])]

    def evaluate(self, generated, out_dir: Path):
        values = []
        for g in generated:
            assert g.images.shape[0] == self.images_per_item and g.tokens is not None
            for j, img in enumerate(g.images):
                Image.fromarray((img * 255).byte().permute(1, 2, 0).numpy()).save(out_dir / f"{g.item.id}_{j}.png")
            values.append(g.images.mean().item())
        return {"overall": sum(values) / len(values)}


class BenchPlugin:
    @hookimpl
    def cogrpo_register_benchmarks(self):
        def factory(*, path=None, **options):
            """Stand-in benchmark for tests."""
            return CountingBenchmark()

        return {"brightness-bench": factory}


@pytest.fixture(autouse=True)
def plugins(monkeypatch):
    pm = get_plugin_manager([BenchPlugin()], autoload=False)
    monkeypatch.setattr(cogrpo.plugins, "default_plugin_manager", lambda: pm)


def test_generate_writes_pngs_deterministically(tmp_path) -> None:
    args = ["generate", "a red circle", "two cats", "--backbone", "tiny", "--steps", "4", "--per-prompt", "2", "--device", "cpu"]
    a = runner.invoke(app, args + ["--out", str(tmp_path / "a")])
    b = runner.invoke(app, args + ["--out", str(tmp_path / "b"), "--batch-size", "1"])
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    files = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert files == ["0000_00.png", "0000_01.png", "0001_00.png", "0001_01.png"]
    for name in files:  # the same seed gives the same image whatever the batch size
        assert Image.open(tmp_path / "a" / name).tobytes() == Image.open(tmp_path / "b" / name).tobytes()
    index = [json.loads(line) for line in (tmp_path / "a" / "index.jsonl").read_text().splitlines()]
    assert index[2] == {"file": "0001_00.png", "prompt": "two cats", "seed": 0}


def test_eval_sweeps_steps_and_seeds_and_compares(tmp_path, make_config, builtin_pm) -> None:
    from rich.console import Console

    from cogrpo.trainer import train

    run = train(make_config(run_dir=str(tmp_path / "run")), builtin_pm(), console=Console(quiet=True))
    base = runner.invoke(app, ["eval", "--benchmark", "brightness-bench", "--backbone", "tiny", "--backbone-opt", "grid=[4, 4]",
                               "--backbone-opt", "seed=3", "--steps", "3,5", "--seeds", "2", "--out", str(tmp_path / "base"), "--device", "cpu"])
    assert base.exit_code == 0, base.output
    trained = runner.invoke(app, ["eval", "--benchmark", "brightness-bench", "--run", str(run.run_dir), "--steps", "3,5",
                                  "--seeds", "2", "--out", str(tmp_path / "trained"), "--rewards", "brightness", "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    results = json.loads((tmp_path / "trained" / "results.json").read_text())
    assert results["schedule"] == "learned" and set(results["steps"]) == {"3", "5"}
    summary = results["steps"]["5"]["summary"]
    seeds = results["steps"]["5"]["seeds"]
    assert set(seeds) == {"0", "1"} and seeds["0"] != seeds["1"]
    assert summary["overall"]["ci95"][0] <= summary["overall"]["mean"] <= summary["overall"]["ci95"][1]
    assert "reward/brightness" in summary
    # the benchmark's own output landed per step count and seed
    assert len(list((tmp_path / "trained" / "steps3" / "seed1").glob("*.png"))) == 6
    assert "| 3 |" in (tmp_path / "trained" / "results.md").read_text()
    compare = runner.invoke(app, ["eval", "--compare", str(tmp_path / "base"), str(tmp_path / "trained")])
    assert compare.exit_code == 0 and "overall" in compare.stdout and "Δ" in compare.stdout
