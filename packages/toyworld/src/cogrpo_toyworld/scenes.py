"""The toy world: scenes of small coloured shapes on a token grid, and the way back from a grid.

A canvas is an ``H x W`` grid of palette indices (token id = palette index, so the backbone's
codebook *is* the palette): ``0`` is the background, ``1..6`` are the six named colours. A shape
is a fixed 3x3 pixel template; a scene places 1-4 shapes with at least one background row or
column between any two of them.

The way back (what the rewards and the benchmark use) plays the role of GenEval's detector and
colour classifier: connected components per colour (8-connectivity), each compared with the
templates; an exact match is a detection with the shape as class and the colour as label, any
other component is not a detection (a malformed shape or stray pixels).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cogrpo.geneval import Detection, evaluate

GRID: tuple[int, int] = (7, 7)  # (H, W) of the canvas: 2 x 2 slots of 3x3 with a one-cell gap
LAYOUT = "slots"  # where sampled scenes put objects: the 2 x 2 slot lattice ("free": anywhere)
PIXEL_SCALE: int = 8  # decode upscales each token to an 8x8 pixel block (56x56 images)

BACKGROUND = "background"
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple")
PALETTE_NAMES: tuple[str, ...] = (BACKGROUND, *COLORS)  # index = token id
PALETTE_RGB: tuple[tuple[float, float, float], ...] = (
    (0.10, 0.10, 0.12),  # background: near-black
    (0.90, 0.10, 0.10),  # red
    (1.00, 0.55, 0.00),  # orange
    (0.95, 0.90, 0.10),  # yellow
    (0.15, 0.75, 0.20),  # green
    (0.15, 0.35, 0.95),  # blue
    (0.60, 0.20, 0.80),  # purple
)
NUM_TOKENS = len(PALETTE_NAMES)  # K = 7
COLOR_TOKEN = {name: i for i, name in enumerate(PALETTE_NAMES)}


def _template(rows: str) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows.split("/")], dtype=bool)


#: The shape classes: 3x3 templates ('#' = the object's colour, '.' = background).
SHAPES: dict[str, np.ndarray] = {
    "square": _template("###/###/###"),
    "ring": _template("###/#.#/###"),
    "cross": _template(".#./###/.#."),
    "triangle": _template("#../##./###"),
}
SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)
SHAPE_SIZE = 3


@dataclass(frozen=True)
class SceneObject:
    """One shape: class, colour, and the top-left cell ``(x, y)`` of its 3x3 box (y downward)."""

    shape: str
    color: str
    x: int
    y: int

    @property
    def box(self) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)`` in token units, x2/y2 exclusive (so width = height = 3)."""
        h, w = SHAPES[self.shape].shape
        return (float(self.x), float(self.y), float(self.x + w), float(self.y + h))


@dataclass(frozen=True)
class Scene:
    """A canvas size and the objects on it."""

    objects: tuple[SceneObject, ...]
    grid: tuple[int, int] = GRID


@dataclass(frozen=True)
class FoundObject:
    """A connected component of one colour: its cells, colour, and shape class (``None`` when the
    component matches no template)."""

    color: str
    shape: str | None
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 (exclusive), token units
    num_pixels: int


# -------------------------------------------------------------------------------------------------
# Scene -> tokens -> RGB and back
# -------------------------------------------------------------------------------------------------


def render_tokens(scene: Scene) -> torch.Tensor:
    """Scene -> ``[H, W]`` int64 palette indices (background 0)."""
    h, w = scene.grid
    grid = torch.zeros(h, w, dtype=torch.long)
    for obj in scene.objects:
        mask = torch.from_numpy(SHAPES[obj.shape])
        th, tw = mask.shape
        if obj.x < 0 or obj.y < 0 or obj.x + tw > w or obj.y + th > h:
            raise ValueError(f"{obj} does not fit on a {h}x{w} canvas")
        window = grid[obj.y : obj.y + th, obj.x : obj.x + tw]
        window[mask] = COLOR_TOKEN[obj.color]
    return grid


def palette_tensor(device: torch.device | str = "cpu") -> torch.Tensor:
    """``[K, 3]`` float32 RGB in [0, 1]."""
    return torch.tensor(PALETTE_RGB, dtype=torch.float32, device=device)


def tokens_to_rgb(tokens: torch.Tensor, grid: tuple[int, int] = GRID, scale: int = PIXEL_SCALE) -> torch.Tensor:
    """``[B, N]`` (or ``[B, H, W]``) palette ids -> ``[B, 3, H*scale, W*scale]`` float in [0, 1].

    Ids outside the palette (e.g. a mask id left in a partial canvas) are drawn mid-grey.
    """
    h, w = grid
    ids = tokens.reshape(-1, h * w)
    palette = torch.cat([palette_tensor(tokens.device), torch.full((1, 3), 0.5, device=tokens.device)])
    rgb = palette[ids.clamp(0, NUM_TOKENS)]  # [B, N, 3]
    img = rgb.view(-1, h, w, 3).permute(0, 3, 1, 2)  # [B, 3, H, W]
    return F.interpolate(img, scale_factor=scale, mode="nearest")


def rgb_to_tokens(images: torch.Tensor, grid: tuple[int, int] = GRID) -> torch.Tensor:
    """``[B, 3, H_img, W_img]`` -> ``[B, H*W]`` palette ids: each cell's mean colour, nearest entry.

    Exact for images made by :func:`tokens_to_rgb` at any integer scale.
    """
    cells = F.adaptive_avg_pool2d(images.float(), grid)  # [B, 3, H, W]
    flat = cells.flatten(2).transpose(1, 2)  # [B, N, 3]
    dist = (flat[:, :, None, :] - palette_tensor(images.device)[None, None]).pow(2).sum(-1)  # [B, N, K]
    return dist.argmin(-1)


