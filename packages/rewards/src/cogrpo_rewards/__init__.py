"""cogrpo reward plugins: ImageReward, HPSv2, CLIP score, PickScore, LAION aesthetic, JPEG, MPS.

Each reward is one file with one class implementing :class:`cogrpo.protocols.Reward`; the
factories in :mod:`cogrpo_rewards.plugin` register them under ``imagereward``, ``hpsv2`` (alias
``hps``), ``clipscore``, ``pickscore``, ``aesthetic``, ``jpeg`` and ``mps``. Importing this package
imports no model library.
"""

__version__ = "0.1.0"
