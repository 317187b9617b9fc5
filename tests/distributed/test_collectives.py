"""The distributed plumbing in 2 real gloo processes (no DeepSpeed): group start-up, exact group
statistics with a group split across ranks, gradient sums, gathering a rollout, metric reduction,
and the guards that turn a diverged or misconfigured launch into one error on every rank."""

from __future__ import annotations

import dataclasses
import os
import socket
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from cogrpo.config import TrainConfig
from cogrpo.distributed import AllReduceSync, UpdateSync, all_reduce_gradients, gather_rollout, start
from cogrpo.errors import CogrpoError, ConfigError
from cogrpo.grpo import group_advantages
from cogrpo.metrics import Accumulator
from cogrpo.sampler import Rollout

pytestmark = pytest.mark.distributed

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def global_rollout(batch: int, steps: int = 3, tokens: int = 4) -> Rollout:
    """A rollout whose every entry encodes its trajectory index (so the order is checkable)."""
    b = torch.arange(batch)
    return Rollout(
        states=(b[None, :, None] * 100 + torch.arange(tokens)[None, None, :]).expand(steps + 1, batch, tokens).clone(),
        actions=b[None, :, None].float().expand(steps, batch, 2).clone(),
        schedule=b[None, :, None].float().expand(steps, batch, 4).clone() / 10,
        model_logp=-b[None, :].float().expand(steps, batch).clone(),
        schedule_logp=b[None, :].float().expand(steps, batch).clone() / 7,
        features=None,
        mask_token_id=16,
    )


