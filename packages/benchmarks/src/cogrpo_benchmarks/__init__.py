"""cogrpo's evaluation benchmarks: ImageReward, HPSv2, GenEval and DPG-Bench.

Each benchmark is one module implementing :class:`cogrpo.protocols.Benchmark`, registered in
:mod:`cogrpo_benchmarks.plugin`. Aggregation rules are free functions in the same modules so
they can be tested against hand-computed values.
"""

from __future__ import annotations

__version__ = "0.1.0"
