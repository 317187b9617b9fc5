"""GenEval's rules on hand-built toy scenes, every task type, with the edge cases.

Verdicts are worked out by hand from GenEval's rules (tests/fixtures/geneval/README.md). Boxes are
3x3 cells; ``relative_position``'s margin is ``0.1 * (3 + 3) = 0.6`` per axis. All detections have
score 1.0, so GenEval's per-class order is the raster order of each object's first cell.
"""

from __future__ import annotations

import random

import pytest
import torch

from cogrpo.geneval import GENEVAL_TAGS, evaluate
from cogrpo_toyworld.prompts import all_prompts, parse_prompt
from cogrpo_toyworld.rewards import ToyGenEvalReward, clause_checks
from cogrpo_toyworld.scenes import GRID, Scene, SceneObject, detections, find_objects, render_tokens, sample_scene

STRICT = ToyGenEvalReward(partial_credit=False)
PARTIAL = ToyGenEvalReward(partial_credit=True)


def canvas(*objects: tuple[str, str, int, int], extra: dict[tuple[int, int], int] | None = None) -> torch.Tensor:
    """Objects ``(shape, colour, x, y)`` on an empty 7x7 canvas (any cell, not only slots), plus
    ``extra`` single cells ``{(x, y): token}``; returns ``[N]``."""
    grid = render_tokens(Scene(tuple(SceneObject(*o) for o in objects)))
    for (x, y), token in (extra or {}).items():
        grid[y, x] = token
    return grid.flatten()


def strict(prompt: str, grid: torch.Tensor) -> bool:
    return bool(STRICT(torch.zeros(1, 3, 8, 8), [prompt], tokens=grid[None]).scores[0] == 1.0)


def partial(prompt: str, grid: torch.Tensor) -> float:
    return float(PARTIAL(torch.zeros(1, 3, 8, 8), [prompt], tokens=grid[None]).scores[0])


# -- single_object and two_object ---------------------------------------------------------------------


def test_single_object() -> None:
    assert strict("a ring", canvas(("ring", "red", 0, 0)))
    assert strict("a ring", canvas(("ring", "red", 0, 0), ("square", "blue", 4, 4), ("ring", "green", 4, 0)))  # extras ok
    assert not strict("a ring", canvas(("square", "red", 0, 0)))
    assert not strict("a ring", canvas(("ring", "red", 0, 0), extra={(1, 1): 1}))  # filled in: a square, not a ring
    assert strict("a square", canvas(("ring", "red", 0, 0), extra={(1, 1): 1}))
    assert not strict("a ring", canvas(("ring", "red", 0, 0), extra={(3, 1): 1}))  # a red stray cell makes it malformed
    assert strict("a ring", canvas(("ring", "red", 0, 0), extra={(5, 5): 1}))  # a detached stray cell does not
    assert not strict("a ring", torch.zeros(GRID[0] * GRID[1], dtype=torch.long))


def test_two_object() -> None:
    assert strict("a square and a cross", canvas(("square", "red", 0, 0), ("cross", "red", 4, 4)))
    assert strict("a square and a cross", canvas(("cross", "red", 0, 0), ("square", "red", 4, 4)))  # order free
    assert not strict("a square and a cross", canvas(("square", "red", 0, 0), ("square", "red", 4, 4)))
    assert not strict("a square and a cross", canvas(("cross", "red", 0, 0)))
    assert partial("a square and a cross", canvas(("cross", "red", 0, 0))) == pytest.approx(1 / 2)


# -- counting --------------------------------------------------------------------------------------------


def test_counting_exact_counts_and_the_exclude_rule() -> None:
    three = canvas(("triangle", "red", 0, 0), ("triangle", "blue", 4, 0), ("triangle", "green", 0, 4))
    assert strict("three triangles", three)
    four = canvas(("triangle", "red", 0, 0), ("triangle", "blue", 4, 0), ("triangle", "green", 0, 4),
                  ("triangle", "red", 4, 4))
    assert not strict("three triangles", four)  # exclude: 4 >= 3 + 1
    assert strict("four triangles", four)
    two = canvas(("triangle", "red", 0, 0), ("triangle", "blue", 4, 0))
    assert not strict("three triangles", two)
    assert strict("two triangles", two)
    # objects of other classes are ignored, a malformed triangle does not count
    assert strict("two triangles", canvas(("triangle", "red", 0, 0), ("triangle", "blue", 4, 0), ("square", "red", 0, 4),
                                          ("ring", "red", 4, 4)))
    almost = canvas(("triangle", "red", 0, 0), ("triangle", "blue", 4, 0), ("triangle", "green", 0, 4),
                    extra={(2, 6): 0})  # the third triangle misses its corner cell
    assert not strict("three triangles", almost) and strict("two triangles", almost)


def test_counting_partial_credit() -> None:
    two = canvas(("triangle", "red", 0, 0), ("triangle", "blue", 4, 0))
    four = canvas(("triangle", "red", 0, 0), ("triangle", "blue", 4, 0), ("triangle", "green", 0, 4),
                  ("triangle", "red", 4, 4))
    # checks: [include 3 triangles, exclude 4 triangles]
    assert partial("three triangles", two) == pytest.approx(1 / 2)  # include fails, exclude holds
    assert partial("three triangles", four) == pytest.approx(1 / 2)  # include holds, exclude fires
    assert partial("three triangles", canvas(("triangle", "red", 0, 0), ("triangle", "blue", 4, 0),
                                             ("triangle", "green", 0, 4))) == 1.0


# -- colors and color_attr --------------------------------------------------------------------------------


