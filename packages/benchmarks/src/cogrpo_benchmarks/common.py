"""Shared plumbing for the benchmarks: image files, the grid PNG, results files, reward scoring.

Images flow as float tensors ``[3, H, W]`` in ``[0, 1]`` (one image of a
:class:`cogrpo.protocols.GeneratedItem`). Everything written to disk goes through
:func:`to_uint8` (``round(255 * x)``, the diffusers/PIL convention), and everything that is
scored is scored *as written*, so the official evaluators reading our files see the same pixels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cogrpo.errors import RewardError

# -------------------------------------------------------------------------------------------------
# Images
# -------------------------------------------------------------------------------------------------


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` float in ``[0, 1]`` -> ``[H, W, 3]`` uint8 (``round(255 * x)``, clamped)."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image [3, H, W], got shape {tuple(image.shape)}")
    x = image.detach().to("cpu", torch.float32).clamp(0.0, 1.0)
    return (x * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Float images -> the float images their 8-bit files hold (``round(255 * x) / 255``)."""
    return (images.detach().to("cpu", torch.float32).clamp(0.0, 1.0) * 255.0).round() / 255.0


def to_pil(image: torch.Tensor | np.ndarray):
    """A ``[3, H, W]`` float tensor or ``[H, W, 3]`` uint8 array -> RGB ``PIL.Image``."""
    from PIL import Image

    array = image if isinstance(image, np.ndarray) else to_uint8(image)
    return Image.fromarray(array, mode="RGB")


def pil_to_tensor(pil) -> torch.Tensor:
    """RGB ``PIL.Image`` -> ``[3, H, W]`` float32 in ``[0, 1]``."""
    array = np.asarray(pil.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32) / 255.0


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file -> ``[3, H, W]`` float32 in ``[0, 1]``."""
    from PIL import Image

    with Image.open(path) as pil:
        return pil_to_tensor(pil)


def save_png(image: torch.Tensor | np.ndarray, path: Path, compress_level: int = 1) -> None:
    """Lossless PNG; level 1 is ~3x faster than PIL's default 6 on generated images (files ~30% larger)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(image).save(path, format="PNG", compress_level=compress_level)


def save_jpeg(image: torch.Tensor | np.ndarray, path: Path, quality: int = 95) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(image).save(path, format="JPEG", quality=quality)


def make_grid(images: Sequence[torch.Tensor], nrow: int, padding: int = 2, fill: float = 1.0) -> torch.Tensor:
    """Tile ``[3, H, W]`` images row-major into one ``[3, H', W']`` image (cells take the largest
    image size; smaller images sit top-left in their cell)."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    nrow = max(1, min(nrow, len(images)))
    rows = math.ceil(len(images) / nrow)
    h = max(int(im.shape[1]) for im in images)
    w = max(int(im.shape[2]) for im in images)
    grid = torch.full((3, rows * (h + padding) + padding, nrow * (w + padding) + padding), fill)
    for i, im in enumerate(images):
        r, c = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + c * (w + padding)
        grid[:, y : y + im.shape[1], x : x + im.shape[2]] = im.detach().to("cpu", torch.float32).clamp(0, 1)
    return grid


class GridCollector:
    """Keeps the first image of the first ``max_items`` items for the benchmark's ``grid.png``."""

    def __init__(self, max_items: int = 16, nrow: int = 4) -> None:
        self.max_items = max_items
        self.nrow = nrow
        self.images: list[torch.Tensor] = []

    def add(self, image: torch.Tensor) -> None:
        if len(self.images) < self.max_items:
            self.images.append(image.detach().to("cpu", torch.float32))

    def save(self, path: Path) -> Path | None:
        if not self.images:
            return None
        save_png(make_grid(self.images, self.nrow), path)
        return path


# -------------------------------------------------------------------------------------------------
# Results files
# -------------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; null means "not computed"
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return _jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if isinstance(value, torch.device):
        return str(value)
    return value


