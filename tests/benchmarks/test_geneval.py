"""GenEval: the official folder layout read back, the reference verdicts through the benchmark's
own scoring path (fake detector fed the fixture detections), aggregation, detector errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchmarks_helpers import solid
from PIL import Image

from cogrpo.errors import WeightsNotFoundError
from cogrpo.geneval import GENEVAL_TAGS, Detection
from cogrpo.protocols import Benchmark, GeneratedItem
from cogrpo_benchmarks import geneval_mmdet
from cogrpo_benchmarks.errors import BenchmarkDataError, MissingDependencyError, missing_modules
from cogrpo_benchmarks.geneval import (
    GenEvalBenchmark,
    GenEvalDetector,
    load_metadata,
    read_image_folder,
    score_image_folder,
    summarize_lines,
    write_prompt_folder,
)

OFFICIAL_RESULT_KEYS = {"filename", "tag", "prompt", "correct", "reason", "metadata", "details"}


class FixtureDetector:
    """Returns, for each written image, the detections of the fixture case assigned to it."""

    name = "fixture"

    def __init__(self, by_image: dict[tuple[int, int], list[dict]]) -> None:
        self.by_image = by_image
        self.calls: list[Path] = []

    def detect(self, image_path: Path, metadata) -> list[Detection]:
        self.calls.append(Path(image_path))
        assert Path(image_path).is_file()  # detectors see the PNG as written
        key = (int(Path(image_path).parent.parent.name), int(Path(image_path).stem))
        return [Detection.from_json(d) for d in self.by_image[key]]


def test_write_prompt_folder_reads_back_in_the_official_format(tmp_path) -> None:
    meta = load_metadata()[179]
    paths = write_prompt_folder(tmp_path, 179, meta, list(solid(4, [0, 85, 170, 255])))
    folder = tmp_path / "00179"
    # the generator's json.dump(metadata, fp): the exact upstream line, no trailing newline
    assert (folder / "metadata.jsonl").read_text() == json.dumps(meta)
    assert [p.name for p in paths] == ["00000.png", "00001.png", "00002.png", "00003.png"]
    for p, level in zip(paths, [0, 85, 170, 255], strict=True):
        assert (np.asarray(Image.open(p)) == level).all()
    assert (folder / "grid.png").is_file()
    # the evaluator's filters: digit folders only, \d+.png samples only
    (tmp_path / "notes").mkdir()
    (folder / "samples" / "preview.jpg").write_bytes(b"")
    ((index, read_meta, samples),) = read_image_folder(tmp_path)
    assert index == 179 and read_meta == meta and samples == paths


def test_reference_verdicts_through_the_benchmark(tmp_path, geneval_cases) -> None:
    bundled = {json.dumps(m): i for i, m in enumerate(load_metadata())}
    chosen, seen = [], set()
    for case in geneval_cases:  # one case per prompt folder
        key = json.dumps(case["metadata"])
        if key not in seen:
            seen.add(key)
            chosen.append((bundled[key], case))
    detector = FixtureDetector({(index, 0): case["detections"] for index, case in chosen})
    bench = GenEvalBenchmark(images_per_item=1, detector=detector)
    assert isinstance(detector, GenEvalDetector) and isinstance(bench, Benchmark)
    items = {int(it.id): it for it in bench.items()}
    gens = [GeneratedItem(items[index], solid(1, 128)) for index, _ in chosen]
    metrics = bench.evaluate(gens, tmp_path)

    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(lines) == len(chosen) == len(detector.calls)
    expected = {json.dumps(case["metadata"]): case["expected_correct"] for _, case in chosen}
    for line in lines:
        assert set(line) == OFFICIAL_RESULT_KEYS
        assert line["correct"] == expected[line["metadata"]], line["reason"]
        assert Path(line["filename"]).is_file()
    # hand aggregation of the fixture's verdicts: tag accuracy, then the unweighted mean of tags
    per_tag = {t: [c["expected_correct"] for _, c in chosen if c["metadata"]["tag"] == t] for t in GENEVAL_TAGS}
    tag_scores = {t: sum(v) / len(v) for t, v in per_tag.items()}
    for tag in GENEVAL_TAGS:
        assert metrics[tag] == pytest.approx(tag_scores[tag])
    assert metrics["overall"] == pytest.approx(sum(tag_scores.values()) / 6)
    assert metrics["images"] == len(chosen)
    # the written folder scores the same when read back (e.g. detections run later, elsewhere)
    rescored = score_image_folder(tmp_path / "images", FixtureDetector(detector.by_image))
    assert rescored["overall"] == pytest.approx(metrics["overall"])


def test_summarize_lines_hand_computed() -> None:
    rows = [
        ("single_object", True, "m1"),
        ("single_object", True, "m1"),
        ("single_object", False, "m2"),
        ("counting", False, "m3"),
    ]
    metrics = summarize_lines({"tag": t, "correct": c, "metadata": m} for t, c, m in rows)
    assert metrics["single_object"] == pytest.approx(2 / 3) and metrics["counting"] == 0.0
    assert metrics["overall"] == pytest.approx(1 / 3)  # mean of the two tags present
    assert metrics["correct_images"] == pytest.approx(0.5)
    assert metrics["correct_prompts"] == pytest.approx(1 / 3)  # m1 has a correct image, m2 and m3 none


def test_detector_none_writes_the_layout_only(tmp_path) -> None:
    bench = GenEvalBenchmark(detector="none", tags=["colors"], limit=2)
    assert all(it.metadata["tag"] == "colors" for it in bench.items()) and len(bench.items()) == 2
    metrics = bench.evaluate([GeneratedItem(it, solid(4, 10)) for it in bench.items()], tmp_path)
    assert np.isnan(metrics["overall"]) and metrics["images"] == 8
    assert len(read_image_folder(tmp_path / "images")) == 2
    assert not (tmp_path / "results.jsonl").exists()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["metrics"]["overall"] is None and "official evaluator" in results["settings"]["note"]


@pytest.mark.skipif(not missing_modules("mmdet", "mmcv"), reason="the official detector stack is installed")
def test_official_detector_missing_packages_is_one_line() -> None:
    with pytest.raises(MissingDependencyError) as info:
        GenEvalBenchmark()  # default detector: Mask2Former
    message = str(info.value)
    assert "\n" not in message and "mmdet" in message and "detector=none" in message


def test_official_detector_missing_weights_is_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(geneval_mmdet, "missing_modules", lambda *names: [])  # pretend the stack is installed
    with pytest.raises(WeightsNotFoundError) as info:
        GenEvalBenchmark(detector="mask2former", detector_path=tmp_path)
    message = str(info.value)
    assert "\n" not in message and geneval_mmdet.DETECTOR_NAME + ".pth" in message
    assert str(tmp_path) in message and "--bench-opt detector_path=DIR" in message


def test_bad_detector_and_data_errors(tmp_path) -> None:
    with pytest.raises(BenchmarkDataError, match="unknown GenEval detector"):
        GenEvalBenchmark(detector="yolo")
    with pytest.raises(TypeError):
        GenEvalBenchmark(detector=object())
    with pytest.raises(BenchmarkDataError, match="--bench-opt path=DIR"):
        GenEvalBenchmark(path=tmp_path / "missing.jsonl", detector="none")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tag": "nonsense", "include": [], "prompt": "x"}\n')
    with pytest.raises(BenchmarkDataError, match="line 1"):
        GenEvalBenchmark(path=bad, detector="none")
