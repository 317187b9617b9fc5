"""The toy scene world: rendering, RGB round trips, and parsing grids back into objects."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from cogrpo.geneval import GENEVAL_TAGS
from cogrpo_toyworld.prompts import all_prompts
from cogrpo_toyworld.scenes import (
    COLORS,
    GRID,
    NUM_TOKENS,
    PALETTE_RGB,
    SHAPE_NAMES,
    SHAPES,
    Scene,
    SceneObject,
    classify,
    detections,
    find_objects,
    render_tokens,
    rgb_to_tokens,
    sample_scene,
    tokens_to_rgb,
)


def grid_from(rows: list[str]) -> torch.Tensor:
    """A hand-drawn grid: '.' background, digits are palette ids."""
    return torch.tensor([[0 if c == "." else int(c) for c in row] for row in rows])


def test_world_size() -> None:
    assert NUM_TOKENS == 7 and len(COLORS) >= 6 and len(SHAPE_NAMES) >= 3
    assert GRID == (7, 7)
    for template in SHAPES.values():
        assert template.shape == (3, 3)
    # every template is distinct, so classification is unambiguous
    flat = {t.tobytes() for t in SHAPES.values()}
    assert len(flat) == len(SHAPES)


def test_render_draws_the_templates_by_hand() -> None:
    scene = Scene((SceneObject("ring", "blue", 0, 0), SceneObject("cross", "red", 4, 4)))
    expected = grid_from(
        [
            "555....",
            "5.5....",
            "555....",
            ".......",
            ".....1.",
            "....111",
            ".....1.",
        ]
    )
    assert torch.equal(render_tokens(scene), expected)


def test_render_rejects_objects_off_the_canvas() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        render_tokens(Scene((SceneObject("square", "red", 5, 0),)))


def test_rgb_round_trip_and_palette_colours() -> None:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, NUM_TOKENS, (5, GRID[0] * GRID[1]), generator=g)
    images = tokens_to_rgb(tokens)
    assert images.shape == (5, 3, GRID[0] * 8, GRID[1] * 8)
    assert images.min() >= 0 and images.max() <= 1
    # the top-left 8x8 pixel block of image 0 is exactly the palette colour of token (0, 0)
    block = images[0, :, :8, :8]
    expected = torch.tensor(PALETTE_RGB[int(tokens[0, 0])]).view(3, 1, 1).expand(3, 8, 8)
    torch.testing.assert_close(block, expected)
    assert torch.equal(rgb_to_tokens(images), tokens)
    # any integer upscaling (and a float64 image) decodes back exactly too
    assert torch.equal(rgb_to_tokens(tokens_to_rgb(tokens, scale=3).double()), tokens)


def test_classify_exact_templates_only() -> None:
    for name, template in SHAPES.items():
        assert classify(template) == name
        for y in range(3):
            for x in range(3):
                flipped = template.copy()
                flipped[y, x] = not flipped[y, x]
                assert classify(flipped) is None or classify(flipped) != name
    # a filled ring is a square, a square with a hole is a ring: the only one-cell neighbours
    assert classify(np.ones((3, 3), bool)) == "square"
    assert classify(np.ones((2, 3), bool)) is None


def test_find_objects_on_hand_drawn_grids() -> None:
    grid = grid_from(
        [
            "111.2..",
            "111222.",
            "111.2..",
            ".......",
            "3...44.",
            "33..4.4",
            "333.444",
        ]
    )
    found = {(o.color, o.shape, o.box) for o in find_objects(grid)}
    assert found == {
        ("red", "square", (0.0, 0.0, 3.0, 3.0)),
        ("orange", "cross", (3.0, 0.0, 6.0, 3.0)),  # touches the red square: different colours stay apart
        ("yellow", "triangle", (0.0, 4.0, 3.0, 7.0)),
        ("green", None, (4.0, 4.0, 7.0, 7.0)),  # a ring with a missing cell is no shape
    }


def test_same_colour_diagonal_contact_merges_objects() -> None:
    # 8-connectivity: two red crosses touching at a corner are one malformed component
    grid = grid_from(
        [
            ".1.....",
            "111....",
            ".1.1...",
            "..111..",
            "...1...",
            ".......",
            ".......",
        ]
    )
    objects = find_objects(grid)
    assert len(objects) == 1 and objects[0].shape is None and objects[0].num_pixels == 10
    assert detections(objects) == []


def test_detections_are_geneval_detections() -> None:
    objects = find_objects(render_tokens(Scene((SceneObject("triangle", "purple", 4, 0),))))
    (det,) = detections(objects)
    assert (det.cls, det.box, det.score, det.color) == ("triangle", (4.0, 0.0, 7.0, 3.0), 1.0, "purple")


@pytest.mark.parametrize("tag", GENEVAL_TAGS)
def test_sampled_scenes_contain_exactly_what_the_prompt_asks(tag: str) -> None:
    rng = random.Random(0)
    for meta in all_prompts(tag)[::3]:
        scene = sample_scene(meta, rng)
        wanted = sorted(
            (c["class"], c.get("color")) for c in meta["include"] for _ in range(int(c["count"]))
        )
        assert sorted((o.shape, o.color if any("color" in c for c in meta["include"]) else None)
                      for o in scene.objects) == wanted
        # every object sits on the 2 x 2 slot lattice, separated by background
        assert all(o.x in (0, 4) and o.y in (0, 4) for o in scene.objects)
        assert len({(o.x, o.y) for o in scene.objects}) == len(scene.objects)
        # parsing the rendered grid gives the objects back
        parsed = sorted((o.shape, o.color, o.box) for o in find_objects(render_tokens(scene)))
        assert parsed == sorted((o.shape, o.color, o.box) for o in scene.objects)
        if tag == "position":  # hand rule on the slot lattice: the subject's slot is on the named side
            target, subject = scene.objects
            rel = meta["include"][1]["position"][0]
            side = {"left of": subject.x < target.x, "right of": subject.x > target.x,
                    "above": subject.y < target.y, "below": subject.y > target.y}
            assert side[rel]


def test_sample_scene_is_deterministic() -> None:
    meta = all_prompts("color_attr")[7]
    a = [sample_scene(meta, random.Random(5)) for _ in range(2)]
    assert a[0] == a[1]
    many = {sample_scene(meta, random.Random(s)) for s in range(20)}
    assert len(many) > 1, "different seeds give different layouts"


def test_free_layout_places_objects_anywhere() -> None:
    from cogrpo.geneval import evaluate

    rng = random.Random(0)
    meta = all_prompts("position")[0]
    scenes = [sample_scene(meta, rng, grid=(9, 9), layout="free") for _ in range(30)]
    assert any(o.x not in (0, 4) or o.y not in (0, 4) for s in scenes for o in s.objects)
    for scene in scenes:
        assert evaluate(meta, detections(find_objects(render_tokens(scene), (9, 9))))[0]
    with pytest.raises(ValueError, match="unknown layout"):
        sample_scene(meta, rng, layout="diagonal")