def markdown_table(title: str, metrics: Mapping[str, float], settings: Mapping[str, Any] | None = None) -> str:
    """A small markdown report: a ``metric | value`` table, then the settings as a list."""
    lines = [f"# {title}", "", "| metric | value |", "| --- | ---: |"]
    for key, value in metrics.items():
        shown = "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.4f}"
        lines.append(f"| {key} | {shown} |")
    if settings:
        lines += ["", "Settings:", ""]
        lines += [f"- {key}: `{json.dumps(_jsonable(value))}`" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def write_results(
    out_dir: Path,
    *,
    benchmark: str,
    metrics: Mapping[str, float],
    settings: Mapping[str, Any],
    details: Mapping[str, Any] | None = None,
) -> None:
    """Write ``results.json`` (metrics, settings, per-item details) and ``results.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": benchmark, "metrics": dict(metrics), "settings": dict(settings)}
    if details:
        payload.update(details)
    (out_dir / "results.json").write_text(json.dumps(_jsonable(payload), indent=2, ensure_ascii=False) + "\n")
    (out_dir / "results.md").write_text(markdown_table(benchmark, metrics, settings))


# -------------------------------------------------------------------------------------------------
# Rewards
# -------------------------------------------------------------------------------------------------


def as_bool(value: Any) -> bool:
    """A flag from code or the command line (``True``, ``"true"``, ``"no"``, ``1`` ...)."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    return bool(value)


def as_dtype(value: Any) -> torch.dtype:
    if value is None:
        return torch.float32
    if isinstance(value, torch.dtype):
        return value
    name = str(value).replace("torch.", "")
    aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
    dtype = getattr(torch, aliases.get(name, name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {value!r}")
    return dtype


class RewardHandle:
    """A reward given by name (created through the plugin manager on first use) or as an object
    satisfying :class:`cogrpo.protocols.Reward`."""

    def __init__(
        self,
        reward: Any,
        *,
        device: Any = "cpu",
        dtype: Any = None,
        path: str | None = None,
        options: Mapping[str, Any] | None = None,
        plugin_manager: Any = None,
    ) -> None:
        self.spec = reward
        self.device = device
        self.dtype = as_dtype(dtype)
        self.path = path
        self.options = dict(options or {})
        self.plugin_manager = plugin_manager
        self._reward: Any = None if isinstance(reward, str) else reward

    @property
    def name(self) -> str:
        return self.spec if isinstance(self.spec, str) else str(getattr(self.spec, "name", type(self.spec).__name__))

    def get(self) -> Any:
        if self._reward is None:
            from cogrpo.plugins import create, default_plugin_manager

            pm = self.plugin_manager or default_plugin_manager()
            self._reward = create(
                pm, "reward", self.spec, device=self.device, dtype=self.dtype, path=self.path, **self.options
            )
        return self._reward


def score_images(reward: Any, images: torch.Tensor, prompts: Sequence[str], metadata=None) -> list[float]:
    """Score ``images`` ``[B, 3, H, W]`` under ``torch.no_grad``; one finite float per image."""
    with torch.no_grad():
        out = reward(images, list(prompts), metadata=metadata)
    scores = out.scores.detach().to("cpu", torch.float64).reshape(-1)
    name = getattr(reward, "name", type(reward).__name__)
    if scores.numel() != len(prompts):
        raise RewardError(f"reward '{name}' returned {scores.numel()} scores for {len(prompts)} images")
    if not torch.isfinite(scores).all():
        raise RewardError(f"reward '{name}' returned non-finite scores; check its weights and inputs")
    return scores.tolist()


class BatchScorer:
    """Accumulates ``(key, image, prompt)`` across items and scores them in batches of
    ``batch_size``, so one-image-per-item benchmarks still batch the reward model."""

    def __init__(self, reward: Callable[[], Any], batch_size: int = 16) -> None:
        self._reward = reward
        self.batch_size = max(1, int(batch_size))
        self._pending: list[tuple[Any, torch.Tensor, str]] = []
        self.scores: dict[Any, float] = {}

    def add(self, key: Any, image: torch.Tensor, prompt: str) -> None:
        self._pending.append((key, image, prompt))
        if len(self._pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        keys, images, prompts = zip(*self._pending, strict=True)
        self._pending = []
        # images of one batch share a size (one backbone, one resolution)
        scores = score_images(self._reward(), torch.stack(list(images)), prompts)
        self.scores.update(zip(keys, scores, strict=True))


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else float("nan")
