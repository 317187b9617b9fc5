"""Metrics: one accumulator, namespaced keys (SPEC §6), written to JSONL, TensorBoard and the console."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console


class Accumulator:
    """Sums values per key and averages them on :meth:`means` (e.g. over micro-batches and steps)."""

    def __init__(self) -> None:
        self._sum: dict[str, float] = defaultdict(float)
        self._count: dict[str, int] = defaultdict(int)

    def add(self, key: str, value: float, count: int = 1) -> None:
        self._sum[key] += float(value) * count
        self._count[key] += count

    def means(self) -> dict[str, float]:
        return {k: self._sum[k] / self._count[k] for k in self._sum if self._count[k]}

    def reduced(self, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> Accumulator:
        """The sums and counts added up over processes (``all_reduce_sum`` sums a tensor across them;
        every process must hold the same keys)."""
        keys = sorted(self._sum)
        local = torch.tensor([[self._sum[k], self._count[k]] for k in keys], dtype=torch.float64).reshape(-1, 2)
        total = all_reduce_sum(local)
        out = Accumulator()
        for k, (s, c) in zip(keys, total.tolist(), strict=True):
            out._sum[k], out._count[k] = s, int(c)
        return out


class MetricsLogger:
    """Writes each iteration's metrics to ``metrics.jsonl`` and TensorBoard (``tb/``) and prints a
    compact line. Only the main process logs (``enabled=False`` elsewhere)."""

    def __init__(self, run_dir: Path, console: Console | None = None, enabled: bool = True, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self.console = console or Console()
        self.enabled = enabled
        self._writer = None
        if enabled:
            self._jsonl = open(run_dir / "metrics.jsonl", "a")
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(run_dir / "tb"))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"iteration": step, **metrics}
        self._jsonl.write(json.dumps(row, default=str) + "\n")
        self._jsonl.flush()
        if self._writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)
            self._writer.flush()

    def print_line(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False)

    def warn(self, text: str) -> None:
        if self.enabled:
            self.console.print(f"[bold red]WARNING[/] {text}", highlight=False)

    def close(self) -> None:
        if not self.enabled:
            return
        self._jsonl.close()
        if self._writer is not None:
            self._writer.close()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All rows of a run's ``metrics.jsonl`` (a resumed run's repeated iterations keep the last row)."""
    rows: dict[int, dict[str, Any]] = {}
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["iteration"]] = row
    return [rows[k] for k in sorted(rows)]
