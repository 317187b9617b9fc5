"""Registration: the four benchmarks resolve through cogrpo's plugin manager and satisfy the protocol."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
import torch
from PIL import Image

import cogrpo_benchmarks.plugin as plugin
from cogrpo.plugins import collect, create, get_plugin_manager
from cogrpo.protocols import Benchmark
from cogrpo_benchmarks.common import make_grid, markdown_table, to_uint8


def test_registers_the_four_benchmarks_with_descriptions() -> None:
    pm = get_plugin_manager(plugins=[plugin], autoload=False)
    entries = collect(pm, "benchmark")
    assert set(entries) == {"imagereward", "hpsv2", "geneval", "dpg"}
    assert all(e.description for e in entries.values())


def test_entry_point_is_declared() -> None:
    eps = importlib.metadata.entry_points(group="cogrpo")
    assert any(ep.name == "benchmarks" and ep.value == "cogrpo_benchmarks.plugin" for ep in eps)


@pytest.mark.parametrize("name, options", [("imagereward", {"split": "test"}), ("geneval", {"detector": "none"})])
def test_factories_build_protocol_objects(name, options) -> None:
    pm = get_plugin_manager(plugins=[plugin], autoload=False)
    bench = create(pm, "benchmark", name, path=None, **options)
    assert isinstance(bench, Benchmark) and bench.name == name
    assert len(bench.items()) == {"imagereward": 466, "geneval": 553}[name]
    assert bench.images_per_item == {"imagereward": 10, "geneval": 4}[name]


def test_command_line_options_reach_the_factory() -> None:
    from cogrpo.config import parse_key_values

    pm = get_plugin_manager(plugins=[plugin], autoload=False)
    options = parse_key_values(
        ["detector=none", "tags=[colors, position]", "limit=3", "images_per_item=2"], "--bench-opt"
    )
    bench = create(pm, "benchmark", "geneval", path=options.pop("path", None), **options)
    assert [it.metadata["tag"] for it in bench.items()] == ["colors"] * 3 and bench.images_per_item == 2
    assert bench.detector is None


def test_image_helpers() -> None:
    x = torch.tensor([0.0, 0.5, 1.0, 1.2, -0.1]).view(1, 1, 5).expand(3, 1, 5)
    assert to_uint8(x)[0, :, 0].tolist() == [0, 128, 255, 255, 0]  # round(255 x), clamped
    grid = make_grid([torch.zeros(3, 4, 4)] * 3, nrow=2, padding=1)
    assert grid.shape == (3, 2 * 5 + 1, 2 * 5 + 1)
    assert grid[:, 1:5, 1:5].eq(0).all() and grid[:, 6:10, 6:10].eq(1).all()  # 4th cell left blank (white)
    table = markdown_table("t", {"overall": 0.5, "missing": float("nan")})
    assert "| overall | 0.5000 |" in table and "| missing | n/a |" in table


def test_png_round_trip_is_exact(tmp_path) -> None:
    from cogrpo_benchmarks.common import load_image, quantize, save_png

    image = torch.rand(3, 5, 7)
    save_png(image, tmp_path / "x.png")
    assert np.asarray(Image.open(tmp_path / "x.png")).shape == (5, 7, 3)
    assert torch.equal(load_image(tmp_path / "x.png"), quantize(image))