# -------------------------------------------------------------------------------------------------
# Tokens -> objects -> GenEval detections
# -------------------------------------------------------------------------------------------------


def classify(cells: np.ndarray) -> str | None:
    """A component's cropped boolean mask -> the shape whose template it equals exactly, else None."""
    for name, template in SHAPES.items():
        if cells.shape == template.shape and np.array_equal(cells, template):
            return name
    return None


def find_objects(tokens: torch.Tensor | np.ndarray, grid: tuple[int, int] = GRID) -> list[FoundObject]:
    """Connected components (8-connectivity) of every non-background colour in one ``[N]`` or
    ``[H, W]`` grid, in raster order of their first cell."""
    h, w = grid
    arr = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens).reshape(h, w)
    seen = np.zeros((h, w), dtype=bool)
    found: list[FoundObject] = []
    for y0 in range(h):
        for x0 in range(w):
            token = int(arr[y0, x0])
            if seen[y0, x0] or token == 0:
                continue
            stack, cells = [(y0, x0)], []
            seen[y0, x0] = True
            while stack:
                y, x = stack.pop()
                cells.append((y, x))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = y + dy, x + dx
                        if 0 <= ny < h and 0 <= nx < w and not seen[ny, nx] and arr[ny, nx] == token:
                            seen[ny, nx] = True
                            stack.append((ny, nx))
            ys, xs = zip(*cells)
            y1, y2, x1, x2 = min(ys), max(ys) + 1, min(xs), max(xs) + 1
            crop = np.zeros((y2 - y1, x2 - x1), dtype=bool)
            crop[np.array(ys) - y1, np.array(xs) - x1] = True
            color = PALETTE_NAMES[token] if 0 <= token < NUM_TOKENS else f"token{token}"
            found.append(FoundObject(color, classify(crop), (float(x1), float(y1), float(x2), float(y2)), len(cells)))
    return found


def detections(objects: Sequence[FoundObject]) -> list[Detection]:
    """Recognised shapes as GenEval detections (class = shape, score 1.0, colour label)."""
    return [Detection(o.shape, o.box, 1.0, o.color) for o in objects if o.shape is not None]


def scene_detections(scene: Scene) -> list[Detection]:
    """Detections of a scene's own objects (what a perfect detector would return)."""
    return [Detection(o.shape, o.box, 1.0, o.color) for o in scene.objects]


# -------------------------------------------------------------------------------------------------
# Sampling scenes that satisfy prompt metadata
# -------------------------------------------------------------------------------------------------


def _separated(a: SceneObject, b: SceneObject) -> bool:
    """At least one background row or column between the two boxes."""
    ax1, ay1, ax2, ay2 = a.box
    bx1, by1, bx2, by2 = b.box
    return ax2 < bx1 or bx2 < ax1 or ay2 < by1 or by2 < ay1


def _origins(size: int, extent: int, layout: str) -> list[int]:
    """Allowed top-left coordinates along one axis: every fitting one (``free``) or the slot
    lattice of pitch ``extent + 1`` (``slots``: 0 and 4 on a 7-cell axis)."""
    if layout == "free":
        return list(range(size - extent + 1))
    if layout == "slots":
        return list(range(0, size - extent + 1, extent + 1))
    raise ValueError(f"unknown layout {layout!r} (free or slots)")


def sample_scene(
    metadata: Mapping[str, Any],
    rng: random.Random,
    grid: tuple[int, int] = GRID,
    max_tries: int = 1000,
    layout: str = LAYOUT,
) -> Scene:
    """A random scene that GenEval's rules accept for ``metadata`` and nothing more: exactly the
    objects the include clauses ask for (unspecified colours drawn uniformly), separated, and
    the position relation satisfied. Deterministic given ``rng``'s state."""
    wanted: list[tuple[str, str | None]] = []
    for clause in metadata["include"]:
        wanted += [(clause["class"], clause.get("color"))] * int(clause["count"])
    h, w = grid
    for _ in range(max_tries):
        placed: list[SceneObject] = []
        for shape, color in wanted:
            th, tw = SHAPES[shape].shape
            candidates = [
                SceneObject(shape, "red", x, y) for y in _origins(h, th, layout) for x in _origins(w, tw, layout)
            ]
            candidates = [c for c in candidates if all(_separated(c, p) for p in placed)]
            if not candidates:
                break
            spot = rng.choice(candidates)
            placed.append(SceneObject(shape, color or rng.choice(COLORS), spot.x, spot.y))
        else:
            scene = Scene(tuple(placed), grid)
            if evaluate(metadata, scene_detections(scene))[0]:
                return scene
    raise RuntimeError(f"could not place a scene for {metadata.get('prompt', metadata)} on a {h}x{w} canvas")


__all__ = [
    "BACKGROUND",
    "COLORS",
    "GRID",
    "NUM_TOKENS",
    "PALETTE_NAMES",
    "PALETTE_RGB",
    "PIXEL_SCALE",
    "SHAPES",
    "SHAPE_NAMES",
    "FoundObject",
    "Scene",
    "SceneObject",
    "classify",
    "detections",
    "find_objects",
    "palette_tensor",
    "render_tokens",
    "rgb_to_tokens",
    "sample_scene",
    "scene_detections",
    "tokens_to_rgb",
]
