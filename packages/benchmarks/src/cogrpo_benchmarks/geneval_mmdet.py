"""GenEval's official detector stack: Mask2Former (Swin-S, mmdet 2.x) + a CLIP colour classifier.

Mirrors ``evaluation/evaluate_images.py`` of djghosh13/geneval: ``inference_detector`` on the
image file gives per-class ``[x1, y1, x2, y2, score]`` arrays (and masks); for classes that a
colour clause asks about, the kept objects (above the tag's threshold, highest first, at most
16) are classified into GenEval's ten colours by zero-shot CLIP ViT-L-14 (OpenAI weights) on the
object's crop, with the background outside the object's mask painted ``#999``. The verdict
itself is :func:`cogrpo.geneval.evaluate`.

Needs ``mmdet`` 2.x (GenEval pins 2.27.0; ``mim install mmdet==2.27.0`` with ``mmcv-full``) and
``open_clip_torch``, plus the checkpoint ``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth``
(GenEval's ``evaluation/download_models.sh``). None of these are installed in cogrpo's CPU test
environment; the missing-package and missing-weights errors are tested, the detection path is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cogrpo.errors import WeightsNotFoundError
from cogrpo.geneval import Detection, GenEvalRules
from cogrpo_benchmarks.errors import MissingDependencyError, missing_modules

DETECTOR_NAME = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco"
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
COLOR_TEMPLATES: tuple[str, ...] = (
    "a photo of a {c} {cls}",
    "a photo of a {c}-colored {cls}",
    "a photo of a {c} object",
)
REQUIRED_MODULES: tuple[str, ...] = ("mmdet", "mmcv", "open_clip")
DEFAULT_RULES = GenEvalRules()


def check_official_stack() -> None:
    """Raise a one-line :class:`MissingDependencyError` unless mmdet, mmcv and open_clip import."""
    missing = missing_modules(*REQUIRED_MODULES)
    if missing:
        raise MissingDependencyError(
            "GenEval's official detector needs mmdet 2.x with mmcv-full (mim install mmdet==2.27.0) and "
            f"open_clip_torch; missing: {', '.join(missing)}; install them or pass --bench-opt detector=none "
            "to only write the official layout"
        )


class Mask2FormerDetector:
    """GenEval's Mask2Former + CLIP colour detector (see module docstring)."""

    name = "mask2former"

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        model_config: str | Path | None = None,
        device: str | None = None,
        clip_arch: str = "ViT-L-14",
        clip_pretrained: str = "openai",
        bgcolor: str = "#999",
        crop: bool = True,
        rules: GenEvalRules = DEFAULT_RULES,
    ) -> None:
        check_official_stack()
        folder = Path(model_path or ".").expanduser()
        self.checkpoint = folder / f"{DETECTOR_NAME}.pth"
        if not self.checkpoint.is_file():
            raise WeightsNotFoundError(
                f"GenEval detector weights not found: expected {DETECTOR_NAME}.pth (from GenEval's "
                f"evaluation/download_models.sh) in {folder}; pass the folder with --bench-opt detector_path=DIR"
            )
        self.model_config = model_config
        self.device = device
        self.clip_arch, self.clip_pretrained = clip_arch, clip_pretrained
        self.bgcolor, self.crop = bgcolor, crop
        self.rules = rules
        self._loaded = False
        self._classifiers: dict[str, Any] = {}

    def _load(self) -> None:
        import mmdet
        import open_clip
        import torch
        from mmdet.apis import init_detector

        from cogrpo_benchmarks.geneval import object_names

        self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        config = self.model_config or (
            Path(mmdet.__file__).parent / ".." / "configs" / "mask2former" / f"{DETECTOR_NAME}.py"
        )
        self.detector = init_detector(str(config), str(self.checkpoint), device=self.device)
        self.clip, _, self.transform = open_clip.create_model_and_transforms(
            self.clip_arch, pretrained=self.clip_pretrained, device=self.device
        )
        self.clip.eval()
        self.tokenizer = open_clip.get_tokenizer(self.clip_arch)
        self.classnames = object_names()
        self._loaded = True

    def _color_classifier(self, cls: str):
        """``[D, 10]`` zero-shot weights: per colour, the normalised mean of the normalised
        template embeddings (clip_benchmark's ``zero_shot_classifier``)."""
        import torch
        import torch.nn.functional as F

        if cls not in self._classifiers:
            columns = []
            with torch.no_grad():
                for c in COLORS:
                    texts = self.tokenizer([t.format(c=c, cls=cls) for t in COLOR_TEMPLATES]).to(self.device)
                    emb = F.normalize(self.clip.encode_text(texts), dim=-1).mean(dim=0)
                    columns.append(emb / emb.norm())
            self._classifiers[cls] = torch.stack(columns, dim=1)
        return self._classifiers[cls]

    def _colors(self, image, objects: list[tuple[Any, Any]], cls: str) -> list[str]:
        import torch
        import torch.nn.functional as F
        from PIL import Image

        rgb = image.convert("RGB")
        blank = rgb.copy() if self.bgcolor == "original" else Image.new("RGB", rgb.size, color=self.bgcolor)
        crops = []
        for box, mask in objects:
            crop = Image.composite(rgb, blank, Image.fromarray(mask)) if mask is not None else rgb
            if self.crop:
                crop = crop.crop(tuple(float(v) for v in box[:4]))
            crops.append(self.transform(crop))
        with torch.no_grad():
            features = F.normalize(self.clip.encode_image(torch.stack(crops).to(self.device)), dim=-1)
            logits = 100.0 * features @ self._color_classifier(cls)
        return [COLORS[int(i)] for i in logits.argmax(dim=1)]

    def detect(self, image_path: Path, metadata: Mapping[str, Any]) -> list[Detection]:
        import numpy as np
        from mmdet.apis import inference_detector
        from PIL import Image, ImageOps

        if not self._loaded:
            self._load()
        result = inference_detector(self.detector, str(image_path))
        bbox = result[0] if isinstance(result, tuple) else result
        segm = result[1] if isinstance(result, tuple) and len(result) > 1 else None
        image = ImageOps.exif_transpose(Image.open(image_path))
        threshold = self.rules.counting_threshold if metadata["tag"] == "counting" else self.rules.threshold
        color_classes = {c["class"] for c in metadata.get("include", []) if "color" in c}
        detections: list[Detection] = []
        for index, cls in enumerate(self.classnames):
            boxes = np.asarray(bbox[index])
            colors: dict[int, str] = {}
            if cls in color_classes and len(boxes):
                order = np.argsort(boxes[:, 4])[::-1]
                order = order[boxes[order, 4] > threshold][: self.rules.max_objects].tolist()
                if order:
                    objects = [(boxes[j], None if segm is None else segm[index][j]) for j in order]
                    colors = dict(zip(order, self._colors(image, objects, cls), strict=True))
            for j, row in enumerate(boxes):
                detections.append(Detection(cls, tuple(float(v) for v in row[:4]), float(row[4]), colors.get(j)))
        return detections
