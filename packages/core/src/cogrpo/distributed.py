"""Data-parallel Co-GRPO: launch, exact group statistics, gradient synchronisation, ZeRO, checkpoints.

``cogrpo train --distributed ddp|deepspeed`` runs the same loop in every process (launched by
``torchrun`` or ``deepspeed``); a single process (``--distributed none``) runs it with every helper
here a no-op and torch.distributed untouched. The design makes a run **world-size invariant**:
the same config gives the same numbers on 1 or W processes (up to float summation order).

* **Prompts**: every process draws the same global prompt sample from the shared trainer RNG
  (same seed everywhere), so the RNG stays in lock-step with a one-process run.
* **Rollouts**: process ``r`` rolls out the contiguous block ``[r·B/W, (r+1)·B/W)`` of the global
  batch; each trajectory's generator is seeded from its *global* index, so its noise does not
  depend on the rank (every rank draws different noise, and the same noise as one process would).
* **Rewards**: each process scores its own block; the ``[B, J]`` scores are all-gathered *before*
  the group normalisation, so groups may straddle processes and the advantages are bitwise those of
  one process.
* **Update**: the recorded rollout is all-gathered too, and every optimizer step covers exactly
  the trajectories it covers in one process: each global micro-batch of the (shared) permutation is
  split into W equal pieces, one per process. The per-step loss keeps its global normalisation and
  the gradients are summed over processes before the step. So ``--*-micro-batch`` counts
  trajectories per forward/backward *summed over processes* (each runs ``micro_batch / W``).
* **θ (model)**: ``ddp``: replicated, gradients all-reduced in buckets once per optimizer step (the
  per-step backward calls backward T times per micro-batch, so overlapping communication with one
  backward would buy nothing). ``deepspeed``: a DeepSpeed engine with ZeRO stage 1/2/3 around the
  backbone's model and cogrpo's own torch optimizer; ``managed_gradient_accumulation: false`` makes
  ``engine.step()`` the accumulation boundary, and the loss is scaled by W because DeepSpeed averages.
* **φ (schedule head)**: small, replicated in every mode with its own torch optimizer; gradients
  all-reduced explicitly.
* **Lock-step guard**: ZeRO-3 gathers parameters with collectives inside every forward, so every
  process must run the same forwards and backwards (flow_grpo #144). Equal shards guarantee it;
  each iteration also checks that all processes agree on the iteration and the RNG state, and
  fails with one line instead of hanging.
* **Logging and checkpoints**: rank 0 only; update metrics are reduced over processes. Under
  DeepSpeed the checkpoint directory also holds ``deepspeed/`` (the engine's own checkpoint of the
  sharded optimizer state), written inside the same temporary directory before the atomic rename.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import socket
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from cogrpo import checkpoint as ckpt
from cogrpo.config import TrainConfig
from cogrpo.errors import CheckpointError, CogrpoError, ConfigError
from cogrpo.metrics import Accumulator
from cogrpo.protocols import Backbone, PromptEmbeds
from cogrpo.reward_utils import resolve_device
from cogrpo.sampler import Rollout

T = TypeVar("T")

DEEPSPEED_TAG = "deepspeed"  # sub-directory of a checkpoint holding DeepSpeed's own checkpoint
GRAD_BUCKET_NUMEL = 1 << 25  # elements per gradient all-reduce bucket (128 MiB in fp32)
#: DeepSpeed settings that cogrpo decides (a --deepspeed-config file may not change them)
DEEPSPEED_OWNED_KEYS = frozenset({
    "optimizer", "scheduler", "fp16", "bf16", "train_batch_size", "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps", "managed_gradient_accumulation", "gradient_clipping",
})
MODE_SUMMARY = {"ddp": "data-parallel (θ and φ replicated)", "deepspeed": "DeepSpeed (θ under ZeRO, φ replicated)"}


# =================================================================================================
# The process group
# =================================================================================================


@dataclass
class DistContext:
    """Where this process stands: rank, world size, its device, and the collectives cogrpo uses.

    With ``world_size == 1`` and no process group every method is a cheap no-op.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    mode: str = "none"  # none | ddp | deepspeed
    device: torch.device | None = None  # this process's device (None: as configured)
    backend: str | None = None  # gloo | nccl, None without a process group
    owns_group: bool = False  # this context started the process group (and ends it)
    set_env: tuple[str, ...] = ()  # launcher variables this context set itself (a world of one)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """A process group exists (also for a world of one under ``--distributed``)."""
        return self.backend is not None

    @property
    def comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    # -- collectives ------------------------------------------------------------------------------

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """A reduced copy of ``tensor`` (``op``: sum or max), on ``tensor``'s device."""
        if not self.active:
            return tensor
        ops = {"sum": torch.distributed.ReduceOp.SUM, "max": torch.distributed.ReduceOp.MAX}
        out = tensor.detach().to(self.comm_device, copy=True)
        torch.distributed.all_reduce(out, op=ops[op])
        return out.to(tensor.device)

    def all_gather_cat(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Every process's ``tensor`` concatenated along ``dim`` in rank order (shapes must match)."""
        if not self.active or self.world_size == 1:
            return tensor
        local = tensor.detach().contiguous()
        wire = local.to(self.comm_device, torch.uint8 if local.dtype == torch.bool else local.dtype)
        parts = [torch.empty_like(wire) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, wire)
        return torch.cat(parts, dim=dim).to(local.device, local.dtype)

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's ``obj`` on every process."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_parameters(self, *modules: nn.Module | None) -> None:
        """Copy rank 0's parameters and buffers to every process (identical replicas at the start)."""
        if not self.active or self.world_size == 1:
            return
        with torch.no_grad():
            for module in modules:
                if module is None:
                    continue
                for tensor in [*module.parameters(), *module.buffers()]:
                    data = tensor.data
                    wire = data if data.device == self.comm_device else data.to(self.comm_device)
                    torch.distributed.broadcast(wire, src=0)
                    if wire is not data:
                        data.copy_(wire)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average scalar metrics over processes (every process must pass the same keys)."""
        if not self.active or self.world_size == 1:
            return values
        keys = sorted(values)
        totals = self.all_reduce(torch.tensor([values[k] for k in keys], dtype=torch.float64))
        return {k: (totals[i] / self.world_size).item() for i, k in enumerate(keys)}

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only; every process returns its result (or raises its error)."""
        if not self.active:
            return fn()
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as exc:  # re-raised on every process below
                error = exc
        shared = self.broadcast_object((result, None if error is None else f"{type(error).__name__}: {error}"))
        if error is not None:
            raise error
        if shared[1] is not None:
            raise CogrpoError(f"rank 0 failed: {shared[1]}")
        return shared[0]

    # -- sharding ---------------------------------------------------------------------------------

    def shard(self, n: int) -> slice:
        """This process's contiguous block of ``n`` items (``n`` divisible by the world size)."""
        per = n // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def check_lockstep(self, iteration: int, rng: torch.Generator) -> None:
        """Fail with one line (instead of hanging in a collective) when processes have diverged."""
        if not self.active or self.world_size == 1:
            return
        mine = torch.tensor([iteration, zlib.crc32(rng.get_state().numpy().tobytes())], dtype=torch.int64)
        every = self.all_gather_cat(mine[None]).tolist()
        if any(row != every[0] for row in every):
            raise CogrpoError(
                f"processes out of step at iteration {iteration}: (iteration, RNG crc) per rank = {every}; "
                "every process must run the same config and seed (launch all ranks with identical arguments)"
            )

    def describe(self) -> str:
        """A line for the run's start-up summary ("" in one process)."""
        if not self.active:
            return ""
        what = MODE_SUMMARY[self.mode]
        return f"\n  distributed: {what}, {self.world_size} process(es), {self.backend}, rank 0 on {self.device}"

    def localize(self, config: TrainConfig) -> TrainConfig:
        """``config`` with this process's device (``cuda:LOCAL_RANK`` on GPUs)."""
        if self.device is None:
            return config
        return dataclasses.replace(config, device=str(self.device))

    def close(self, synchronize: bool = False) -> None:
        """End the process group if this context started it. ``synchronize`` (a clean exit only: a
        failed rank would leave its peers waiting) first waits for every rank, so that no rank tears
        its transport down while a peer still has collectives in flight (ZeRO-3 prefetches)."""
        if self.owns_group and torch.distributed.is_initialized():
            if synchronize and self.world_size > 1:
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()
            self.owns_group = False
        for name in self.set_env:
            os.environ.pop(name, None)
        self.set_env = ()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def start(config: TrainConfig) -> Iterator[DistContext]:
    """The process group for ``config.distributed``, ended on exit (if this started it).

    ``none``: nothing is started (a launcher's ``WORLD_SIZE > 1`` is then an error). ``ddp`` and
    ``deepspeed`` read ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
    (set by ``torchrun`` and ``deepspeed``); without a launcher they run as a world of one.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if config.distributed == "none":
        if world > 1:
            raise ConfigError(
                f"launched as {world} processes but --distributed is none; add --distributed ddp or deepspeed"
            )
        yield DistContext()
        return
    ctx = _init_group(config)
    try:
        if config.distributed == "deepspeed":
            _init_deepspeed(ctx, config)
        check_batch_layout(config, ctx.world_size)
        _check_same_config(ctx, config)
        yield ctx
    except BaseException:
        ctx.close()
        raise
    ctx.close(synchronize=True)


def _init_group(config: TrainConfig) -> DistContext:
    import torch.distributed as dist

    set_env: list[str] = []
    if "RANK" not in os.environ:  # no launcher: a world of one
        defaults = {
            "RANK": "0",
            "WORLD_SIZE": "1",
            "LOCAL_RANK": "0",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port()),
        }
        set_env = [k for k in defaults if k not in os.environ]
        os.environ.update({k: defaults[k] for k in set_env})
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(config.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=config.dist_timeout))
    return DistContext(rank, world, local_rank, config.distributed, device, backend, owns, tuple(set_env))


def _init_deepspeed(ctx: DistContext, config: TrainConfig) -> None:
    """DeepSpeed's communication layer on top of the process group (quiet on every rank)."""
    import deepspeed

    deepspeed.utils.logger.setLevel(logging.WARNING)
    # DeepSpeed's ZeRO calls deprecated torch collectives on every step; the warnings are not ours to fix
    warnings.filterwarnings(
        "ignore", message=r".*(all_gather_into_tensor|reduce_scatter_tensor).* is deprecated", category=FutureWarning
    )
    deepspeed.init_distributed(dist_backend=ctx.backend, timeout=datetime.timedelta(seconds=config.dist_timeout))


def check_batch_layout(config: TrainConfig, world_size: int) -> None:
    """One-line errors for batch sizes that do not split evenly over ``world_size`` processes."""
    if world_size == 1:
        return
    for phase in ("model", "schedule"):
        batch, micro = getattr(config, f"{phase}_batch_size"), getattr(config, f"{phase}_micro_batch")
        if batch % world_size:
            raise ConfigError(
                f"--{phase}-batch-size {batch} does not split over {world_size} processes; "
                f"use a multiple of {world_size}"
            )
        if micro % world_size and micro < batch:
            raise ConfigError(
                f"--{phase}-micro-batch {micro} (trajectories per forward summed over processes) does not split over "
                f"{world_size} processes; use a multiple of {world_size}"
            )


def _check_same_config(ctx: DistContext, config: TrainConfig) -> None:
    """Every process must run the same config (fails on every rank, so none waits for the others)."""
    ours = json.dumps(config.to_dict(), sort_keys=True, default=str)
    differing = [rank for rank, theirs in enumerate(ctx.all_gather_object(ours)) if theirs != ours]
    if differing:
        raise ConfigError(
            f"ranks {differing} were launched with a different config than rank {ctx.rank}; "
            "pass every rank the same options"
        )


# =================================================================================================
# Gathering a batch
# =================================================================================================


def gather_rollout(ctx: DistContext, traj: Rollout, embeds: PromptEmbeds) -> tuple[Rollout, PromptEmbeds]:
    """Every process's trajectories and prompt embeddings, in global order (the update's input)."""
    if not ctx.active or ctx.world_size == 1:
        return traj, embeds
    shapes = ctx.all_gather_object({k: tuple(v.shape) for k, v in embeds.items()})
    if any(s != shapes[0] for s in shapes):
        raise CogrpoError(
            f"the backbone's prompt embeddings differ in shape between processes ({shapes[0]} vs {shapes[1:]}); "
            "distributed training needs fixed-length prompt encodings (pad to a fixed length)"
        )
    fields = {}
    for f in dataclasses.fields(traj):
        value = getattr(traj, f.name)
        fields[f.name] = ctx.all_gather_cat(value, dim=1) if isinstance(value, torch.Tensor) else value
    return Rollout(**fields), {k: ctx.all_gather_cat(v, dim=0) for k, v in embeds.items()}


# =================================================================================================
# Gradient synchronisation: how one update is shared among processes
# =================================================================================================


class UpdateSync:
    """One process: plain ``backward`` and optimizer steps (the reference every mode must equal)."""

    def __init__(self, ctx: DistContext | None = None) -> None:
        self.ctx = ctx or DistContext()

    def shard(self, micro_batch: torch.Tensor) -> torch.Tensor:
        """This process's piece of a global micro-batch (trajectory indices)."""
        return micro_batch

    def backward(self, loss: torch.Tensor, trains_model: bool) -> None:
        loss.backward()

    def step(
        self, optimizers: Sequence[torch.optim.Optimizer], params: Sequence[nn.Parameter], max_grad_norm: float | None
    ) -> float | None:
        """Clip, step every optimizer, clear the gradients; return the gradient norm (when clipping)."""
        norm = None
        if max_grad_norm is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        return norm

    def means(self, stats: Accumulator) -> dict[str, float]:
        """Update statistics averaged over every trajectory and step of every process."""
        if not self.ctx.active:
            return stats.means()
        return stats.reduced(self.ctx.all_reduce).means()

    def max(self, value: float) -> float:
        if not self.ctx.active:
            return value
        return self.ctx.all_reduce(torch.tensor([value], dtype=torch.float64), op="max").item()

    # -- the model outside the update -------------------------------------------------------------

    def unwrap(self, backbone: Backbone) -> nn.Module:
        """The backbone's plain ``nn.Module`` (parameter names as in a one-process run)."""
        return backbone.model

    def trainable_state(self, module: nn.Module) -> dict[str, torch.Tensor] | None:
        """Trainable parameters on the CPU, on rank 0 (None elsewhere)."""
        return ckpt.trainable_state_dict(module) if self.ctx.is_main else None

    def release(self, backbone: Backbone, rebuild: Callable[[], Backbone] | None = None) -> Backbone | None:
        """After training: the backbone with its plain model, for work that rank 0 runs alone
        (evaluation). Every process must call it. ``rebuild`` makes a fresh backbone when the
        trained parameters are sharded (ZeRO-3); without it, None is returned in that case."""
        return backbone

    # -- checkpoints ------------------------------------------------------------------------------

    def save_checkpoint(
        self,
        root: Path,
        state: ckpt.TrainState,
        *,
        model: nn.Module | None,
        schedule_policy: nn.Module | None,
        optimizers: dict[str, torch.optim.Optimizer],
        generators: dict[str, torch.Generator],
        keep: int,
    ) -> Path | None:
        """Write a checkpoint atomically (rank 0 writes cogrpo's files; every process waits for it)."""
        if not self.ctx.active:
            return ckpt.save_checkpoint(
                root,
                state,
                model=model,
                schedule_policy=schedule_policy,
                optimizers=optimizers,
                generators=generators,
                keep=keep,
            )
        state.extra["distributed"] = {"mode": self.ctx.mode, "world_size": self.ctx.world_size, **self.layout()}
        name = ckpt.checkpoint_name(state)
        tmp = self.ctx.broadcast_object(ckpt.prepare_temp_dir(root, name) if self.ctx.is_main else None)
        self.ctx.barrier()
        self.write_sharded(tmp)
        model_tensors = self.trainable_state(model) if model is not None else None
        final = None
        if self.ctx.is_main:
            policy_tensors = ckpt.trainable_state_dict(schedule_policy) if schedule_policy is not None else None
            ckpt.write_checkpoint_files(
                tmp,
                state,
                model_tensors=model_tensors,
                policy_tensors=policy_tensors,
                optimizers=self.checkpointed(optimizers),
                generators=generators,
            )
            final = ckpt.commit_checkpoint(root, tmp, name, keep)
        self.ctx.barrier()
        return final

    def layout(self) -> dict[str, Any]:
        return {}

    def checkpointed(self, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, torch.optim.Optimizer]:
        """The optimizers whose state cogrpo writes itself (θ's lives in DeepSpeed's checkpoint)."""
        return optimizers

    def write_sharded(self, tmp: Path) -> None:
        """Write state that every process holds a part of into the temporary checkpoint directory."""

    def load_sharded(self, loaded: ckpt.LoadedCheckpoint) -> None:
        """Restore what :meth:`write_sharded` wrote (after the engine exists)."""


class AllReduceSync(UpdateSync):
    """``--distributed ddp``: θ and φ replicated; each optimizer step sums the gradients of all processes.

    The loss keeps its global normalisation (trajectories of the global accumulation group), so the
    summed gradient is the one-process gradient of the same global batch.
    """

    #: the loss is multiplied by this before backward; the all-reduced gradient is divided by it
    loss_scale: float = 1.0

    def shard(self, micro_batch: torch.Tensor) -> torch.Tensor:
        return micro_batch.tensor_split(self.ctx.world_size)[self.ctx.rank]

    def backward(self, loss: torch.Tensor, trains_model: bool) -> None:
        (loss * self.loss_scale if self.loss_scale != 1.0 else loss).backward()

    def step(self, optimizers, params, max_grad_norm):
        all_reduce_gradients(self.ctx, params, divide_by=self.loss_scale)
        return super().step(optimizers, params, max_grad_norm)


def all_reduce_gradients(ctx: DistContext, params: Sequence[nn.Parameter], divide_by: float = 1.0) -> None:
    """Sum ``.grad`` over processes in flat buckets (a gradient missing on some process counts as zero;
    one missing everywhere stays ``None``, as in one process)."""
    params = list(params)
    if not ctx.active or ctx.world_size == 1 or not params:
        return
    present = ctx.all_reduce(torch.tensor([p.grad is not None for p in params], dtype=torch.float32), op="max")
    live = []
    for p, flag in zip(params, present.tolist(), strict=True):
        if flag:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            live.append(p)
    for bucket in _buckets(live):
        grads = [p.grad for p in bucket]
        flat = torch.cat([g.reshape(-1) for g in grads]).to(ctx.comm_device)
        torch.distributed.all_reduce(flat)
        if divide_by != 1.0:
            flat.div_(divide_by)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def _buckets(params: list[nn.Parameter]) -> Iterator[list[nn.Parameter]]:
    bucket: list[nn.Parameter] = []
    size = 0
    for p in params:
        if bucket and (size + p.numel() > GRAD_BUCKET_NUMEL or p.grad.dtype != bucket[0].grad.dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(p)
        size += p.numel()
    if bucket:
        yield bucket


class DeepSpeedSync(AllReduceSync):
    """``--distributed deepspeed``: θ under a DeepSpeed ZeRO engine (stage 1, 2 or 3); φ replicated.

    The backbone's ``model`` is the engine while training (its forwards run the ZeRO hooks); the
    plain module stays reachable through :meth:`unwrap` for checkpoints. DeepSpeed averages θ's
    gradients over processes, so the loss is scaled by W and φ's summed gradients are divided by W.
    With ``--max-grad-norm``, DeepSpeed clips θ by θ's norm and cogrpo clips φ by φ's (in joint mode
    one process clips both by their joint norm instead).
    """

    def __init__(
        self, ctx: DistContext, config: TrainConfig, backbone: Backbone, model_optimizer: torch.optim.Optimizer | None
    ) -> None:
        super().__init__(ctx)
        self.loss_scale = float(ctx.world_size)
        self.zero = config.zero
        self.module = backbone.model
        self.model_optimizer = model_optimizer
        self.engine = None
        if model_optimizer is None:  # θ is never trained (schedule-only): it stays replicated and frozen
            return
        import deepspeed

        training = self.module.training
        self.engine, *_ = deepspeed.initialize(
            model=self.module,
            optimizer=model_optimizer,
            config=deepspeed_config(config, ctx.world_size),
            dist_init_required=False,
        )
        self.module.train(training)
        backbone.model = self.engine

    def layout(self) -> dict[str, Any]:
        return {"zero": self.zero}

    def backward(self, loss: torch.Tensor, trains_model: bool) -> None:
        if trains_model and self.engine is not None:
            self.engine.backward(loss * self.loss_scale, scale_wrt_gas=False)
        else:
            (loss * self.loss_scale).backward()

    def step(self, optimizers, params, max_grad_norm):
        replicated = [opt for opt in optimizers if opt is not self.model_optimizer]
        replicated_params = [p for opt in replicated for group in opt.param_groups for p in group["params"]]
        norm = None
        if replicated:
            all_reduce_gradients(self.ctx, replicated_params, divide_by=self.loss_scale)
            norm = UpdateSync.step(self, replicated, replicated_params, max_grad_norm)
        if self.engine is not None and any(opt is self.model_optimizer for opt in optimizers):
            self.engine.step()  # reduces (ZeRO-1) or finalises (ZeRO-2/3) θ's gradients, clips, steps, clears
            if max_grad_norm is not None:
                model_norm = float(self.engine.get_global_grad_norm() or 0.0)
                norm = model_norm if norm is None else (norm**2 + model_norm**2) ** 0.5
        return norm

    def unwrap(self, backbone: Backbone) -> nn.Module:
        return self.module

    def trainable_state(self, module: nn.Module) -> dict[str, torch.Tensor] | None:
        if self.zero < 3 or self.engine is None:
            return super().trainable_state(module)
        return gather_zero3_state(self.ctx, module)

    def release(self, backbone: Backbone, rebuild: Callable[[], Backbone] | None = None) -> Backbone | None:
        backbone.model = self.module
        if self.zero < 3 or self.engine is None:
            return backbone
        if rebuild is None:
            return None
        state = gather_zero3_state(self.ctx, self.module)  # collective: every process
        if not self.ctx.is_main:
            return None
        fresh = rebuild()
        ckpt.load_module_state(fresh.model, state, "model")
        return fresh

    def checkpointed(self, optimizers):
        return {k: v for k, v in optimizers.items() if v is not self.model_optimizer}

    def write_sharded(self, tmp: Path) -> None:
        if self.engine is None:
            return
        self.engine.save_checkpoint(str(tmp), tag=DEEPSPEED_TAG, save_latest=False)
        self.ctx.barrier()
        if self.ctx.is_main:  # DeepSpeed's recovery scripts: model.safetensors already holds the full θ
            for script in ("zero_to_fp32.py", "zero_to_torch.py"):
                (tmp / script).unlink(missing_ok=True)

    def load_sharded(self, loaded: ckpt.LoadedCheckpoint) -> None:
        if self.engine is None:
            return
        if not (loaded.path / DEEPSPEED_TAG).is_dir():
            raise CheckpointError(
                f"checkpoint {loaded.path} has no {DEEPSPEED_TAG}/ directory (the sharded optimizer state)"
            )
        path, _ = self.engine.load_checkpoint(
            str(loaded.path),
            tag=DEEPSPEED_TAG,
            load_module_strict=True,
            load_optimizer_states=True,
            load_lr_scheduler_states=False,
        )
        if path is None:
            raise CheckpointError(f"DeepSpeed could not load {loaded.path / DEEPSPEED_TAG}")


def deepspeed_config(config: TrainConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config cogrpo uses (``--deepspeed-config FILE`` entries override it).

    Batch sizes are bookkeeping only: cogrpo sizes its own micro-batches and calls ``step()`` once
    per optimizer step. No ``"optimizer"`` entry: the torch optimizer is passed in (DeepSpeed's own
    would compile ``fused_adam`` first).
    """
    values: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": world_size,
        "managed_gradient_accumulation": False,
        "gradient_clipping": float(config.max_grad_norm or 0.0),
        "zero_optimization": {"stage": config.zero},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    if config.deepspeed_config:
        path = Path(config.deepspeed_config)
        if not path.is_file():
            raise ConfigError(f"--deepspeed-config file not found: {path}")
        try:
            extra = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--deepspeed-config {path} is not valid JSON: {exc}") from exc
        owned = sorted(set(extra) & DEEPSPEED_OWNED_KEYS)
        if owned:
            raise ConfigError(
                f"--deepspeed-config must not set {', '.join(owned)}: cogrpo sets them (its own torch optimizer, "
                "batching and accumulation; --max-grad-norm for clipping; --precision bf16 for autocast)"
            )
        zero = {**values["zero_optimization"], **extra.pop("zero_optimization", {})}
        if zero["stage"] != config.zero:
            raise ConfigError(
                f"--deepspeed-config sets ZeRO stage {zero['stage']} but --zero is {config.zero}; "
                "set the stage with --zero only"
            )
        values.update(extra)
        values["zero_optimization"] = zero
    return values


def gather_zero3_state(ctx: DistContext, module: nn.Module) -> dict[str, torch.Tensor] | None:
    """Full trainable parameters of a ZeRO-3 module, gathered one at a time (every process takes part)."""
    import deepspeed

    out: dict[str, torch.Tensor] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            if ctx.is_main:
                out[name] = param.detach().cpu().clone().contiguous()
    return out if ctx.is_main else None


def make_sync(
    ctx: DistContext, config: TrainConfig, backbone: Backbone, optimizers: dict[str, torch.optim.Optimizer]
) -> UpdateSync:
    """The gradient synchronisation of ``config.distributed`` (DeepSpeed: θ becomes a ZeRO engine)."""
    if ctx.mode == "ddp":
        return AllReduceSync(ctx)
    if ctx.mode == "deepspeed":
        return DeepSpeedSync(ctx, config, backbone, optimizers.get("model"))
    return UpdateSync(ctx)


def check_resumable(loaded: ckpt.LoadedCheckpoint, config: TrainConfig, ctx: DistContext) -> None:
    """A DeepSpeed checkpoint holds θ's optimizer state in one shard per process: resume it with the
    same number of processes and ZeRO stage (DDP and one-process checkpoints resume on any number)."""
    saved = loaded.state.extra.get("distributed", {})
    if config.distributed != "deepspeed" or saved.get("mode") != "deepspeed":
        return
    if (saved.get("world_size"), saved.get("zero")) != (ctx.world_size, config.zero):
        world = saved.get("world_size")
        raise CheckpointError(
            f"checkpoint {loaded.path} was written by {world} process(es) (deepspeed, ZeRO {saved.get('zero')}); "
            f"resume it with the same launch (e.g. torchrun --nproc_per_node {world})"
        )


def checkpointed_optimizers(
    config: TrainConfig, optimizers: dict[str, torch.optim.Optimizer]
) -> dict[str, torch.optim.Optimizer]:
    """The optimizers restored from cogrpo's own checkpoint files (θ's under DeepSpeed is in ``deepspeed/``)."""
    if config.distributed == "deepspeed":
        return {k: v for k, v in optimizers.items() if k != "model"}
    return optimizers
