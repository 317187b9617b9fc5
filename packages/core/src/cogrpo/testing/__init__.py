"""Test kit for cogrpo and its plugins: a tiny random-weight backbone and contract mixins."""

from cogrpo.testing.contracts import BackboneContract, RewardContract, SchedulePolicyContract
from cogrpo.testing.tiny import BrightnessReward, TinyBackbone, TinyMDM, TinyScheduleHead

__all__ = [
    "BackboneContract",
    "BrightnessReward",
    "RewardContract",
    "SchedulePolicyContract",
    "TinyBackbone",
    "TinyMDM",
    "TinyScheduleHead",
]
