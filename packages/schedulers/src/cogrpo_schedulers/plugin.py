"""Registers cogrpo_schedulers' fixed schedules and learned heads with cogrpo."""

from __future__ import annotations

from typing import Any

from cogrpo import hookimpl


def cosine(**options: Any):
    """Cosine^γ re-mask ratio (γ=1: Meissonic's default), τr 2→0, τs 1, CFG 9 (options override)."""
    from cogrpo_schedulers.fixed import CosineSchedule

    if "remask_temperature" in options:
        options["remask_temperature"] = tuple(options["remask_temperature"])
    return CosineSchedule(**options)


def linear(**options: Any):
    """Linear re-mask ratio 1 − (k+1)/T (aMUSEd's alternative), τr 2→0, τs 1, CFG 9."""
    from cogrpo_schedulers.fixed import LinearSchedule

    if "remask_temperature" in options:
        options["remask_temperature"] = tuple(options["remask_temperature"])
    return LinearSchedule(**options)


@hookimpl
def cogrpo_register_fixed_schedules() -> dict:
    return {"cosine": cosine, "linear": linear}
