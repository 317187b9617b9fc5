"""cogrpo: schedule-aware GRPO for masked diffusion models (Co-GRPO).

The whole plugin-author API is ``from cogrpo import hookimpl``; the protocols a plugin
implements are in :mod:`cogrpo.protocols`.
"""

from __future__ import annotations

import pluggy

from cogrpo.protocols import (
    SCHEDULE_COMPONENTS,
    Backbone,
    BackboneOutput,
    Benchmark,
    EvalItem,
    FixedSchedule,
    GeneratedItem,
    PromptEmbeds,
    Reward,
    RewardOutput,
    SchedulePolicy,
)

__version__ = "0.1.0"

#: Marker for hook implementations: ``@hookimpl def cogrpo_register_rewards(): ...``
hookimpl = pluggy.HookimplMarker("cogrpo")

__all__ = [
    "SCHEDULE_COMPONENTS",
    "Backbone",
    "BackboneOutput",
    "Benchmark",
    "EvalItem",
    "FixedSchedule",
    "GeneratedItem",
    "PromptEmbeds",
    "Reward",
    "RewardOutput",
    "SchedulePolicy",
    "__version__",
    "hookimpl",
]
