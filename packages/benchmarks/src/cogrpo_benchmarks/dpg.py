"""DPG-Bench (TencentQQGYLab/ELLA ``dpg_bench/``): dense prompts, VQA questions with dependencies.

Data (not bundled) is read from a local directory holding the official files::

    <path>/dpg_bench.csv          columns item_id, text, keywords, proposition_id, dependency,
                                  category_broad, category_detailed, tuple, question_natural_language
    <path>/prompts/<item_id>.txt  one prompt per file

(``<path>/dpg_bench/`` also works, i.e. a checkout of the ELLA repository.)

Each prompt gets 4 images tiled as a 2×2 grid without padding and written as
``images/<item_id>.png`` — the layout ``dpg_bench/compute_dpg_bench.py`` reads (``bash
dpg_bench/dist_eval.sh <out_dir>/images <tile size>``). A :class:`DPGVQA` model (mPLUG-large via
modelscope in the official script) answers every question on every tile; a question scores 1 if
the answer is "yes", and is zeroed when a parent question (``dependency``) failed. A tile's score
is the mean over the item's questions, an item's score the mean over its tiles, DPG-Bench the mean
over items ×100; categories (L2 = ``tuple`` before "(", L1 = L2 before "-") pool question scores.

``official_quirks=True`` reproduces what ``compute_dpg_bench.py`` actually computes, for numbers
comparable with published ones (each quirk is listed in :data:`OFFICIAL_QUIRKS` and in
docs/benchmarks.md); the default computes what the benchmark describes.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from cogrpo.protocols import EvalItem, GeneratedItem
from cogrpo_benchmarks.common import GridCollector, as_bool, mean, quantize, save_png, to_pil, write_results
from cogrpo_benchmarks.errors import PATH_FLAG, BenchmarkDataError

CSV_COLUMNS = ("item_id", "proposition_id", "dependency", "tuple", "question_natural_language")

#: What ``official_quirks=True`` reproduces from ``compute_dpg_bench.py`` (ELLA, commit 025f650).
OFFICIAL_QUIRKS: dict[str, str] = {
    "skip_first_row": "prepare_dpg_data skips the first CSV data row (`if i == 0: continue`), so the first "
    "item loses its first question",
    "noncontiguous_rows_reset": "rows of an item are grouped only while consecutive; an item_id that reappears "
    "later restarts that item's question set",
    "in_place_zeroing": "dependency zeroing mutates the scores in dict order: a parent zeroed earlier in the pass "
    "zeroes its children, a parent listed after its child is read un-zeroed",
    "missing_parent_drops_item": "a dependency on a question that does not exist (e.g. the row dropped by "
    "skip_first_row) raises KeyError and the whole image is silently left out of every score",
    "categories_last_tile_raw": "category scores use only the last tile (of pic_num) and its raw answers, "
    "before dependency zeroing",
    "exact_yes": "an answer counts only if it is exactly 'yes' (no case or whitespace normalisation)",
}


@dataclass(frozen=True)
class DPGQuestion:
    """One DPG-Bench question (a CSV row)."""

    qid: int
    question: str
    tuple: str
    parents: tuple[int, ...]  # proposition ids this question depends on; 0 means "none"

    @property
    def category(self) -> str:
        """L2 category, e.g. ``"entity - whole"`` (the tuple before its "(")."""
        return self.tuple.split("(")[0].strip()

    @property
    def l1(self) -> str:
        """L1 category, e.g. ``"entity"``."""
        return self.category.split("-")[0].strip()


@runtime_checkable
class DPGVQA(Protocol):
    """A visual-question-answering model for DPG-Bench: one image tile, one question -> answer."""

    name: str

    def answer(self, image: Any, question: str) -> str: ...


# -------------------------------------------------------------------------------------------------
# Data
# -------------------------------------------------------------------------------------------------


def find_data(path: str | Path | None) -> tuple[Path, Path]:
    """``(csv file, prompts dir)`` under ``path`` (or ``path/dpg_bench``)."""
    if path is None:
        raise BenchmarkDataError(
            f"DPG-Bench needs its data: pass the folder holding dpg_bench.csv and prompts/<item_id>.txt "
            f"(dpg_bench/ of TencentQQGYLab/ELLA) as {PATH_FLAG}"
        )
    root = Path(path).expanduser()
    for base in (root, root / "dpg_bench"):
        if (base / "dpg_bench.csv").is_file() and (base / "prompts").is_dir():
            return base / "dpg_bench.csv", base / "prompts"
    raise BenchmarkDataError(
        f"DPG-Bench data not found in {root}: expected dpg_bench.csv and prompts/<item_id>.txt there or in "
        f"{root / 'dpg_bench'} (the dpg_bench/ folder of TencentQQGYLab/ELLA)"
    )


def _parents(text: str, where: str) -> tuple[int, ...]:
    try:
        return tuple(int(d.strip()) for d in str(text).split(","))
    except ValueError as exc:
        raise BenchmarkDataError(
            f"DPG-Bench CSV {where}: dependency '{text}' is not a comma-separated id list"
        ) from exc


def load_questions(csv_path: Path, official_quirks: bool = False) -> dict[str, list[DPGQuestion]]:
    """``{item_id: [questions in CSV order]}``; with ``official_quirks`` the official parser's
    ``skip_first_row`` and ``noncontiguous_rows_reset`` behaviour."""
    with open(csv_path, newline="", encoding="utf-8") as fp:
        reader = csv.DictReader(fp)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise BenchmarkDataError(f"DPG-Bench CSV {csv_path} lacks column(s) {', '.join(missing)}")
        rows = list(reader)
    questions: dict[str, dict[int, DPGQuestion]] = {}
    previous = None
    for i, row in enumerate(rows):
        if official_quirks and i == 0:
            continue
        item = str(row["item_id"]).strip()
        where = f"{csv_path.name} row {i + 2}"
        try:
            qid = int(float(row["proposition_id"]))
        except ValueError as exc:
            raise BenchmarkDataError(
                f"DPG-Bench CSV {where}: proposition_id '{row['proposition_id']}' is not a number"
            ) from exc
        q = DPGQuestion(qid, row["question_natural_language"], row["tuple"], _parents(row["dependency"], where))
        if official_quirks and item != previous:
            questions[item] = {}
        questions.setdefault(item, {})[qid] = q
        previous = item
    return {item: list(qs.values()) for item, qs in questions.items()}


def load_prompts(prompts_dir: Path) -> list[EvalItem]:
    files = sorted(Path(prompts_dir).glob("*.txt"))
    if not files:
        raise BenchmarkDataError(f"no DPG-Bench prompt files (<item_id>.txt) in {prompts_dir}")
    return [EvalItem(id=f.stem, prompt=f.read_text("utf-8").strip(), metadata={}) for f in files]


# -------------------------------------------------------------------------------------------------
# Scoring (pure functions)
# -------------------------------------------------------------------------------------------------


def is_yes(answer: str, official_quirks: bool = False) -> bool:
    if official_quirks:
        return answer == "yes"
    return str(answer).strip().lower().rstrip(".!") == "yes"


class MissingParentError(KeyError):
    """The official script's KeyError: a question depends on an id with no question."""


