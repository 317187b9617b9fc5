"""Hook specifications: everything a cogrpo plugin can implement.

Plugins implement these with ``from cogrpo import hookimpl`` and are found through the
``cogrpo`` entry-point group (``[project.entry-points.cogrpo] name = "package.module"``). Every
hook is prefixed ``cogrpo_``; a misspelled hook name is an error at start-up.

Registration hooks return ``{name: factory}``; names must be unique across all installed plugins
(a duplicate is a one-line error naming both distributions). A factory's docstring's first line
is what ``cogrpo plugins`` shows. Factories are called with keyword arguments only:

* backbone: ``factory(*, device, dtype, path, **options) -> Backbone``
* reward: ``factory(*, device, dtype, path, **options) -> Reward``
* schedule policy: ``factory(*, feature_dim, feature_grid, components, **options) -> nn.Module``
* fixed schedule: ``factory(**options) -> FixedSchedule``
* benchmark: ``factory(*, path, **options) -> Benchmark``
* prompt set: ``factory() -> list[str]``

Import heavy dependencies inside the factory, not at module level: ``cogrpo plugins`` imports
every plugin module.

Under ``--distributed`` every hook runs on every process with the global arguments, except
``cogrpo_log_metrics``, which runs on rank 0 only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import typer

    from cogrpo.config import TrainConfig

hookspec = pluggy.HookspecMarker("cogrpo")

# -------------------------------------------------------------------------------------------------
# Registration
# -------------------------------------------------------------------------------------------------


@hookspec
def cogrpo_register_backbones() -> dict[str, Callable[..., Any]]:
    """Register masked-diffusion backbones (:class:`cogrpo.protocols.Backbone`).

    :return: a mapping from backbone name (``--backbone NAME``) to its factory.
    """


@hookspec
def cogrpo_register_rewards() -> dict[str, Callable[..., Any]]:
    """Register reward models (:class:`cogrpo.protocols.Reward`).

    :return: a mapping from reward name (``--reward NAME[,NAME]``) to its factory.
    """


@hookspec
def cogrpo_register_schedule_policies() -> dict[str, Callable[..., Any]]:
    """Register learned schedule-policy heads (:class:`cogrpo.protocols.SchedulePolicy`).

    :return: a mapping from policy name (``--schedule-policy NAME``) to its factory.
    """


@hookspec
def cogrpo_register_fixed_schedules() -> dict[str, Callable[..., Any]]:
    """Register hand-designed schedules (:class:`cogrpo.protocols.FixedSchedule`).

    They serve as the residual base of a learned policy (``--base-schedule NAME``) and as
    baselines. ``default`` always means the backbone's own default schedule.

    :return: a mapping from schedule name to its factory.
    """


@hookspec
def cogrpo_register_benchmarks() -> dict[str, Callable[..., Any]]:
    """Register evaluation benchmarks (:class:`cogrpo.protocols.Benchmark`).

    :return: a mapping from benchmark name (``cogrpo eval --benchmark NAME``) to its factory.
    """


@hookspec
def cogrpo_register_prompt_sets() -> dict[str, Callable[..., Any]]:
    """Register named training prompt sets (``--prompts NAME``; a file path works too).

    :return: a mapping from prompt-set name to a factory ``factory() -> list[str]``.
    """


@hookspec
def cogrpo_register_commands(app: typer.Typer) -> None:
    """Add sub-commands to the ``cogrpo`` command line.

    :param app: the root Typer application; call ``app.command()`` or ``app.add_typer()``.
    """


# -------------------------------------------------------------------------------------------------
# Run setup
# -------------------------------------------------------------------------------------------------


@hookspec
def cogrpo_train_start(config: TrainConfig, run_dir: Path) -> None:
    """Called once before the first training iteration (also on ``--resume``).

    :param config: the resolved, validated configuration (do not mutate).
    :param run_dir: the run directory; plugins may write their own files below it.
    """


# -------------------------------------------------------------------------------------------------
# Rollout and optimisation
# -------------------------------------------------------------------------------------------------


@hookspec
def cogrpo_after_rollout(iteration: int, phase: str, prompts: list[str], rewards: dict[str, Any]) -> None:
    """Called after a batch of trajectories has been rolled out and scored.

    :param iteration: the global iteration index (0-based).
    :param phase: ``"model"``, ``"schedule"`` or ``"joint"``.
    :param prompts: one prompt per trajectory (groups are contiguous).
    :param rewards: ``{reward name: [B] float tensor}``.
    """


@hookspec
def cogrpo_after_iteration(iteration: int, phase: str, metrics: dict[str, float]) -> None:
    """Called after an iteration's update and checkpoint, before the next iteration starts.

    Raising here stops the run; the checkpoint of this iteration (if one was due) is on disk.

    :param iteration: the global iteration index (0-based) that just finished.
    :param phase: the phase of that iteration.
    :param metrics: the iteration's metrics (namespaced keys, see SPEC §6).
    """


# -------------------------------------------------------------------------------------------------
# Logging
# -------------------------------------------------------------------------------------------------


@hookspec
def cogrpo_log_metrics(step: int, metrics: dict[str, float]) -> None:
    """Receive every logged metrics row (e.g. to forward it to an experiment tracker); rank 0 only.

    :param step: the global iteration index.
    :param metrics: namespaced metric values.
    """


@hookspec
def cogrpo_train_end(run_dir: Path, summary: dict[str, Any]) -> None:
    """Called once after the last iteration and the final evaluation.

    :param run_dir: the run directory.
    :param summary: the run's final summary (also written to ``summary.json``).
    """
