"""The prompt grammar: GenEval-format metadata, the parser, and the fixed disjoint split."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cogrpo.geneval import GENEVAL_TAGS
from cogrpo_toyworld.prompts import (
    HELDOUT_SCENES,
    PromptParseError,
    all_prompts,
    balanced_train_prompts,
    eval_prompts,
    parse_prompt,
    prompt_text,
    scene_key,
    train_prompts,
)

FIXTURES = Path(__file__).parents[1] / "fixtures/geneval/cases.jsonl"

# Hand-written metadata, in the exact layout of GenEval's evaluation_metadata.jsonl.
HAND = {
    "a square": {"tag": "single_object", "include": [{"class": "square", "count": 1}], "prompt": "a square"},
    "a ring and a cross": {
        "tag": "two_object",
        "include": [{"class": "ring", "count": 1}, {"class": "cross", "count": 1}],
        "prompt": "a ring and a cross",
    },
    "three triangles": {
        "tag": "counting",
        "include": [{"class": "triangle", "count": 3}],
        "exclude": [{"class": "triangle", "count": 4}],
        "prompt": "three triangles",
    },
    "an orange cross": {
        "tag": "colors",
        "include": [{"class": "cross", "count": 1, "color": "orange"}],
        "prompt": "an orange cross",
    },
    "a square left of a ring": {
        "tag": "position",
        "include": [{"class": "ring", "count": 1}, {"class": "square", "count": 1, "position": ["left of", 0]}],
        "prompt": "a square left of a ring",
    },
    "a red square and a blue ring": {
        "tag": "color_attr",
        "include": [{"class": "square", "count": 1, "color": "red"}, {"class": "ring", "count": 1, "color": "blue"}],
        "prompt": "a red square and a blue ring",
    },
}


@pytest.mark.parametrize("text", list(HAND))
def test_parse_matches_hand_written_metadata(text: str) -> None:
    meta = parse_prompt(text)
    assert meta == HAND[text]
    assert list(meta) == list(HAND[text]), "key order as in GenEval's metadata file"
    assert prompt_text(meta) == text


def test_metadata_has_the_reference_layout() -> None:
    reference = {}
    for line in FIXTURES.open():
        meta = json.loads(line)["metadata"]
        reference.setdefault(meta["tag"], meta)
    for tag, ref in reference.items():
        ours = all_prompts(tag)[0]
        assert list(ours) == list(ref), tag
        assert [sorted(c) for c in ours["include"]] == [sorted(c) for c in ref["include"]], tag
        if "exclude" in ref:
            assert [sorted(c) for c in ours["exclude"]] == [sorted(c) for c in ref["exclude"]]


@pytest.mark.parametrize("tag", GENEVAL_TAGS)
def test_parser_inverts_the_grammar(tag: str) -> None:
    for meta in all_prompts(tag):
        assert parse_prompt(meta["prompt"]) == meta
        assert parse_prompt("  " + meta["prompt"].upper() + " ") == meta  # case and spacing are normalised


@pytest.mark.parametrize(
    "text",
    ["a photo of a cat", "an square", "a orange ring", "a red square and a ring", "two square", "five squares",
     "a red square left of a ring", "a square left a ring", ""],
)
def test_parser_rejects_text_outside_the_grammar(text: str) -> None:
    with pytest.raises(PromptParseError, match="not a toy-world prompt"):
        parse_prompt(text)


def test_prompt_universe_sizes() -> None:
    # 4 shapes, 6 colours, counts 2-4, 4 relations, ordered pairs of distinct classes / colours
    sizes = {tag: len(all_prompts(tag)) for tag in GENEVAL_TAGS}
    assert sizes == {"single_object": 4, "two_object": 12, "counting": 12, "colors": 24, "position": 48,
                     "color_attr": 4 * 3 * 6 * 5}
    for tag in GENEVAL_TAGS:
        texts = [m["prompt"] for m in all_prompts(tag)]
        assert len(set(texts)) == len(texts)


def test_split_is_disjoint_by_text_and_by_scene() -> None:
    for tag in GENEVAL_TAGS:
        train, held = train_prompts(tag), eval_prompts(tag)
        assert train and held
        assert not set(train) & set(held)
        train_scenes = {scene_key(parse_prompt(p)) for p in train}
        held_scenes = {scene_key(parse_prompt(p)) for p in held}
        assert not train_scenes & held_scenes, f"{tag}: a reordered eval prompt is a training prompt"
        assert len(held_scenes) == HELDOUT_SCENES[tag]
    assert not set(train_prompts()) & set(eval_prompts())


def test_scene_key_identifies_rephrasings() -> None:
    assert scene_key(parse_prompt("a square left of a ring")) == scene_key(parse_prompt("a ring right of a square"))
    assert scene_key(parse_prompt("a square above a ring")) != scene_key(parse_prompt("a square below a ring"))
    assert scene_key(parse_prompt("a red square and a blue ring")) == scene_key(
        parse_prompt("a blue ring and a red square")
    )
    assert scene_key(parse_prompt("a red square and a blue ring")) != scene_key(
        parse_prompt("a blue square and a red ring")
    )


def test_every_eval_word_is_seen_in_training() -> None:
    train_words = {w for p in train_prompts() for w in p.split()}
    assert {w for p in eval_prompts() for w in p.split()} <= train_words


def test_split_is_fixed_across_processes() -> None:
    code = "from cogrpo_toyworld.prompts import eval_prompts; print('|'.join(eval_prompts()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout.strip()
    assert out.split("|") == eval_prompts()


def test_balanced_train_set() -> None:
    prompts = balanced_train_prompts()
    tags = Counter(parse_prompt(p)["tag"] for p in prompts)
    assert tags == {tag: 32 for tag in GENEVAL_TAGS}
    assert set(prompts) <= set(train_prompts())
    assert balanced_train_prompts() == prompts
