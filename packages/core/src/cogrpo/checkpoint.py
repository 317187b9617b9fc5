"""Checkpoints: safetensors for tensors, JSON for state; written atomically; nothing unpickles.

Layout of one checkpoint directory ``<run>/checkpoints/iter_000042/``::

    model.safetensors          trainable parameters of θ (by name)
    schedule_policy.safetensors    φ (absent for naive GRPO)
    optimizers.safetensors     tensor state of both optimizers ("model/..." and "schedule/...")
    rng.safetensors            torch RNG states (the trainer's generator, the global CPU/CUDA ones)
    deepspeed/                 only under --distributed deepspeed: DeepSpeed's own checkpoint of the
                               engine (θ's sharded optimizer state; torch.save files, one per rank)
    state.json                 iteration, phase, cycle, reward stats, optimizer hyper-parameters,
                               Python RNG state, ... (written last)

The directory is written under a temporary name and renamed into place, then
``checkpoints/latest.json`` is replaced atomically: a crash at any point leaves the previous
checkpoint loadable.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from cogrpo.errors import CheckpointError

FORMAT_VERSION = 1


@dataclass
class TrainState:
    """Everything besides tensors that a resumed run needs to continue exactly."""

    iteration: int = 0  # the next iteration to run
    phase: str = ""
    cycle: int = 0
    wall_time: float = 0.0
    reward_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    base_eval: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- atomic file helpers ----------------------------------------------------------------------------


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- optimizer state <-> (tensors, json) -----------------------------------------------------------


def _optimizer_to_flat(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}/{idx}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_flat(prefix: str, optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        head, idx, key = name.split("/", 2)
        if head == prefix:
            state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    groups = meta["param_groups"]
    for group in groups:  # JSON turned tuples into lists
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# -- save / load ------------------------------------------------------------------------------------


def trainable_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters of ``module`` by name, on the CPU, contiguous."""
    return {n: p.detach().cpu().contiguous() for n, p in module.named_parameters() if p.requires_grad}


def save_checkpoint(
    checkpoint_root: Path,
    state: TrainState,
    *,
    model: nn.Module | None,
    schedule_policy: nn.Module | None,
    optimizers: dict[str, torch.optim.Optimizer],
    generators: dict[str, torch.Generator],
    keep: int = 2,
) -> Path:
    """Write ``iter_<n>/`` atomically, point ``latest.json`` at it, prune old checkpoints."""
    name = checkpoint_name(state)
    tmp = prepare_temp_dir(checkpoint_root, name)
    write_checkpoint_files(
        tmp, state,
        model_tensors=trainable_state_dict(model) if model is not None else None,
        policy_tensors=trainable_state_dict(schedule_policy) if schedule_policy is not None else None,
        optimizers=optimizers, generators=generators,
    )
    return commit_checkpoint(checkpoint_root, tmp, name, keep)


# The three stages of :func:`save_checkpoint`, separate so that a distributed run can write
# DeepSpeed's sharded state into the temporary directory from every process before rank 0 commits.


def checkpoint_name(state: TrainState) -> str:
    return f"iter_{state.iteration:06d}"


def prepare_temp_dir(checkpoint_root: Path, name: str) -> Path:
    """A fresh, empty temporary directory for checkpoint ``name`` (renamed into place on commit)."""
    checkpoint_root.mkdir(parents=True, exist_ok=True)
    tmp = checkpoint_root / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def write_checkpoint_files(
    tmp: Path,
    state: TrainState,
    *,
    model_tensors: dict[str, torch.Tensor] | None,
    policy_tensors: dict[str, torch.Tensor] | None,
    optimizers: dict[str, torch.optim.Optimizer],
    generators: dict[str, torch.Generator],
) -> None:
    """cogrpo's files of one checkpoint (``state.json`` last, so that it marks a complete write)."""
    meta: dict[str, Any] = {"format_version": FORMAT_VERSION, "train_state": state.__dict__}
    if model_tensors is not None:
        save_file(model_tensors, str(tmp / "model.safetensors"))
    if policy_tensors is not None:
        save_file(policy_tensors, str(tmp / "schedule_policy.safetensors"))
    opt_tensors: dict[str, torch.Tensor] = {}
    meta["optimizers"] = {}
    for key, optimizer in optimizers.items():
        tensors, opt_meta = _optimizer_to_flat(key, optimizer)
        opt_tensors.update(tensors)
        meta["optimizers"][key] = opt_meta
    save_file(opt_tensors, str(tmp / "optimizers.safetensors"))
    rng = {f"generator/{k}": g.get_state() for k, g in generators.items()}
    rng["torch/cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch/cuda{i}"] = s
    save_file(rng, str(tmp / "rng.safetensors"))
    py_state = random.getstate()
    meta["python_random"] = [py_state[0], list(py_state[1]), py_state[2]]
    atomic_write_text(tmp / "state.json", json.dumps(meta, indent=1, default=_json_default))


