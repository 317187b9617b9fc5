"""Meissonic and aMUSEd masked-token text-to-image backbones for cogrpo.

* :mod:`cogrpo_meissonic.transformer` — ``MeissonicTransformer2DModel`` (loads the released
  ``MeissonFlow/Meissonic`` transformer strictly);
* :mod:`cogrpo_meissonic.backbone` — the ``meissonic`` backbone;
* :mod:`cogrpo_meissonic.amused` — the ``amused`` backbone (diffusers' ``UVit2DModel``);
* :mod:`cogrpo_meissonic.testing` — tiny random components built offline.

Nothing heavy is imported here: ``cogrpo plugins`` imports only :mod:`cogrpo_meissonic.plugin`.
"""

__version__ = "0.1.0"
