"""Helpers for the Meissonic / aMUSEd tests: the reference fixtures in ``tests/fixtures/meissonic``."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "meissonic"
CASES = ("tiny_down", "tiny_nodown")


def load_case(case: str) -> dict:
    """The fixture's config (constructor kwargs), state dict, inputs, logits and intermediates."""
    root = FIXTURES / case
    config = {k: v for k, v in json.loads((root / "config.json").read_text()).items() if not k.startswith("_")}
    return {
        "config": config,
        "state_dict": load_file(root / "model.safetensors"),
        "inputs": load_file(root / "inputs.safetensors"),
        "logits": load_file(root / "expected_logits.safetensors")["logits"],
        "intermediates": load_file(root / "intermediates.safetensors"),
        "case": json.loads((root / "case.json").read_text()),
    }


def reference_model(case: dict):
    from cogrpo_meissonic.transformer import MeissonicTransformer2DModel

    model = MeissonicTransformer2DModel(**case["config"]).eval()
    model.load_state_dict(case["state_dict"], strict=True)
    return model
