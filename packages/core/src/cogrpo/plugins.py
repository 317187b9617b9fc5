"""The plugin manager: hook specs, then built-ins, then the ``cogrpo`` entry points.

Set ``COGRPO_DISABLE_PLUGIN_AUTOLOAD=1`` to skip entry points (tests register what they need with
``get_plugin_manager(plugins=[...])``).
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import pluggy

from cogrpo import hookspecs
from cogrpo.errors import PluginError

ENTRY_POINT_GROUP = "cogrpo"
DISABLE_AUTOLOAD_ENV = "COGRPO_DISABLE_PLUGIN_AUTOLOAD"

#: plugin kind -> registration hook name
KINDS: dict[str, str] = {
    "backbone": "cogrpo_register_backbones",
    "reward": "cogrpo_register_rewards",
    "schedule_policy": "cogrpo_register_schedule_policies",
    "fixed_schedule": "cogrpo_register_fixed_schedules",
    "benchmark": "cogrpo_register_benchmarks",
    "prompt_set": "cogrpo_register_prompt_sets",
}


@dataclass(frozen=True)
class PluginEntry:
    """One registered name: its kind, factory, and where it came from."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str  # plugin (module) name as registered with pluggy
    distribution: str  # "name version" of the installing distribution, or "builtin"/"local"

    @property
    def description(self) -> str:
        doc = inspect.getdoc(self.factory) or ""
        return doc.splitlines()[0] if doc else ""


def _builtin_plugins() -> list[object]:
    from cogrpo import builtin

    return [builtin]


def get_plugin_manager(plugins: Iterable[object] = (), *, autoload: bool | None = None) -> pluggy.PluginManager:
    """Build a plugin manager: specs, built-ins, entry points (unless disabled), then ``plugins``."""
    pm = pluggy.PluginManager("cogrpo")
    pm.add_hookspecs(hookspecs)
    for plugin in _builtin_plugins():
        pm.register(plugin, name=f"cogrpo.{plugin.__name__.rsplit('.', 1)[-1]}")
    if autoload is None:
        autoload = os.environ.get(DISABLE_AUTOLOAD_ENV, "") in ("", "0")
    distributions: dict[int, str] = {}
    if autoload:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "unknown"
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not look like a cogrpo bug
                raise PluginError(
                    f"plugin '{ep.name}' ({ep.value}) from {dist} failed to import: {exc!r}; reinstall or uninstall "
                    f"that distribution (or set {DISABLE_AUTOLOAD_ENV}=1 to start without plugins)"
                ) from exc
            pm.register(plugin, name=ep.name)
            distributions[id(plugin)] = dist
    pm.cogrpo_distributions = distributions  # type: ignore[attr-defined]
    for plugin in plugins:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements an unknown hook: {exc}") from exc
    return pm


def _distributions(pm: pluggy.PluginManager) -> dict[int, str]:
    return dict(getattr(pm, "cogrpo_distributions", {}))


def collect(pm: pluggy.PluginManager, kind: str) -> dict[str, PluginEntry]:
    """All registrations of one kind, rejecting duplicate names with a clear error."""
    hook_name = KINDS[kind]
    dists = _distributions(pm)
    hook_caller = getattr(pm.hook, hook_name)
    entries: dict[str, PluginEntry] = {}
    for impl in hook_caller.get_hookimpls():  # registration order
        registered = impl.function() or {}
        plugin_name = _plugin_label(pm, impl.plugin)
        dist = dists.get(id(impl.plugin)) or ("builtin" if plugin_name.startswith("cogrpo.") else "local")
        for name, factory in registered.items():
            if name in entries:
                other = entries[name]
                raise PluginError(
                    f"{kind} '{name}' is registered twice: by {other.plugin} ({other.distribution}) and by "
                    f"{plugin_name} ({dist}); uninstall one of them or rename the registration"
                )
            entries[name] = PluginEntry(kind, name, factory, plugin_name, dist)
    return entries


def _plugin_label(pm: pluggy.PluginManager, plugin: object) -> str:
    name = pm.get_name(plugin) or ""
    if name and not name.isdigit():
        return name
    return getattr(plugin, "__name__", None) or f"{type(plugin).__module__}.{type(plugin).__qualname__}"


def resolve(pm: pluggy.PluginManager, kind: str, name: str) -> PluginEntry:
    """Look one name up; an unknown name lists what is available (and the closest match)."""
    entries = collect(pm, kind)
    if name in entries:
        return entries[name]
    available = ", ".join(sorted(entries)) or "none installed"
    close = difflib.get_close_matches(name, list(entries), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    label = kind.replace("_", " ")
    raise PluginError(f"unknown {label} '{name}'{hint}; available: {available}")


def create(pm: pluggy.PluginManager, kind: str, name: str, **kwargs: Any) -> Any:
    """Resolve ``name`` and call its factory with keyword arguments."""
    return resolve(pm, kind, name).factory(**kwargs)


@cache
def default_plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager used by the CLI (built once)."""
    return get_plugin_manager()


def list_plugins(pm: pluggy.PluginManager) -> list[PluginEntry]:
    """Every registration of every kind, sorted by kind then name."""
    rows: list[PluginEntry] = []
    for kind in KINDS:
        rows.extend(sorted(collect(pm, kind).values(), key=lambda e: e.name))
    return rows


def distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