def dependency_zeroed(
    raw: Mapping[int, float], questions: Sequence[DPGQuestion], official_quirks: bool = False
) -> dict[int, float]:
    """Apply the dependency rule to raw 0/1 scores ``{qid: score}``.

    Default: a question scores 0 when any ancestor (parents, transitively; id 0 and ids without
    a question are ignored) scored 0. With ``official_quirks``: the official in-place pass in
    question order, raising :class:`MissingParentError` on an unknown parent.
    """
    if official_quirks:
        scores = dict(raw)
        for q in questions:
            for parent in q.parents:
                if parent == 0:
                    continue
                if parent not in scores:
                    raise MissingParentError(parent)
                if scores[parent] == 0:
                    scores[q.qid] = 0.0
                    break
        return scores

    parents = {q.qid: [p for p in q.parents if p != 0 and p in raw] for q in questions}
    final: dict[int, float] = {}

    def resolve(qid: int, visiting: frozenset[int]) -> float:
        if qid in final:
            return final[qid]
        score = raw[qid]
        for p in parents.get(qid, []):
            if p not in visiting and resolve(p, visiting | {qid}) == 0:
                score = 0.0
                break
        final[qid] = score
        return score

    for q in questions:
        resolve(q.qid, frozenset())
    return {qid: final[qid] for qid in raw}


@dataclass
class DPGItemScore:
    """One item's result: its score in [0, 1], per-tile scores, and (category, score) entries."""

    score: float
    tile_scores: list[float]
    category_scores: list[tuple[str, float]] = field(default_factory=list)


