"""`cogrpo experiment NAME --quick`: every study runs end to end on tiny settings and writes its report."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cogrpo.cli import get_app
from cogrpo_experiments.lab import Measurement, paired_difference, verdict
from cogrpo_experiments.studies import STUDIES

runner = CliRunner()


def test_verdicts_from_paired_differences() -> None:
    a = Measurement({0: 0.50, 1: 0.40, 2: 0.45})
    b = Measurement({0: 0.60, 1: 0.55, 2: 0.52})
    diff = paired_difference(a, b)
    assert diff["per_seed"] == pytest.approx([0.10, 0.15, 0.07])
    assert diff["mean"] == pytest.approx(0.32 / 3)
    assert verdict(diff, +1) == "reproduced" and verdict(diff, -1) == "not reproduced"
    mixed = paired_difference(a, Measurement({0: 0.55, 1: 0.35, 2: 0.46}))
    assert verdict(mixed, +1) == "inconclusive"


@pytest.mark.slow
def test_every_study_runs_quick_and_writes_its_report(tmp_path) -> None:
    out = tmp_path / "all"
    result = runner.invoke(get_app(), ["experiment", "all", "--quick", "--seeds", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    data = json.loads((out / "results.json").read_text())
    assert [s["name"] for s in data["studies"]] == list(STUDIES)
    for study in data["studies"]:
        assert study["claims"], study["name"]
        for claim in study["claims"]:
            assert claim["verdict"] in ("reproduced", "not reproduced", "inconclusive")
            assert len(claim["difference"]["per_seed"]) == 2
        for arm in study["arms"].values():
            for metric in arm.values():
                assert set(metric["per_seed"]) == {"0", "1"}
        assert (out / "plots" / f"{study['name']}.png").is_file()
        assert f"`{study['name']}`" in report and study["paper_table"] in report
    assert "| study | claim | paper | ours" in report
    # runs are shared between studies: the alternating all-components arm is trained once per seed
    assert len(list((out / "runs").glob("*-seed0"))) == 8


def test_unknown_study_is_a_one_line_error() -> None:
    result = runner.invoke(get_app(), ["experiment", "tables"])
    assert result.exit_code == 2 and "unknown study 'tables'" in result.stderr


def test_full_settings_are_compute_matched() -> None:
    """Every training arm of the full studies rolls out the same number of trajectories."""
    from cogrpo.config import TrainConfig
    from cogrpo_experiments.lab import full_settings
    from cogrpo_experiments.studies import ACTION_SPACE_ARMS, ALL

    base = full_settings().base
    arms = [overrides for _, overrides in ACTION_SPACE_ARMS] + [
        {"mode": "joint", "schedule_components": ALL}, {"mode": "schedule-only", "schedule_components": ALL},
    ]
    rollouts = set()
    for overrides in arms:
        config = TrainConfig.from_dict({**base, **overrides}).validate()
        rollouts.add(sum(config.phase_settings(phase).batch_size for phase, _ in config.phase_plan()))
    assert rollouts == {42 * 32}
