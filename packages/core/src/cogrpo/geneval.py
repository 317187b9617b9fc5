"""GenEval's decision rules and aggregation, as pure functions over detections.

Reproduces the verdicts of GenEval's ``evaluate_images.py`` (djghosh13/geneval) given the
detector's boxes and the colour classifier's labels: the per-tag confidence threshold (0.9 for
counting, else 0.3, strict ``>``), per-class lists sorted by score and capped at 16 without NMS,
include clauses checked on the top ``count`` objects (colour on all of them, position against
every object of the referenced clause), exclude clauses on the whole kept list, and
``relative_position`` with its 0.1 margin and 0.5 threshold. The toy world's reward and the
``geneval`` benchmark share this engine.

Aggregation (``summary_scores.py``): per-tag mean of the per-image booleans; the overall score is
the unweighted mean of the six task scores.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GENEVAL_TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")


@dataclass(frozen=True)
class Detection:
    """One detected object: class name, box ``(x1, y1, x2, y2)`` in pixels (y downward), score,
    and the colour label the colour classifier gives it (``None`` if it was not classified)."""

    cls: str
    box: tuple[float, float, float, float]
    score: float
    color: str | None = None

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> Detection:
        return Detection(str(d["class"]), tuple(float(v) for v in d["box"]), float(d["score"]), d.get("color"))


@dataclass(frozen=True)
class GenEvalRules:
    """The evaluator's options, at the reference defaults."""

    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    position_threshold: float = 0.1  # the margin factor of relative_position


def relative_position(
    box_a: Sequence[float], box_b: Sequence[float], margin_factor: float = 0.1
) -> set[str]:
    """Where A lies relative to B: a subset of ``{"left of", "right of", "above", "below"}``.

    Centre offsets are shrunk per axis by ``margin_factor * (size_a + size_b)`` on that axis,
    then divided by the *raw* offset's length; a component beyond ±0.5 gives the relation.
    """
    ax1, ay1, ax2, ay2 = box_a
    bx1, by1, bx2, by2 = box_b
    offset = ((ax1 + ax2) / 2 - (bx1 + bx2) / 2, (ay1 + ay2) / 2 - (by1 + by2) / 2)
    margin = (margin_factor * ((ax2 - ax1) + (bx2 - bx1)), margin_factor * ((ay2 - ay1) + (by2 - by1)))
    revised = [math.copysign(max(abs(o) - m, 0.0), o) for o, m in zip(offset, margin)]
    if abs(revised[0]) < 1e-3 and abs(revised[1]) < 1e-3:
        return set()
    norm = math.hypot(*offset)
    dx, dy = revised[0] / norm, revised[1] / norm
    found = set()
    if dx < -0.5:
        found.add("left of")
    if dx > 0.5:
        found.add("right of")
    if dy < -0.5:
        found.add("above")
    if dy > 0.5:
        found.add("below")
    return found


def evaluate(
    metadata: Mapping[str, Any], detections: Iterable[Detection], rules: GenEvalRules = GenEvalRules()
) -> tuple[bool, str]:
    """GenEval's verdict for one image.

    :param metadata: ``{"tag", "include": [{"class", "count", "color"?, "position"?: [rel, j]}],
        "exclude"?: [{"class", "count"}]}`` as in ``evaluation_metadata.jsonl``.
    :return: ``(correct, reason)``; ``reason`` explains the first failures (empty when correct).
    """
    threshold = rules.counting_threshold if metadata["tag"] == "counting" else rules.threshold
    kept: dict[str, list[Detection]] = {}
    for det in sorted((d for d in detections if d.score > threshold), key=lambda d: -d.score):
        kept.setdefault(det.cls, []).append(det)
    kept = {cls: objs[: rules.max_objects] for cls, objs in kept.items()}

    reasons: list[str] = []
    tops: list[list[Detection] | None] = []  # per include clause; None when the clause failed
    for clause in metadata["include"]:
        cls, count = clause["class"], int(clause["count"])
        top = kept.get(cls, [])[:count]
        ok = True
        if len(top) < count:
            reasons.append(f"expected {cls}>={count}, found {len(kept.get(cls, []))}")
            ok = False
        elif "color" in clause and sum(d.color == clause["color"] for d in top) < count:
            colors = ", ".join(str(d.color) for d in top)
            reasons.append(f"expected {clause['color']} {cls}>={count}, found {colors}")
            ok = False
        elif "position" in clause and clause["position"]:
            relation, target_index = clause["position"][0], int(clause["position"][1])
            targets = tops[target_index]
            if targets is None:
                reasons.append(f"no target for {cls} to be {relation}")
                ok = False
            else:
                for a in top:
                    for b in targets:
                        found = relative_position(a.box, b.box, rules.position_threshold)
                        if relation not in found:
                            reasons.append(f"expected {cls} {relation} target, found {sorted(found) or 'no relation'}")
                            ok = False
                            break
                    if not ok:
                        break
        tops.append(top if ok else None)

    for clause in metadata.get("exclude", []) or []:
        cls, count = clause["class"], int(clause["count"])
        if len(kept.get(cls, [])) >= count:
            reasons.append(f"expected {cls}<{count}, found {len(kept[cls])}")

    return not reasons, "\n".join(reasons)


def summarize(results: Iterable[tuple[str, bool]]) -> dict[str, float]:
    """Per-tag accuracy over images and the overall GenEval score (unweighted mean of the tags).

    :param results: ``(tag, correct)`` per image (4 images per prompt in the standard setting).
    :return: ``{tag: accuracy, ..., "overall": mean over the tags present}``.
    """
    totals: dict[str, list[int]] = {}
    for tag, correct in results:
        counts = totals.setdefault(tag, [0, 0])
        counts[0] += int(bool(correct))
        counts[1] += 1
    scores = {tag: hits / n for tag, (hits, n) in totals.items()}
    ordered = {tag: scores[tag] for tag in GENEVAL_TAGS if tag in scores}
    ordered.update({tag: s for tag, s in scores.items() if tag not in ordered})
    ordered["overall"] = sum(ordered.values()) / len(ordered) if ordered else float("nan")
    return ordered