def score_item(
    answers: Sequence[Mapping[int, str]], questions: Sequence[DPGQuestion], official_quirks: bool = False
) -> DPGItemScore | None:
    """Score one item from its per-tile answers ``[{qid: answer}, ...]``.

    Returns ``None`` when the official script would drop the item (``missing_parent_drops_item``).
    """
    if not answers or not questions:
        raise ValueError("score_item needs at least one tile of answers and one question")
    tile_scores, categories = [], []
    raw = {}
    for tile in answers:
        raw = {q.qid: float(is_yes(tile[q.qid], official_quirks)) for q in questions}
        try:
            zeroed = dependency_zeroed(raw, questions, official_quirks)
        except MissingParentError:
            return None
        tile_scores.append(sum(zeroed.values()) / len(zeroed))
        if not official_quirks:
            categories += [(q.category, zeroed[q.qid]) for q in questions]
    if official_quirks:  # categories_last_tile_raw
        categories = [(q.category, raw[q.qid]) for q in questions]
    return DPGItemScore(sum(tile_scores) / len(tile_scores), tile_scores, categories)


def dpg_summary(items: Sequence[DPGItemScore]) -> dict[str, float]:
    """``overall`` = mean item score ×100; ``L1/<cat>`` and ``L2/<cat>`` = mean of the pooled
    question scores of that category ×100 (L1 pools all its L2 entries)."""
    if not items:
        raise ValueError("no DPG-Bench item was scored")
    metrics = {"overall": 100.0 * mean(i.score for i in items)}
    l1: dict[str, list[float]] = {}
    l2: dict[str, list[float]] = {}
    for item in items:
        for cat, score in item.category_scores:
            l2.setdefault(cat, []).append(score)
            l1.setdefault(cat.split("-")[0].strip(), []).append(score)
    metrics.update({f"L1/{k}": 100.0 * mean(v) for k, v in sorted(l1.items())})
    metrics.update({f"L2/{k}": 100.0 * mean(v) for k, v in sorted(l2.items())})
    return metrics


# -------------------------------------------------------------------------------------------------
# Grid layout
# -------------------------------------------------------------------------------------------------


def dpg_grid(images: torch.Tensor) -> torch.Tensor:
    """``[n, 3, H, W]`` -> the official grid: the image itself for ``n == 1``, else a 2×2 tiling
    ``[3, 2H, 2W]`` without padding (row-major: top-left, top-right, bottom-left, bottom-right;
    unused tiles black)."""
    n, _, h, w = images.shape
    if not 1 <= n <= 4:
        raise ValueError(f"DPG-Bench grids hold 1 to 4 images, got {n}")
    if n == 1:
        return images[0]
    grid = torch.zeros(3, 2 * h, 2 * w, dtype=images.dtype)
    for i in range(n):
        r, c = divmod(i, 2)
        grid[:, r * h : (r + 1) * h, c * w : (c + 1) * w] = images[i]
    return grid


def tile_boxes(width: int, height: int, pic_num: int) -> list[tuple[int, int, int, int]]:
    """The official crop boxes ``(left, upper, right, lower)`` of the first ``pic_num`` tiles of a
    grid of tiles ``width × height``."""
    boxes = [
        (0, 0, width, height),
        (width, 0, 2 * width, height),
        (0, height, width, 2 * height),
        (width, height, 2 * width, 2 * height),
    ]
    return boxes[:pic_num]


def make_vqa(vqa: Any, **options: Any) -> DPGVQA | None:
    """``None`` / ``"mplug"``: mPLUG via modelscope (one-line error if not installed); ``"none"``:
    no scoring; an object with ``answer``: used as is."""
    if isinstance(vqa, str) and vqa.lower() == "none":
        return None
    if vqa is None or (isinstance(vqa, str) and vqa.lower() == "mplug"):
        from cogrpo_benchmarks.dpg_mplug import MPLUGVQA

        return MPLUGVQA(**options)
    if isinstance(vqa, str):
        raise BenchmarkDataError(f"unknown DPG-Bench VQA model '{vqa}'; use mplug, none, or pass a VQA object")
    if not callable(getattr(vqa, "answer", None)):
        raise TypeError("a DPG-Bench VQA model needs an answer(image, question) -> str method")
    return vqa


