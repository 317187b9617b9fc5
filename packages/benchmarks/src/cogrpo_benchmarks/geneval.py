"""The GenEval benchmark (djghosh13/geneval): 553 prompts, 4 images each, object detection rules.

The prompt metadata is bundled (MIT, see ``data/geneval/NOTICE.md``). Images are written in
GenEval's official folder layout, so ``evaluation/evaluate_images.py`` can run on them as well::

    images/<index:05d>/metadata.jsonl     the prompt's metadata line (json.dump, as the generator)
    images/<index:05d>/samples/<i:05d>.png
    images/<index:05d>/grid.png
    results.jsonl                          one line per image in evaluate_images.py's format

Scoring: a :class:`GenEvalDetector` turns each image into :class:`cogrpo.geneval.Detection`
objects (boxes, scores, colour labels) and :func:`cogrpo.geneval.evaluate` applies GenEval's
rules; :func:`cogrpo.geneval.summarize` gives the per-tag accuracy and the overall score (the
unweighted mean of the six tags). The official detector stack (Mask2Former via mmdet + a CLIP
colour classifier) lives in :mod:`cogrpo_benchmarks.geneval_mmdet`; ``detector="none"`` only
writes the layout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cogrpo.geneval import GENEVAL_TAGS, Detection, GenEvalRules, summarize
from cogrpo.geneval import evaluate as geneval_verdict
from cogrpo.protocols import EvalItem, GeneratedItem
from cogrpo_benchmarks.common import GridCollector, make_grid, quantize, save_png, write_results
from cogrpo_benchmarks.errors import PATH_FLAG, BenchmarkDataError

SAMPLE_NAME = "{:05d}.png"  # generation/diffusers_generate.py writes f"{sample_count:05}.png"
FOLDER_NAME = "{:05d}"  # f"{index:0>5}"
DEFAULT_RULES = GenEvalRules()  # the reference defaults (threshold 0.3, counting 0.9, 16 objects)


@runtime_checkable
class GenEvalDetector(Protocol):
    """Detects objects in one image for GenEval.

    ``detect`` returns every detection (any score; the rules threshold and sort them) with the
    colour label of the detections whose class has a colour clause in ``metadata`` (``None``
    elsewhere). It gets the path of the written PNG, as the official evaluator does.
    """

    name: str

    def detect(self, image_path: Path, metadata: Mapping[str, Any]) -> list[Detection]: ...


def object_names() -> list[str]:
    """GenEval's 80 class names in the detector's class order."""
    text = resources.files("cogrpo_benchmarks").joinpath("data", "geneval", "object_names.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_metadata(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The prompt metadata lines (bundled ``evaluation_metadata.jsonl`` unless ``path`` is given)."""
    if path is None:
        text = (
            resources.files("cogrpo_benchmarks")
            .joinpath("data", "geneval", "evaluation_metadata.jsonl")
            .read_text("utf-8")
        )
        source = "bundled evaluation_metadata.jsonl"
    else:
        file = Path(path)
        if not file.is_file():
            raise BenchmarkDataError(
                f"GenEval metadata file not found: {file} (expected evaluation_metadata.jsonl, one JSON object per "
                f"line with tag/include/prompt; pass the file with {PATH_FLAG})"
            )
        text, source = file.read_text("utf-8"), str(file)
    lines = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            meta = json.loads(line)
            if meta["tag"] not in GENEVAL_TAGS or not isinstance(meta["include"], list) or "prompt" not in meta:
                raise ValueError("needs tag (one of the six), include (list) and prompt")
        except (ValueError, KeyError, TypeError) as exc:
            raise BenchmarkDataError(f"GenEval metadata {source} line {n} is not a valid prompt line ({exc})") from exc
        lines.append(meta)
    return lines


