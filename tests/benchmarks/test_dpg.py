"""DPG-Bench: CSV parsing, dependency zeroing and categories (hand-computed, both modes), the
2x2 grid layout read back with the official crop boxes, VQA errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from benchmarks_helpers import solid
from PIL import Image

from cogrpo.protocols import Benchmark, GeneratedItem
from cogrpo_benchmarks import dpg_mplug
from cogrpo_benchmarks.dpg import (
    OFFICIAL_QUIRKS,
    DPGBenchmark,
    DPGItemScore,
    DPGQuestion,
    MissingParentError,
    dependency_zeroed,
    dpg_grid,
    dpg_summary,
    find_data,
    is_yes,
    load_questions,
    score_item,
    tile_boxes,
)
from cogrpo_benchmarks.errors import BenchmarkDataError, MissingDependencyError, missing_modules

HEADER = [
    "item_id",
    "text",
    "keywords",
    "proposition_id",
    "dependency",
    "category_broad",
    "category_detailed",
    "tuple",
    "question_natural_language",
]
ROWS = [  # item, qid, dependency, tuple, question
    ("A", 1, "0", "entity - whole (cat)", "Is there a cat?"),
    ("A", 2, "1", "attribute - color (cat, red)", "Is the cat red?"),
    ("A", 3, "1,4", "relation - spatial (cat, mat, on)", "Is the cat on the mat?"),
    ("A", 4, "0", "entity - whole (mat)", "Is there a mat?"),
    ("B", 1, "0", "entity - whole (dog)", "Is there a dog?"),
    ("B", 2, "1", "attribute - color (dog, blue)", "Is the dog blue?"),
]


def write_dpg(root, rows=ROWS, prompts=("A", "B")):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "dpg_bench.csv", "w", newline="") as fp:
        writer = csv.writer(fp)
        writer.writerow(HEADER)
        for item, qid, dep, tup, question in rows:
            writer.writerow([item, f"text of {item}", "kw", qid, dep, tup.split(" - ")[0], "d", tup, question])
    (root / "prompts").mkdir(exist_ok=True)
    for item in prompts:
        (root / "prompts" / f"{item}.txt").write_text(f"a prompt for {item}\n")
    return root


def q(qid, parents, tup="entity - whole (x)"):
    return DPGQuestion(qid, f"q{qid}", tup, tuple(parents))


def test_dependency_zeroing_hand_computed() -> None:
    qs = [q(1, [0]), q(2, [1]), q(3, [1, 4]), q(4, [0])]
    raw = {1: 0.0, 2: 1.0, 3: 1.0, 4: 1.0}
    assert dependency_zeroed(raw, qs) == {1: 0.0, 2: 0.0, 3: 0.0, 4: 1.0}
    assert dependency_zeroed(raw, qs, official_quirks=True) == {1: 0.0, 2: 0.0, 3: 0.0, 4: 1.0}
    # a child listed before its parent: the default zeroes transitively, the official pass reads
    # the parent before zeroing it (in_place_zeroing)
    rev = [q(3, [2]), q(2, [1]), q(1, [0])]
    raw = {1: 0.0, 2: 1.0, 3: 1.0}
    assert dependency_zeroed(raw, rev) == {1: 0.0, 2: 0.0, 3: 0.0}
    assert dependency_zeroed(raw, rev, official_quirks=True) == {1: 0.0, 2: 0.0, 3: 1.0}
    # an unknown parent: ignored by default, KeyError officially -- unless a zero parent comes first
    dangling = [q(1, [0]), q(2, [99])]
    assert dependency_zeroed({1: 1.0, 2: 1.0}, dangling) == {1: 1.0, 2: 1.0}
    with pytest.raises(MissingParentError):
        dependency_zeroed({1: 1.0, 2: 1.0}, dangling, official_quirks=True)
    first_zero = [q(1, [0]), q(2, [1, 99])]
    assert dependency_zeroed({1: 0.0, 2: 1.0}, first_zero, official_quirks=True) == {1: 0.0, 2: 0.0}


def test_yes_matching() -> None:
    for answer in ("yes", "Yes", " yes ", "yes."):
        assert is_yes(answer)
    assert is_yes("yes", official_quirks=True)
    assert not is_yes("Yes", official_quirks=True) and not is_yes("yes.", official_quirks=True)
    assert not is_yes("no") and not is_yes("yes, and more")


def test_score_item_and_categories_hand_computed() -> None:
    qs = [q(1, [0], "entity - whole (cat)"), q(2, [1], "attribute - color (cat, red)")]
    tiles = [{1: "yes", 2: "yes"}, {1: "no", 2: "yes"}]
    clean = score_item(tiles, qs)
    assert clean.tile_scores == [1.0, 0.0] and clean.score == 0.5
    # categories: zeroed scores of every tile
    assert sorted(clean.category_scores) == sorted(
        [("entity - whole", 1.0), ("attribute - color", 1.0), ("entity - whole", 0.0), ("attribute - color", 0.0)]
    )
    official = score_item(tiles, qs, official_quirks=True)
    assert official.score == 0.5
    # categories_last_tile_raw: the last tile's raw answers (q2 "yes" counts although q1 failed)
    assert official.category_scores == [("entity - whole", 0.0), ("attribute - color", 1.0)]
    assert score_item(tiles, [q(2, [1])], official_quirks=True) is None  # missing_parent_drops_item


def test_summary_pools_categories() -> None:
    items = [
        DPGItemScore(0.5, [0.5], [("entity - whole", 1.0), ("entity - state", 0.0), ("attribute - color", 1.0)]),
        DPGItemScore(1.0, [1.0], [("entity - whole", 0.0)]),
    ]
    metrics = dpg_summary(items)
    assert metrics["overall"] == pytest.approx(75.0)
    assert metrics["L2/entity - whole"] == pytest.approx(50.0)  # [1, 0]
    assert metrics["L1/entity"] == pytest.approx(100 / 3)  # [1, 0, 0] pooled over its L2s
    assert metrics["L1/attribute"] == pytest.approx(100.0)


def test_csv_parsing_and_the_official_parser_quirks(tmp_path) -> None:
    root = write_dpg(tmp_path)
    clean = load_questions(root / "dpg_bench.csv")
    assert [x.qid for x in clean["A"]] == [1, 2, 3, 4] and clean["A"][2].parents == (1, 4)
    assert clean["A"][2].category == "relation - spatial" and clean["A"][2].l1 == "relation"
    official = load_questions(root / "dpg_bench.csv", official_quirks=True)
    assert [x.qid for x in official["A"]] == [2, 3, 4]  # skip_first_row
    rows = [
        ("Z", 9, "0", "entity - whole (z)", "z?"),
        ("X", 1, "0", "entity - whole (x)", "x1?"),
        ("Y", 1, "0", "entity - whole (y)", "y1?"),
        ("X", 2, "1", "entity - whole (x)", "x2?"),
    ]
    root2 = write_dpg(tmp_path / "noncontig", rows=rows, prompts=("X",))
    assert [x.qid for x in load_questions(root2 / "dpg_bench.csv")["X"]] == [1, 2]
    assert [x.qid for x in load_questions(root2 / "dpg_bench.csv", official_quirks=True)["X"]] == [2]
    assert set(OFFICIAL_QUIRKS) >= {"skip_first_row", "in_place_zeroing", "categories_last_tile_raw"}


def test_data_location_errors(tmp_path) -> None:
    for path in (None, tmp_path / "empty"):
        with pytest.raises(BenchmarkDataError) as info:
            find_data(path)
        assert "\n" not in str(info.value) and "dpg_bench.csv" in str(info.value)
    write_dpg(tmp_path / "ella" / "dpg_bench")  # a checkout of the ELLA repository works too
    assert find_data(tmp_path / "ella")[0] == tmp_path / "ella" / "dpg_bench" / "dpg_bench.csv"
    bad = write_dpg(tmp_path / "bad")
    (bad / "dpg_bench.csv").write_text("item_id,text\nA,x\n")
    with pytest.raises(BenchmarkDataError, match="proposition_id"):
        load_questions(bad / "dpg_bench.csv")


def test_grid_and_official_crop_boxes_read_back(tmp_path) -> None:
    images = solid(4, [10, 20, 30, 40], size=8)
    grid = dpg_grid(images)
    assert grid.shape == (3, 16, 16)
    path = tmp_path / "A.png"
    Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
    pil = Image.open(path)
    for box, level in zip(tile_boxes(8, 8, 4), [10, 20, 30, 40], strict=True):  # TL, TR, BL, BR
        assert (np.asarray(pil.crop(box)) == level).all()
    assert dpg_grid(images[:1]).shape == (3, 8, 8)
    assert tile_boxes(8, 8, 1) == [(0, 0, 8, 8)]


class LevelVQA:
    """Answers from the tile's (uniform) pixel level: ``{level: {question: answer}}``."""

    name = "level-vqa"

    def __init__(self, table):
        self.table = table
        self.asked = 0

    def answer(self, image, question):
        self.asked += 1
        pixels = np.asarray(image)
        assert pixels.min() == pixels.max(), "a tile crossed a tile boundary"
        return self.table[int(pixels[0, 0, 0])].get(question, "yes")


