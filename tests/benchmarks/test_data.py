"""The bundled prompt files: complete, in upstream order, checked against independent oracles."""

from __future__ import annotations

import json
import re
from collections import Counter
from importlib import resources

from cogrpo.geneval import GENEVAL_TAGS
from cogrpo_benchmarks.geneval import load_metadata, object_names
from cogrpo_benchmarks.imagereward import load_prompts

DATA = resources.files("cogrpo_benchmarks").joinpath("data")


def test_imagereward_benchmark_prompts_match_upstream_endpoints() -> None:
    items = load_prompts("benchmark")
    assert len(items) == 100 and len({i.id for i in items}) == 100
    # first / last entries of THUDM/ImageReward benchmark/benchmark-prompts.json, copied by hand
    assert (items[0].id, items[0].prompt) == ("005695-0057", "a concept art of a vehicle, cyberpunk")
    assert (items[-1].id, items[-1].prompt) == ("000562-0011", "a coffee mug made of cardboard")
    assert all(re.fullmatch(r"\d{6}-\d{4}", i.id) for i in items)
    # the file is the upstream file unchanged (upstream size: 14,558 characters)
    assert len(DATA.joinpath("imagereward", "benchmark-prompts.json").read_text("utf-8")) == 14558


def test_imagereward_test_split_has_466_unique_entries() -> None:
    items = load_prompts("test")
    assert len(items) == 466 and len({i.id for i in items}) == 466
    assert (items[0].id, items[1].prompt) == ("005658-0040", "cola made from cockroaches")
    assert items[-1].id == "002203-0043"
    assert all(i.prompt for i in items)


def test_licence_and_attribution_files_are_bundled() -> None:
    ir_licence = DATA.joinpath("imagereward", "LICENSE").read_text("utf-8")
    assert "Apache License" in ir_licence and "Copyright 2023 Jiazheng Xu, Xiao Liu" in ir_licence
    assert "modified" in DATA.joinpath("imagereward", "NOTICE.md").read_text("utf-8")
    assert "MIT License" in DATA.joinpath("geneval", "LICENSE").read_text("utf-8")
    assert "djghosh13/geneval" in DATA.joinpath("geneval", "NOTICE.md").read_text("utf-8")


def test_geneval_metadata_counts_and_order() -> None:
    lines = load_metadata()
    assert len(lines) == 553
    # published per-tag counts (GenEval paper / fixture README)
    assert Counter(m["tag"] for m in lines) == {
        "single_object": 80,
        "two_object": 99,
        "counting": 80,
        "colors": 94,
        "position": 100,
        "color_attr": 100,
    }
    # tag blocks in upstream order, and a few line numbers from an independent index of the upstream file
    assert [m["tag"] for m in lines] == sorted((m["tag"] for m in lines), key=GENEVAL_TAGS.index)
    assert lines[0]["prompt"] == "a photo of a bench"
    assert lines[179]["prompt"] == "a photo of two clocks"
    assert lines[353]["prompt"] == "a photo of a dog right of a teddy bear"
    assert lines[552]["prompt"] == "a photo of a blue pizza and a yellow baseball glove"


def test_every_fixture_metadata_line_is_bundled_verbatim(geneval_cases) -> None:
    bundled = set(DATA.joinpath("geneval", "evaluation_metadata.jsonl").read_text("utf-8").splitlines())
    fixture_lines = {json.dumps(case["metadata"]) for case in geneval_cases}
    assert len(fixture_lines) > 250
    assert fixture_lines <= bundled


def test_geneval_metadata_is_consistent_with_the_object_names() -> None:
    names = object_names()
    assert len(names) == 80 == len(set(names))
    assert names[0] == "person" and names[-1] == "toothbrush"
    for meta in load_metadata():
        assert all(c["class"] in names for c in meta["include"] + meta.get("exclude", []))
        if meta["tag"] == "counting":
            (inc,), (exc,) = meta["include"], meta["exclude"]
            assert exc == {"class": inc["class"], "count": inc["count"] + 1}
        if meta["tag"] == "position":
            assert "position" not in meta["include"][0] and meta["include"][1]["position"][1] == 0
