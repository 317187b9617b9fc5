"""The GenEval rule engine against the reference evaluator's verdicts (tests/fixtures/geneval)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cogrpo.geneval import GENEVAL_TAGS, Detection, evaluate, relative_position, summarize

CASES = [json.loads(line) for line in (Path(__file__).parents[1] / "fixtures/geneval/cases.jsonl").open()]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_reference_verdicts(case: dict) -> None:
    correct, reason = evaluate(case["metadata"], [Detection.from_json(d) for d in case["detections"]])
    assert correct == case["expected_correct"], (case["category"], reason)
    assert (reason == "") == correct


def test_fixture_covers_every_tag_both_ways() -> None:
    seen = {(c["metadata"]["tag"], c["expected_correct"]) for c in CASES}
    assert seen == {(t, v) for t in GENEVAL_TAGS for v in (True, False)}


def test_relative_position_hand_computed() -> None:
    a = (100.0, 0.0, 110.0, 10.0)  # 10x10 box centred at (105, 5)
    b = (0.0, 0.0, 10.0, 10.0)  # centred at (5, 5): offset (100, 0), margin 2 -> revised 98 / 100
    assert relative_position(a, b) == {"right of"}
    assert relative_position(b, a) == {"left of"}
    # offset (3.9, 0) with widths 10+10: margin 2, revised 1.9/3.9 = 0.487 -> no relation
    assert relative_position((3.9, 0, 13.9, 10), (0, 0, 10, 10)) == set()
    # offset (4.1, 0): revised 2.1/4.1 = 0.512 -> right of
    assert relative_position((4.1, 0, 14.1, 10), (0, 0, 10, 10)) == {"right of"}
    # y grows downward: a larger y is "below"; a 45-degree placement satisfies both axes
    assert relative_position((100, 100, 110, 110), (0, 0, 10, 10)) == {"right of", "below"}
    # both offsets inside their margins -> the empty set
    assert relative_position((1, 1, 11, 11), (0, 0, 10, 10)) == set()


def test_summarize_is_the_unweighted_mean_of_tags() -> None:
    results = [("counting", True), ("counting", False), ("counting", False), ("counting", True)]
    results += [("colors", True)] * 3 + [("position", False)]
    scores = summarize(results)
    assert scores["counting"] == 0.5 and scores["colors"] == 1.0 and scores["position"] == 0.0
    assert scores["overall"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)  # not 5/8, the image-weighted mean
    assert list(scores) == ["counting", "colors", "position", "overall"]