TABLE = {
    10: {},
    20: {"Is there a cat?": "no"},
    30: {"Is there a mat?": "no"},
    40: {k: "Yes" for k in ("Is there a cat?", "Is the cat red?", "Is the cat on the mat?", "Is there a mat?")},
    50: {},
    60: {"Is the dog blue?": "no"},
    70: {"Is there a dog?": "no"},
    80: {},
}


@pytest.mark.parametrize("quirks", [False, True])
def test_evaluate_end_to_end_hand_computed(tmp_path, quirks) -> None:
    root = write_dpg(tmp_path / "data")
    vqa = LevelVQA(TABLE)
    bench = DPGBenchmark(path=root, vqa=vqa, official_quirks=quirks)
    assert isinstance(bench, Benchmark) and [i.id for i in bench.items()] == ["A", "B"]
    assert bench.items()[0].prompt == "a prompt for A"
    levels = {"A": [10, 20, 30, 40], "B": [50, 60, 70, 80]}
    out = tmp_path / "out"
    metrics = bench.evaluate([GeneratedItem(it, solid(4, levels[it.id])) for it in bench.items()], out)
    assert vqa.asked == 4 * 4 + 4 * 2  # every question on every tile
    for item in ("A", "B"):  # compute_dpg_bench.py keys images by file stem
        assert Image.open(out / "images" / f"{item}.png").size == (16, 16)
    if not quirks:
        # A: tiles 1, 1/4 (no cat: red and on-mat zeroed), 1/2 (no mat: on-mat zeroed), 1 ("Yes") -> 0.6875
        # B: tiles 1, 1/2, 0 (no dog: blue zeroed), 1 -> 0.625
        assert metrics["overall"] == pytest.approx(100 * (0.6875 + 0.625) / 2)
        assert metrics["L2/entity - whole"] == pytest.approx(75.0)
        assert metrics["L2/attribute - color"] == pytest.approx(62.5)
        assert metrics["L1/relation"] == pytest.approx(50.0)
        assert metrics["items_dropped"] == 0
    else:
        # A is dropped (its question 1 is the skipped first row and questions depend on it)
        assert metrics["overall"] == pytest.approx(62.5)
        assert metrics["L2/entity - whole"] == 100.0 and metrics["L2/attribute - color"] == 100.0
        assert metrics["items_dropped"] == 1 and metrics["items_scored"] == 1
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["official_quirks"] is quirks
    assert results["other_mode"]["official_quirks"] is (not quirks)
    lines = (out / "dpg_results.txt").read_text().splitlines()  # the official results lines of the scored items
    assert len(lines) == (1 if quirks else 2)
    assert lines[-1].endswith(", 1.0, 0.5, 0.0, 1.0, 0.625")  # B: its tiles, then the item score
    assert (out / "grid.png").is_file()


def test_vqa_none_and_errors(tmp_path) -> None:
    root = write_dpg(tmp_path / "data")
    bench = DPGBenchmark(path=root, vqa="none", limit=1)
    metrics = bench.evaluate([GeneratedItem(bench.items()[0], solid(4, 0))], tmp_path / "out")
    assert np.isnan(metrics["overall"]) and (tmp_path / "out" / "images" / "A.png").is_file()
    with pytest.raises(TypeError):
        DPGBenchmark(path=root, vqa=object())
    with pytest.raises(ValueError):
        DPGBenchmark(path=root, vqa="none", images_per_item=5)


@pytest.mark.skipif(not missing_modules("modelscope"), reason="modelscope is installed")
def test_mplug_missing_package_is_one_line(tmp_path) -> None:
    root = write_dpg(tmp_path / "data")
    with pytest.raises(MissingDependencyError) as info:
        DPGBenchmark(path=root)  # default VQA: mPLUG via modelscope
    message = str(info.value)
    assert "\n" not in message and "modelscope" in message and "vqa=none" in message
    assert dpg_mplug.MPLUG_MODEL == "damo/mplug_visual-question-answering_coco_large_en"