def commit_checkpoint(checkpoint_root: Path, tmp: Path, name: str, keep: int) -> Path:
    """Rename the complete temporary directory into place, update ``latest.json``, prune."""
    final = checkpoint_root / name
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same iteration (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(checkpoint_root)
    atomic_write_text(checkpoint_root / "latest.json", json.dumps({"checkpoint": name}))
    _prune(checkpoint_root, keep)
    return final


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _prune(root: Path, keep: int) -> None:
    complete = sorted(p for p in root.glob("iter_*") if p.is_dir())
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".iter_*.tmp-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a run directory, a ``checkpoints/`` directory or a checkpoint."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such run or checkpoint: {path}")
    if (path / "state.json").is_file():
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    latest = root / "latest.json"
    if latest.is_file():
        try:
            candidate = root / json.loads(latest.read_text())["checkpoint"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{latest} is corrupt; delete it to fall back to the newest checkpoint") from exc
        if (candidate / "state.json").is_file():
            return candidate
    complete = sorted(p for p in root.glob("iter_*") if (p / "state.json").is_file())
    if not complete:
        raise CheckpointError(f"no checkpoint in {path} (expected {root}/iter_*/state.json)")
    return complete[-1]


@dataclass
class LoadedCheckpoint:
    path: Path
    state: TrainState
    model: dict[str, torch.Tensor] | None
    schedule_policy: dict[str, torch.Tensor] | None
    meta: dict[str, Any]
    optimizer_tensors: dict[str, torch.Tensor]
    rng: dict[str, torch.Tensor]


def read_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Read (but do not apply) a checkpoint; any damage is a one-line :class:`CheckpointError`."""
    ckpt = find_checkpoint(path)
    try:
        meta = json.loads((ckpt / "state.json").read_text())
        state = TrainState(**meta["train_state"])

        def maybe(name: str) -> dict[str, torch.Tensor] | None:
            file = ckpt / name
            return load_file(str(file)) if file.is_file() else None

        return LoadedCheckpoint(
            path=ckpt,
            state=state,
            model=maybe("model.safetensors"),
            schedule_policy=maybe("schedule_policy.safetensors"),
            meta=meta,
            optimizer_tensors=maybe("optimizers.safetensors") or {},
            rng=maybe("rng.safetensors") or {},
        )
    except (json.JSONDecodeError, KeyError, TypeError, SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {ckpt} is corrupt or incomplete ({type(exc).__name__}: {exc})") from exc


def load_module_state(module: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Load saved trainable parameters into ``module``; every trainable name must be present."""
    params = dict(module.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    missing = sorted(expected - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise CheckpointError(
            f"{what} checkpoint does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]} "
            "(was it saved with another backbone, head or option set?)"
        )
    with torch.no_grad():
        for name, value in tensors.items():
            if params[name].shape != value.shape:
                raise CheckpointError(f"{what} checkpoint: {name} has shape {tuple(value.shape)}, model has {tuple(params[name].shape)}")
            params[name].copy_(value)


def restore_training(
    loaded: LoadedCheckpoint,
    *,
    model: nn.Module | None,
    schedule_policy: nn.Module | None,
    optimizers: dict[str, torch.optim.Optimizer],
    generators: dict[str, torch.Generator],
) -> TrainState:
    """Apply a checkpoint to live objects: parameters, optimizers, RNG states."""
    if model is not None and loaded.model is not None:
        load_module_state(model, loaded.model, "model")
    if schedule_policy is not None and loaded.schedule_policy is not None:
        load_module_state(schedule_policy, loaded.schedule_policy, "schedule policy")
    for key, optimizer in optimizers.items():
        opt_meta = loaded.meta.get("optimizers", {}).get(key)
        if opt_meta is None:
            raise CheckpointError(f"checkpoint {loaded.path} has no '{key}' optimizer state")
        _optimizer_from_flat(key, optimizer, loaded.optimizer_tensors, opt_meta)
    for key, generator in generators.items():
        if f"generator/{key}" in loaded.rng:
            generator.set_state(loaded.rng[f"generator/{key}"])
    if "torch/cpu" in loaded.rng:
        torch.set_rng_state(loaded.rng["torch/cpu"])
    if torch.cuda.is_available():
        states = [loaded.rng[k] for k in sorted(loaded.rng) if k.startswith("torch/cuda")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    py = loaded.meta.get("python_random")
    if py:
        random.setstate((py[0], tuple(py[1]), py[2]))
    return loaded.state


def list_checkpoints(run_dir: Path) -> Iterable[Path]:
    return sorted(p for p in (run_dir / "checkpoints").glob("iter_*") if (p / "state.json").is_file())