def test_colors_checks_the_top_object_only() -> None:
    assert strict("a red square", canvas(("square", "red", 4, 4), ("ring", "blue", 0, 0)))
    assert not strict("a red square", canvas(("square", "blue", 0, 0)))
    assert not strict("a red square", canvas(("ring", "red", 0, 0)))
    # two squares, ties broken by raster order of the first cell: only the first one is colour-checked
    assert strict("a red square", canvas(("square", "red", 0, 0), ("square", "blue", 4, 4)))
    assert not strict("a red square", canvas(("square", "blue", 0, 0), ("square", "red", 4, 4)))


def test_color_attr() -> None:
    right = canvas(("square", "red", 0, 0), ("ring", "blue", 4, 4))
    assert strict("a red square and a blue ring", right)
    assert strict("a blue ring and a red square", right)
    swapped = canvas(("square", "blue", 0, 0), ("ring", "red", 4, 4))
    assert not strict("a red square and a blue ring", swapped)
    assert partial("a red square and a blue ring", swapped) == 0.0
    one_wrong = canvas(("square", "red", 0, 0), ("ring", "green", 4, 4))
    assert not strict("a red square and a blue ring", one_wrong)
    assert partial("a red square and a blue ring", one_wrong) == pytest.approx(1 / 2)


# -- position ---------------------------------------------------------------------------------------------


def test_position_clear_opposite_and_diagonal() -> None:
    row = canvas(("ring", "red", 0, 0), ("square", "blue", 4, 0))  # square offset (+4, 0) from the ring
    assert strict("a square right of a ring", row)
    assert strict("a ring left of a square", row)
    assert not strict("a square left of a ring", row)
    assert not strict("a square above a ring", row)
    diagonal = canvas(("ring", "red", 0, 0), ("square", "blue", 4, 4))  # (3.4, 3.4) / 5.657 = 0.60 on both axes
    assert strict("a square right of a ring", diagonal) and strict("a square below a ring", diagonal)
    assert strict("a ring above a square", diagonal) and strict("a ring left of a square", diagonal)


def test_position_borderline_angles() -> None:
    # square at offset (+4, +3) from the ring: revised (3.4, 2.4) / 5 = (0.68, 0.48): right of, but not below
    steep = canvas(("ring", "red", 0, 0), ("square", "blue", 4, 3))
    assert strict("a square right of a ring", steep)
    assert not strict("a square below a ring", steep)
    # offset (+3, +4): revised (2.4, 3.4) / 5 = (0.48, 0.68): below, but not right of
    other = canvas(("ring", "red", 0, 0), ("square", "blue", 3, 4))
    assert strict("a square below a ring", other)
    assert not strict("a square right of a ring", other)
    # offset (+4, +1): (3.4, 0.4) / 4.12 = (0.82, 0.10)
    assert strict("a square right of a ring", canvas(("ring", "red", 0, 1), ("square", "blue", 4, 2)))


def test_position_uses_the_top_subject_only() -> None:
    # two squares, one left of the ring and one above it: the first in raster order is the one compared
    left_first = canvas(("square", "blue", 0, 0), ("ring", "red", 4, 4), ("square", "green", 4, 0))
    assert strict("a square left of a ring", left_first)  # (-4, -4): left of (and above)
    above_first = canvas(("square", "blue", 4, 0), ("ring", "red", 4, 4), ("square", "green", 0, 4))
    assert not strict("a square left of a ring", above_first)  # (0, -4): above only
    assert strict("a square left of a ring", canvas(("ring", "red", 4, 4), ("square", "green", 0, 4)))


def test_position_partial_credit() -> None:
    wrong_side = canvas(("ring", "red", 4, 0), ("square", "blue", 0, 0))  # square left of the ring
    # checks: [ring exists, square exists, square right of ring]
    assert not strict("a square right of a ring", wrong_side)
    assert partial("a square right of a ring", wrong_side) == pytest.approx(2 / 3)
    no_target = canvas(("square", "blue", 0, 0))
    assert partial("a square right of a ring", no_target) == pytest.approx(1 / 3)


# -- the partial credit and the strict verdict agree --------------------------------------------------------


def _corrupted_grids(n: int, seed: int) -> list[tuple[dict, torch.Tensor]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        meta = rng.choice(all_prompts(rng.choice(GENEVAL_TAGS)))
        other = rng.choice(all_prompts(rng.choice(GENEVAL_TAGS)))  # render another prompt's scene half the time
        grid = render_tokens(sample_scene(meta if rng.random() < 0.5 else other, rng)).flatten()
        for _ in range(rng.choice([0, 0, 1, 2])):
            grid[rng.randrange(grid.numel())] = rng.randrange(7)
        out.append((meta, grid))
    return out


def test_partial_credit_is_one_exactly_when_geneval_says_correct() -> None:
    seen = set()
    for meta, grid in _corrupted_grids(600, seed=0):
        found = detections(find_objects(grid))
        correct = evaluate(meta, found)[0]
        checks = clause_checks(meta, found)
        assert all(checks) == correct, (meta["prompt"], checks)
        score = partial(meta["prompt"], grid)
        assert (score == 1.0) == correct and 0.0 <= score <= 1.0
        seen.add((meta["tag"], correct))
    assert seen == {(t, v) for t in GENEVAL_TAGS for v in (True, False)}


def test_reward_uses_metadata_when_given() -> None:
    grid = canvas(("square", "red", 0, 0))
    meta = parse_prompt("a blue square")
    # the prompt says red, the metadata says blue: the metadata wins
    out = STRICT(torch.zeros(1, 3, 8, 8), ["a red square"], tokens=grid[None], metadata=[meta])
    assert out.scores.tolist() == [0.0] and out.info["tag"] == ["colors"]
