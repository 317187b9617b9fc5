"""DPG-Bench's official VQA model: mPLUG-large (COCO VQA) through a modelscope pipeline.

Mirrors the ``MPLUG`` class of ``dpg_bench/compute_dpg_bench.py``: ``pipeline(
Tasks.visual_question_answering, model="damo/mplug_visual-question-answering_coco_large_en")``
called with ``{"image": tile, "question": question}``, answer ``result["text"]``. Needs
``modelscope`` (and its mPLUG dependencies) and the model files (a modelscope model id that is
cached, or a local model directory via ``--bench-opt vqa_model=DIR``). Not installed in cogrpo's CPU
test environment: the missing-package error is tested, the model path is not.
"""

from __future__ import annotations

from typing import Any

from cogrpo.errors import WeightsNotFoundError
from cogrpo_benchmarks.errors import MissingDependencyError, missing_modules

MPLUG_MODEL = "damo/mplug_visual-question-answering_coco_large_en"


class MPLUGVQA:
    """mPLUG-large VQA (modelscope), as DPG-Bench's official evaluation uses it."""

    name = "mplug"

    def __init__(self, *, model: str = MPLUG_MODEL, device: str | None = None) -> None:
        missing = missing_modules("modelscope")
        if missing:
            raise MissingDependencyError(
                "DPG-Bench's VQA model (mPLUG via modelscope) needs the modelscope package (pip install modelscope); "
                "install it, pass another VQA object, or pass --bench-opt vqa=none to only write the official layout"
            )
        self.model = model
        self.device = device
        self._pipeline: Any = None

    def _load(self) -> None:
        import torch
        from modelscope.pipelines import pipeline
        from modelscope.utils.constant import Tasks

        device = self.device or ("gpu" if torch.cuda.is_available() else "cpu")
        try:
            self._pipeline = pipeline(Tasks.visual_question_answering, model=self.model, device=device)
        except Exception as exc:  # modelscope raises many types for a missing / unreachable model
            raise WeightsNotFoundError(
                f"could not load the mPLUG VQA model '{self.model}' ({type(exc).__name__}: {exc}); it needs the "
                f"modelscope model {MPLUG_MODEL} in the modelscope cache, or pass a local model directory with "
                "--bench-opt vqa_model=DIR"
            ) from exc

    def answer(self, image: Any, question: str) -> str:
        if self._pipeline is None:
            self._load()
        return str(self._pipeline({"image": image, "question": question})["text"])
