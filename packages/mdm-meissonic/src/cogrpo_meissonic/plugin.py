"""Registers the ``meissonic`` and ``amused`` backbones (and tiny random-weight twins) with cogrpo.

Heavy imports (diffusers, transformers) happen inside the factories.
"""

from __future__ import annotations

from typing import Any

from cogrpo import hookimpl

_BOOL_OPTIONS = ("bf16", "gradient_checkpointing", "local_files_only")
_INT_OPTIONS = ("lora_rank", "grid", "resolution")
_FLOAT_OPTIONS = ("lora_alpha", "cfg_scale", "aesthetic_score")


def _dtype(dtype: Any):
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        return getattr(torch, dtype.removeprefix("torch."))
    return dtype


def _coerce(options: dict[str, Any]) -> dict[str, Any]:
    """Command-line option strings -> the types the backbones take."""
    out = dict(options)
    for key, value in options.items():
        if not isinstance(value, str):
            continue
        if key in _BOOL_OPTIONS:
            out[key] = value.strip().lower() in {"1", "true", "yes", "on"}
        elif key in _INT_OPTIONS and value.strip().isdigit():
            out[key] = int(value)
        elif key in _FLOAT_OPTIONS:
            out[key] = float(value)
    return out


def meissonic(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """Meissonic 1B (MeissonFlow/Meissonic or a local copy): 1024 px, 64x64 tokens, CFG 9."""
    from cogrpo_meissonic.backbone import MeissonicBackbone

    return MeissonicBackbone.from_pretrained(path, device=device, dtype=_dtype(dtype), **_coerce(options))


def amused(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """aMUSEd (amused/amused-256; option variant=amused-512) through diffusers' UVit2DModel, CFG 10."""
    from cogrpo_meissonic.amused import AmusedBackbone

    return AmusedBackbone.from_pretrained(path, device=device, dtype=_dtype(dtype), **_coerce(options))


def amused_512(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """aMUSEd 512 px (amused/amused-512 or a local copy), CFG 10."""
    return amused(device=device, dtype=dtype, path=path, variant="amused-512", **options)


def meissonic_tiny(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """Meissonic-shaped tiny random-weight backbone for tests and smoke runs (no weights needed)."""
    from cogrpo_meissonic.testing import tiny_meissonic_backbone

    return tiny_meissonic_backbone(device=device, dtype=_dtype(dtype), **_coerce(options))


def amused_tiny(*, device: Any = "cpu", dtype: Any = None, path: str | None = None, **options: Any):
    """aMUSEd-shaped tiny random-weight backbone for tests and smoke runs (no weights needed)."""
    from cogrpo_meissonic.testing import tiny_amused_backbone

    return tiny_amused_backbone(device=device, dtype=_dtype(dtype), **_coerce(options))


@hookimpl
def cogrpo_register_backbones() -> dict:
    return {
        "meissonic": meissonic,
        "amused": amused,
        "amused-512": amused_512,
        "meissonic-tiny": meissonic_tiny,
        "amused-tiny": amused_tiny,
    }