def write_prompt_folder(image_dir: Path, index: int, metadata: Mapping[str, Any], images: Sequence) -> list[Path]:
    """Write one prompt's official folder: ``metadata.jsonl``, ``samples/<i:05d>.png``, ``grid.png``.

    :param images: ``[3, H, W]`` float tensors in ``[0, 1]``.
    """
    folder = Path(image_dir) / FOLDER_NAME.format(index)
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.jsonl", "w") as fp:
        json.dump(dict(metadata), fp)  # the generator's exact call: one object, no newline
    paths = []
    for i, image in enumerate(images):
        path = folder / "samples" / SAMPLE_NAME.format(i)
        save_png(image, path)
        paths.append(path)
    save_png(make_grid(list(images), nrow=len(images)), folder / "grid.png")
    return paths


def read_image_folder(image_dir: Path) -> list[tuple[int, dict[str, Any], list[Path]]]:
    """Read a GenEval image folder back: ``(index, metadata, sample paths)`` per prompt folder,
    with the official evaluator's filters (digit folder names, ``\\d+.png`` samples)."""
    out = []
    for folder in sorted(Path(image_dir).iterdir()):
        if not folder.is_dir() or not folder.name.isdigit():
            continue
        with open(folder / "metadata.jsonl") as fp:
            metadata = json.load(fp)
        samples = sorted(p for p in (folder / "samples").iterdir() if p.is_file() and re.fullmatch(r"\d+\.png", p.name))
        out.append((int(folder.name), metadata, samples))
    return out


def result_line(path: Path, metadata: Mapping[str, Any], detections: Sequence[Detection], rules: GenEvalRules) -> dict:
    """One ``results.jsonl`` line in ``evaluate_images.py``'s format (``summary_scores.py`` reads it)."""
    correct, reason = geneval_verdict(metadata, detections, rules)
    threshold = rules.counting_threshold if metadata["tag"] == "counting" else rules.threshold
    kept: dict[str, list[list[float]]] = {}
    for det in sorted((d for d in detections if d.score > threshold), key=lambda d: -d.score):
        boxes = kept.setdefault(det.cls, [])
        if len(boxes) < rules.max_objects:
            boxes.append([*det.box, det.score])
    return {
        "filename": str(path),
        "tag": metadata["tag"],
        "prompt": metadata["prompt"],
        "correct": bool(correct),
        "reason": reason,
        "metadata": json.dumps(dict(metadata)),
        "details": json.dumps(kept),
    }


