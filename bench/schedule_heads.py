"""Size and cost of the learned schedule heads next to their backbones (CPU, fp32).

    .venv/bin/python bench/schedule_heads.py [--threads 2] [--repeats 20]

Reports parameter counts, FLOPs (torch's FlopCounterMode) and wall time per head forward, for the
toy shapes (TinyBackbone d=128, 4 layers, 8x8 grid, as in SPEC §4) and for Meissonic's shapes
(D=1024 features on a 32x32 grid; backbone size from tests/fixtures/meissonic). The Meissonic
backbone FLOPs are an estimate (2 · parameters · tokens per sequence), not a measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from cogrpo.testing import TinyBackbone
from cogrpo_schedulers.mlp_head import MLPHead
from cogrpo_schedulers.paper_head import PaperHead

ROOT = Path(__file__).parents[1]
ALL = ("r", "tau_r", "tau_s", "cfg")


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def wall_ms(fn, repeats: int) -> float:
    """Median wall time of one call in ms (the machine may be shared: the median resists that)."""
    for _ in range(3):  # warm-up
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16, help="trajectories per step (CFG doubles the backbone's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b = args.batch

    # toy: one sampling step of the backbone (cond + null branch) vs one head forward
    bb = TinyBackbone(grid=(8, 8), dim=128, depth=4, heads=4, codebook_size=16)
    prompt = bb.encode_prompts(["a red circle"] * b)
    tokens = torch.full((b, 64), bb.mask_token_id)
    feats = bb.forward(tokens, prompt, 0, 16, True).features  # [B, 128, 8, 8]
    progress = torch.full((b,), 0.25)
    step = lambda: bb.forward(tokens, prompt, 0, 16, True)  # noqa: E731
    rows = []
    bb_flops, bb_ms = flops(step), wall_ms(step, args.repeats)
    rows.append(("toy backbone step (TinyBackbone d128 x4, 8x8, CFG)", params(bb.model), bb_flops, bb_ms, None))
    for head, options in ((PaperHead, {}), (PaperHead, {"hidden_dim": 32}), (MLPHead, {})):
        h = head(feature_dim=128, feature_grid=(8, 8), components=ALL, **options).eval()
        fwd = lambda h=h: h(feats, progress)  # noqa: E731
        f, ms = flops(fwd), wall_ms(fwd, args.repeats)
        label = f"toy {head.__name__} {options or ''}".rstrip()
        rows.append((label, params(h), f, ms, (params(h) / params(bb.model), f / bb_flops, ms / bb_ms)))

    # Meissonic shapes: head measured, backbone estimated from the released parameter count
    manifest = json.loads((ROOT / "tests/fixtures/meissonic/transformer_manifest.json").read_text())
    n_bb = manifest["num_parameters"]
    mb = 4
    m_feats = torch.randn(mb, 1024, 32, 32)
    m_progress = torch.full((mb,), 0.25)
    text_tokens = 77
    est_bb_flops = 2 * n_bb * (32 * 32 + text_tokens) * 2 * mb  # 2 FLOPs / param / token, CFG doubles
    rows.append((f"Meissonic backbone step (estimate, B={mb}, CFG)", n_bb, est_bb_flops, float("nan"), None))
    for head in (PaperHead, MLPHead):
        h = head(feature_dim=1024, feature_grid=(32, 32), components=ALL).eval()
        fwd = lambda h=h: h(m_feats, m_progress)  # noqa: E731
        f, ms = flops(fwd), wall_ms(fwd, max(3, args.repeats // 4))
        share = (params(h) / n_bb, f / est_bb_flops, None)
        rows.append((f"Meissonic {head.__name__} (B={mb})", params(h), f, ms, share))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, toy batch {b}")
    print(f"{'':58s} {'params':>13s} {'GFLOP':>10s} {'ms':>8s}   share of backbone (params / FLOPs / time)")
    for name, n, f, ms, share in rows:
        tail = "" if share is None else "   " + " / ".join("-" if s is None else f"{100 * s:.2f}%" for s in share)
        print(f"{name:58s} {n:13,d} {f / 1e9:10.4f} {ms:8.2f}{tail}")


if __name__ == "__main__":
    main()