class DPGBenchmark:
    """DPG-Bench: 2×2 grids named by item id, VQA with dependency-aware scoring and categories."""

    name = "dpg"

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        images_per_item: int = 4,
        vqa: Any = None,
        vqa_options: Mapping[str, Any] | None = None,
        vqa_model: str | None = None,
        official_quirks: bool = False,
        limit: int | None = None,
    ) -> None:
        if not 1 <= int(images_per_item) <= 4:
            raise ValueError("DPG-Bench uses 1 to 4 images per prompt (4 in the official setting)")
        self.images_per_item = int(images_per_item)
        self.csv_path, self.prompts_dir = find_data(path)
        self.questions = load_questions(self.csv_path, official_quirks=False)
        self.quirk_questions = load_questions(self.csv_path, official_quirks=True)
        self._items = load_prompts(self.prompts_dir)[: limit or None]
        self.official_quirks = as_bool(official_quirks)
        options = dict(vqa_options or {})
        if vqa_model is not None:
            options.setdefault("model", vqa_model)
        self.vqa = make_vqa(vqa, **options)

    def items(self) -> list[EvalItem]:
        return list(self._items)

    def evaluate(self, generated: Iterable[GeneratedItem], out_dir: Path) -> dict[str, float]:
        out_dir = Path(out_dir)
        grid_collector = GridCollector()
        scores = {False: [], True: []}  # official_quirks -> [DPGItemScore]
        per_item: list[dict[str, Any]] = []
        result_lines, detail_lines = [], []
        unscored, dropped = [], {False: 0, True: 0}
        written = 0
        for gen in generated:
            images = quantize(gen.images)
            if images.shape[0] != self.images_per_item:
                raise ValueError(
                    f"item {gen.item.id}: got {images.shape[0]} images, expected images_per_item={self.images_per_item}"
                )
            grid = dpg_grid(images)
            path = out_dir / "images" / f"{gen.item.id}.png"
            save_png(grid, path)
            written += 1
            grid_collector.add(images[0])
            if self.vqa is None:
                continue
            questions = self.questions.get(gen.item.id)
            if not questions:
                unscored.append(gen.item.id)
                continue
            pil = to_pil(grid)
            boxes = tile_boxes(images.shape[3], images.shape[2], self.images_per_item)
            answers = []
            for box in boxes:
                tile = pil.crop(box)
                answers.append({q.qid: self.vqa.answer(tile, q.question) for q in questions})
                detail_lines += [f"{path}, {box}, {q.question}, {answers[-1][q.qid]}" for q in questions]
            entry: dict[str, Any] = {"id": gen.item.id, "answers": [{str(k): v for k, v in a.items()} for a in answers]}
            results = {}
            for quirks in (False, True):
                qs = questions if not quirks else self.quirk_questions.get(gen.item.id, [])
                results[quirks] = score_item(answers, qs, quirks) if qs else None
                if results[quirks] is None:
                    dropped[quirks] += 1
                else:
                    scores[quirks].append(results[quirks])
                entry["official_score" if quirks else "score"] = getattr(results[quirks], "score", None)
            chosen = results[self.official_quirks]
            if chosen is not None:  # the official results line: image, tile scores, item score
                result_lines.append(f"{path}, {', '.join(str(t) for t in chosen.tile_scores)}, {chosen.score}")
            per_item.append(entry)
        if not written:
            raise ValueError("evaluate() received no generated items")

        settings: dict[str, Any] = {
            "images_per_item": self.images_per_item,
            "official_quirks": self.official_quirks,
            "vqa": getattr(self.vqa, "name", None) if self.vqa is not None else "none",
            "csv": str(self.csv_path),
        }
        details: dict[str, Any] = {"items": per_item, "unscored_items": unscored}
        if self.vqa is None:
            metrics = {"overall": float("nan"), "images": float(written)}
            settings["note"] = "vqa=none: layout written, not scored (run compute_dpg_bench.py on images/)"
        else:
            if not scores[self.official_quirks]:
                raise BenchmarkDataError(
                    f"no DPG-Bench item could be scored: {self.csv_path.name} has no questions for these item ids"
                )
            metrics = dpg_summary(scores[self.official_quirks])
            metrics["items_scored"] = float(len(scores[self.official_quirks]))
            metrics["items_dropped"] = float(dropped[self.official_quirks])
            other = not self.official_quirks
            details["other_mode"] = {
                "official_quirks": other,
                "metrics": dpg_summary(scores[other]) if scores[other] else None,
                "items_dropped": dropped[other],
            }
            if self.official_quirks:
                details["quirks"] = OFFICIAL_QUIRKS
            (out_dir / "dpg_results.txt").write_text("\n".join(result_lines) + "\n")
            (out_dir / "dpg_results_detail.txt").write_text("\n".join(detail_lines) + "\n")
        write_results(out_dir, benchmark=self.name, metrics=metrics, settings=settings, details=details)
        grid_collector.save(out_dir / "grid.png")
        return metrics


def read_grid_names(image_dir: Path) -> list[str]:
    """The item ids of a DPG-Bench image folder (file stems, as the official script keys them)."""
    return sorted(p.name.split(".")[0] for p in Path(image_dir).iterdir() if p.is_file())


__all__ = [
    "DPGBenchmark",
    "DPGItemScore",
    "DPGQuestion",
    "DPGVQA",
    "OFFICIAL_QUIRKS",
    "dependency_zeroed",
    "dpg_grid",
    "dpg_summary",
    "load_questions",
    "score_item",
    "tile_boxes",
]