def summarize_lines(lines: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Per-tag accuracy, ``overall`` (mean of the tags present), and the two extra numbers
    ``summary_scores.py`` prints: the fraction of correct images and of prompts with at least
    one correct image."""
    lines = list(lines)
    metrics = summarize((line["tag"], bool(line["correct"])) for line in lines)
    by_prompt: dict[str, bool] = {}
    for line in lines:
        by_prompt[line["metadata"]] = by_prompt.get(line["metadata"], False) or bool(line["correct"])
    metrics["correct_images"] = sum(bool(line["correct"]) for line in lines) / len(lines)
    metrics["correct_prompts"] = sum(by_prompt.values()) / len(by_prompt)
    return metrics


def score_image_folder(
    image_dir: Path, detector: GenEvalDetector, rules: GenEvalRules = DEFAULT_RULES, outfile: Path | None = None
) -> dict[str, float]:
    """Score an existing GenEval image folder (ours or any generator's) with ``detector``;
    optionally write the official ``results.jsonl``."""
    lines = []
    for _, metadata, samples in read_image_folder(image_dir):
        for path in samples:
            lines.append(result_line(path, metadata, detector.detect(path, metadata), rules))
    if not lines:
        raise BenchmarkDataError(
            f"no GenEval prompt folders (<index:05d>/metadata.jsonl + samples/*.png) in {image_dir}"
        )
    if outfile is not None:
        write_jsonl(outfile, lines)
    return summarize_lines(lines)


def write_jsonl(path: Path, lines: Iterable[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fp:
        for line in lines:
            fp.write(json.dumps(line) + "\n")


def make_detector(detector: Any, **options: Any) -> GenEvalDetector | None:
    """``None`` / ``"mask2former"``: the official stack (one-line error if not installed);
    ``"none"``: no scoring; an object with ``detect``: used as is. ``options`` go to the
    official detector (``model_path``, ``model_config``, ``device``, ``clip_arch`` ...)."""
    if isinstance(detector, str) and detector.lower() == "none":
        return None
    if detector is None or (isinstance(detector, str) and detector.lower() in ("mask2former", "official")):
        from cogrpo_benchmarks.geneval_mmdet import Mask2FormerDetector

        return Mask2FormerDetector(**options)
    if isinstance(detector, str):
        raise BenchmarkDataError(
            f"unknown GenEval detector '{detector}'; use mask2former, none, or pass a detector object"
        )
    if not callable(getattr(detector, "detect", None)):
        raise TypeError("a GenEval detector needs a detect(image_path, metadata) -> list[Detection] method")
    return detector


class GenEvalBenchmark:
    """GenEval: 553 prompts × 4 images, official folder layout, per-tag accuracy and overall."""

    name = "geneval"

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        images_per_item: int = 4,
        detector: Any = None,
        detector_options: Mapping[str, Any] | None = None,
        detector_path: str | Path | None = None,
        tags: Sequence[str] | None = None,
        limit: int | None = None,
        rules: GenEvalRules = DEFAULT_RULES,
    ) -> None:
        if int(images_per_item) < 1:
            raise ValueError("images_per_item must be >= 1")
        self.images_per_item = int(images_per_item)
        self.metadata = load_metadata(path)
        selected = [(i, m) for i, m in enumerate(self.metadata) if tags is None or m["tag"] in tags]
        self._items = [
            EvalItem(id=FOLDER_NAME.format(i), prompt=m["prompt"], metadata=dict(m))
            for i, m in selected[: limit or None]
        ]
        options = dict(detector_options or {})
        if detector_path is not None:
            options.setdefault("model_path", detector_path)
        self.detector = make_detector(detector, **options)
        self.rules = rules

    def items(self) -> list[EvalItem]:
        return list(self._items)

    def evaluate(self, generated: Iterable[GeneratedItem], out_dir: Path) -> dict[str, float]:
        out_dir = Path(out_dir)
        image_dir = out_dir / "images"
        grid = GridCollector()
        lines: list[dict[str, Any]] = []
        written = 0
        for gen in generated:
            images = quantize(gen.images)
            if images.shape[0] != self.images_per_item:
                raise ValueError(
                    f"item {gen.item.id}: got {images.shape[0]} images, expected images_per_item={self.images_per_item}"
                )
            metadata = {k: v for k, v in gen.item.metadata.items()}
            paths = write_prompt_folder(image_dir, int(gen.item.id), metadata, list(images))
            written += len(paths)
            grid.add(images[0])
            if self.detector is not None:
                for path in paths:
                    lines.append(result_line(path, metadata, self.detector.detect(path, metadata), self.rules))
        if not written:
            raise ValueError("evaluate() received no generated items")

        settings = {
            "images_per_item": self.images_per_item,
            "detector": getattr(self.detector, "name", None) if self.detector is not None else "none",
            "rules": vars(self.rules),
            "aggregation": "tag score = mean of per-image verdicts; overall = unweighted mean of the tag scores",
        }
        if self.detector is None:
            metrics = {"overall": float("nan"), "images": float(written)}
            settings["note"] = "detector=none: layout written, not scored (run the official evaluator on images/)"
        else:
            write_jsonl(out_dir / "results.jsonl", lines)
            metrics = summarize_lines(lines)
            metrics["images"] = float(written)
        write_results(out_dir, benchmark=self.name, metrics=metrics, settings=settings)
        grid.save(out_dir / "grid.png")
        return metrics
