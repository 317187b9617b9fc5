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


def paper_head(*, feature_dim: int, feature_grid: tuple[int, int], components: tuple[str, ...], **options: Any):
    """Paper head: depthwise + pointwise conv over the token grid, MLP with AdaLN-Zero from progress."""
    from cogrpo_schedulers.paper_head import PaperHead

    return _build("paper-head", PaperHead, feature_dim, feature_grid, components, options)


def mlp_head(*, feature_dim: int, feature_grid: tuple[int, int], components: tuple[str, ...], **options: Any):
    """Small MLP on grid-pooled features and a progress embedding (cheaper than paper-head)."""
    from cogrpo_schedulers.mlp_head import MLPHead

    return _build("mlp-head", MLPHead, feature_dim, feature_grid, components, options)


def _build(name: str, head_cls: type, feature_dim: int, feature_grid: Any, components: Any, options: dict):
    """Construct a head; unknown options and invalid sizes become one-line ``ConfigError``s."""
    import inspect

    from cogrpo.errors import ConfigError

    required = ("feature_dim", "feature_grid", "components")
    allowed = [p for p in inspect.signature(head_cls).parameters if p not in required]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        valid = ", ".join(allowed)
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for schedule policy '{name}'; valid: {valid}")
    try:
        grid, comps = tuple(feature_grid), tuple(components)
        return head_cls(feature_dim=feature_dim, feature_grid=grid, components=comps, **options)
    except (ValueError, TypeError) as exc:  # e.g. hidden_dim=0 or a non-numeric size
        raise ConfigError(f"schedule policy '{name}': {exc}") from exc


@hookimpl
def cogrpo_register_schedule_policies() -> dict:
    return {"paper-head": paper_head, "mlp-head": mlp_head}