def _checks(rank: int, ports: tuple[int, int], errors: Path) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    try:
        config = TrainConfig(
            distributed="ddp",
            device="cpu",
            model_batch_size=12,
            model_group_size=4,
            model_micro_batch=4,
            schedule_batch_size=8,
            schedule_micro_batch=8,
        )
        os.environ["MASTER_PORT"] = str(ports[0])
        with start(config) as ctx:
            assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_main) == (rank, WORLD, "gloo", rank == 0)
            assert torch.distributed.is_initialized()

            # -- advantages: trajectories 4..7 (group 1) straddle the ranks -------------------------
            scores = torch.rand(12, 2, generator=torch.Generator().manual_seed(0))  # the global batch
            weights = torch.tensor([0.7, 0.3])
            mine = ctx.shard(12)
            assert (mine.start, mine.stop) == ((0, 6) if rank == 0 else (6, 12))
            gathered = ctx.all_gather_cat(scores[mine])
            assert torch.equal(gathered, scores)
            want = group_advantages(scores, weights, 4)
            got = group_advantages(gathered, weights, 4)
            assert torch.equal(got.advantages, want.advantages) and torch.equal(got.per_reward, want.per_reward)
            # negative control: normalising the straddling group within each rank's half is wrong
            half = slice(4, 6) if rank == 0 else slice(6, 8)
            assert not torch.allclose(group_advantages(scores[half], weights, 2).advantages, want.advantages[half])

            # -- gradients: summed; missing on one rank = zero there; missing everywhere stays None ---
            a, b, c = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))
            a.grad = torch.full((3,), float(rank + 1))
            b.grad = torch.ones(2) if rank == 0 else None
            all_reduce_gradients(ctx, [a, b, c])
            assert torch.equal(a.grad, torch.full((3,), 3.0)) and torch.equal(b.grad, torch.ones(2)) and c.grad is None
            a.grad = torch.full((3,), float(rank + 1))
            all_reduce_gradients(ctx, [a], divide_by=2.0)
            assert torch.equal(a.grad, torch.full((3,), 1.5))

            # -- each rank runs its half of every global micro-batch; together: the micro-batch ----
            sync = AllReduceSync(ctx)
            mb = torch.tensor([5, 2, 9, 7, 11, 0])
            piece = sync.shard(mb)
            assert len(piece) == 3 and torch.equal(ctx.all_gather_cat(piece), mb)

            # -- the recorded rollout and prompt embeddings, gathered in global order --------------
            full = global_rollout(6)
            local = full.select(torch.arange(3) + 3 * rank)
            embeds = {"ids": torch.arange(3)[:, None] + 3 * rank, "keep": (torch.arange(3)[:, None] + rank) % 2 == 0}
            traj, emb = gather_rollout(ctx, local, embeds)
            for f in ("states", "actions", "schedule", "model_logp", "schedule_logp"):
                assert torch.equal(getattr(traj, f), getattr(full, f)), f
            assert traj.features is None and traj.mask_token_id == 16
            assert torch.equal(emb["ids"], torch.arange(6)[:, None])
            assert emb["keep"].dtype == torch.bool and emb["keep"][:, 0].tolist() == [
                True,
                False,
                True,
                False,
                True,
                False,
            ]

            # -- update statistics: weighted by every rank's trajectories; the ratio check: max -----
            acc = Accumulator()
            acc.add("loss/pg", float(rank + 1), rank + 1)  # rank 0: 1 × 1.0, rank 1: 2 × 2.0
            assert sync.means(acc) == pytest.approx({"loss/pg": 5 / 3})
            assert sync.max(0.5 * rank) == 0.5
            assert ctx.mean({"monitor/saturation": float(rank)}) == {"monitor/saturation": 0.5}

            # -- identical replicas at the start ---------------------------------------------------
            layer = nn.Linear(2, 2)
            with torch.no_grad():
                layer.weight.fill_(rank)
            ctx.broadcast_parameters(layer)
            assert torch.equal(layer.weight, torch.zeros(2, 2))

            # -- rank 0 alone (evaluation), its result or error everywhere -------------------------
            assert ctx.on_main(lambda: f"from rank {ctx.rank}") == "from rank 0"

            def fail() -> None:
                raise ConfigError("no such benchmark")

            with pytest.raises(CogrpoError, match="no such benchmark"):
                ctx.on_main(fail)

            # -- a diverged process: one error on every rank instead of a hang ---------------------
            ctx.check_lockstep(0, torch.Generator().manual_seed(0))
            with pytest.raises(CogrpoError, match="out of step"):
                ctx.check_lockstep(1, torch.Generator().manual_seed(rank))
        assert not torch.distributed.is_initialized(), "the context ends the group it started"

        # -- ranks launched with different options fail together ------------------------------------
        os.environ["MASTER_PORT"] = str(ports[1])
        with pytest.raises(ConfigError, match="different config"):
            with start(dataclasses.replace(config, seed=rank)):
                pass
        assert not torch.distributed.is_initialized()
    except BaseException:
        (errors / f"rank{rank}.txt").write_text(traceback.format_exc())
        raise


def test_collectives_in_two_gloo_processes(tmp_path) -> None:
    errors = tmp_path / "errors"
    errors.mkdir()
    try:
        mp.spawn(_checks, args=((free_port(), free_port()), errors), nprocs=WORLD, join=True)
    except Exception:
        details = "\n".join(p.read_text() for p in sorted(errors.glob("rank*.txt")))
        raise AssertionError(details or "a spawned rank failed") from None


def test_single_process_sync_is_plain_backward_and_step() -> None:
    """Without a process group every helper is the identity: the reference behaviour."""
    sync = UpdateSync()
    mb = torch.tensor([3, 1, 2])
    assert sync.shard(mb) is mb
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.SGD([w], lr=0.5)
    sync.backward((w * torch.tensor([3.0, 4.0])).sum(), trains_model=True)
    norm = sync.step([opt], [w], max_grad_norm=None)
    assert norm is None and w.grad is None
    assert torch.equal(w.detach(), torch.tensor([1.0 - 1.5, -2.0 - 2.0]))
    acc = Accumulator()
    acc.add("x", 2.0, 3)
    assert sync.means(acc) == {"x": 2.0} and sync.max(0.25) == 0.25
