"""cogrpo_toyworld: the embedded toy world (scenes, prompts, the `toy` backbone, rewards, benchmark)."""

__version__ = "0.1.0"
