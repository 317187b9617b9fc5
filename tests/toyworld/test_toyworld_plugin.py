"""Registration of the toy world with cogrpo's plugin manager."""

from __future__ import annotations

import importlib.metadata

import torch

from cogrpo.plugins import collect, create, get_plugin_manager
from cogrpo.protocols import Backbone, Benchmark, Reward
from cogrpo_toyworld import plugin
from cogrpo_toyworld.prompts import balanced_train_prompts


def test_entry_point_is_installed() -> None:
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="cogrpo")}
    assert eps.get("toyworld") == "cogrpo_toyworld.plugin"


def test_registrations_and_factories() -> None:
    pm = get_plugin_manager(plugins=[plugin], autoload=False)
    assert "toy" in collect(pm, "backbone")
    assert {"toy-geneval", "toy-quality"} <= set(collect(pm, "reward"))
    assert "toy-geneval" in collect(pm, "benchmark")
    assert "toy-train" in collect(pm, "prompt_set")
    for kind in ("backbone", "reward", "benchmark", "prompt_set"):
        for entry in collect(pm, kind).values():
            if entry.plugin != "cogrpo.builtin":
                assert entry.description, f"{kind} {entry.name} needs a one-line docstring"

    bb = create(pm, "backbone", "toy", device="cpu", dtype=None, path=None, random_weights=True,
                config={"dim": 32, "depth": 1, "heads": 2, "grid": [7, 7]})
    assert isinstance(bb, Backbone) and bb.feature_dim == 32 and bb.dtype == torch.float32
    for name in ("toy-geneval", "toy-quality"):
        reward = create(pm, "reward", name, device="cpu", dtype=None, path=None)
        assert isinstance(reward, Reward) and reward.name == name
    strict = create(pm, "reward", "toy-geneval", device="cpu", dtype=None, path=None, partial_credit=False)
    assert strict.partial_credit is False
    bench = create(pm, "benchmark", "toy-geneval", path=None, images_per_item=2)
    assert isinstance(bench, Benchmark) and bench.images_per_item == 2
    assert create(pm, "prompt_set", "toy-train") == balanced_train_prompts()


