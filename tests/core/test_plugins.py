"""Plugin discovery through entry points, duplicate and misspelled registrations, `cogrpo plugins`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cogrpo.plugins
from cogrpo import hookimpl
from cogrpo.cli import app
from cogrpo.errors import PluginError
from cogrpo.plugins import collect, get_plugin_manager, resolve

runner = CliRunner()


def make_external_plugin(root: Path, dist: str, module: str, body: str) -> None:
    """An installed distribution on sys.path: a module plus a dist-info with a `cogrpo` entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{dist}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[cogrpo]\n{module} = {module}\n")


EXTERNAL = """
    from cogrpo import hookimpl

    def golden_reward(*, device, dtype, path=None, **options):
        '''A reward from an external test package.'''
        raise NotImplementedError

    @hookimpl
    def cogrpo_register_rewards():
        return {"golden": golden_reward}
"""


def test_external_plugin_is_discovered_through_its_entry_point(tmp_path, monkeypatch) -> None:
    make_external_plugin(tmp_path, "cogrpo-golden", "cogrpo_golden_plugin", EXTERNAL)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("COGRPO_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pm = get_plugin_manager()
    entry = resolve(pm, "reward", "golden")
    assert entry.distribution == "cogrpo-golden 1.2.3"
    assert entry.description == "A reward from an external test package."
    monkeypatch.setenv("COGRPO_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "golden" not in collect(get_plugin_manager(), "reward"), "the kill switch disables entry points"


def test_plugins_json_lists_builtin_and_installed(tmp_path, monkeypatch) -> None:
    make_external_plugin(tmp_path, "cogrpo-golden", "cogrpo_golden_plugin2", EXTERNAL.replace("golden", "silver"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("COGRPO_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.setattr(cogrpo.plugins, "default_plugin_manager", lambda: get_plugin_manager())
    result = runner.invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = {(r["kind"], r["name"]): r for r in json.loads(result.stdout)}
    assert rows[("backbone", "tiny")]["distribution"] == "builtin"
    assert rows[("reward", "brightness")]["distribution"] == "builtin"
    assert rows[("schedule_policy", "tiny-head")]["distribution"] == "builtin"
    assert rows[("reward", "silver")]["distribution"] == "cogrpo-golden 1.2.3"
    assert ("fixed_schedule", "cosine") in rows  # from the installed cogrpo-schedulers
    table = runner.invoke(app, ["plugins"])
    assert table.exit_code == 0 and "silver" in table.stdout and "tiny-head" in table.stdout


def test_duplicate_names_are_rejected_naming_both_sources() -> None:
    class Dup:
        @hookimpl
        def cogrpo_register_backbones(self):
            return {"tiny": lambda **kw: None}

    pm = get_plugin_manager([Dup()], autoload=False)
    with pytest.raises(PluginError, match="backbone 'tiny' is registered twice: by cogrpo.builtin"):
        collect(pm, "backbone")


def test_misspelled_hook_is_an_error() -> None:
    class Typo:
        @hookimpl
        def cogrpo_register_reward(self):  # missing the s
            return {}

    with pytest.raises(PluginError, match="unknown hook"):
        get_plugin_manager([Typo()], autoload=False)


def test_broken_plugin_import_names_its_distribution(tmp_path, monkeypatch) -> None:
    make_external_plugin(tmp_path, "cogrpo-broken", "cogrpo_broken_plugin", "import does_not_exist_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("COGRPO_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    with pytest.raises(PluginError, match="cogrpo-broken 1.2.3 failed to import"):
        get_plugin_manager()


def test_unknown_name_lists_the_available_ones() -> None:
    pm = get_plugin_manager(autoload=False)
    with pytest.raises(PluginError, match=r"unknown backbone 'tinyy' \(did you mean 'tiny'\?\); available: tiny"):
        resolve(pm, "backbone", "tinyy")
