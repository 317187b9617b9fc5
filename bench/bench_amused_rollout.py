"""cogrpo's recorded rollout (with a learned schedule head) vs diffusers' ``AmusedPipeline``.

Same random UVit2DModel (default: hidden 256, 4 layers, 16x16 tokens, codebook 8192), same
prompts, steps, batch and CFG. The pipeline runs with ``output_type="latent"`` (no VQ decode); the
cogrpo side is ``encode_prompts`` + ``cogrpo.sampler.rollout`` with the paper head sampling
``(r, cfg)`` and every per-step record kept (features included).

Two measurements, both in interleaved rounds (A, B, C, A, B, C, ...) with the minimum kept:

* end to end, wall and process-CPU time;
* decomposed: the transformer forward alone (identical in both: same call, same batch), and
  each loop with the transformer replaced by its cached output (everything *but* the network:
  prompt encoding, CFG mix, scheduler / sampler, head, records). The ratio is then
  ``(T·F + S_cogrpo) / (T·F + S_pipeline)``. On a shared machine this is far steadier than the
  end-to-end ratio, whose noise exceeds the 5% being measured. With several threads, process CPU
  time also counts OpenMP spin-waiting (it inflates phases made of many small ops): use
  ``--threads 1`` for the steadiest CPU-time ratio.

``--profile`` splits the sampler-only time by stage.

    .venv/bin/python bench/bench_amused_rollout.py [--codebook 8192] [--batch 4] [--steps 12] [--profile]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager

import torch

from cogrpo import sampler
from cogrpo.schedule import ScheduleActor
from cogrpo_meissonic.amused import AmusedBackbone
from cogrpo_meissonic.testing import tiny_amused_components

PROMPTS = ["a red bicycle leaning on a wall", "two cats on a sofa", "a lighthouse at night", "a bowl of fruit"]
LABELS = {
    "pipe": "AmusedPipeline (latent)",
    "one": "cogrpo rollout, one generator",
    "per": "cogrpo rollout, per-sample generators",
}


def build(args):
    from diffusers import AmusedPipeline

    parts = tiny_amused_components(
        hidden_size=args.hidden,
        layers=args.layers,
        heads=args.heads,
        codebook_size=args.codebook,
        grid=args.grid,
        downsample=False,
        res_blocks=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = AmusedPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    backbone = AmusedBackbone(
        parts["transformer"],
        parts["vqvae"],
        parts["text_encoder"],
        parts["tokenizer"],
        mask_token_id=parts["scheduler"].config.mask_token_id,
        cfg_scale=args.cfg,
    )
    return pipe, backbone


def make_head(backbone):
    """The paper head if the schedulers package has it, else a stand-in of the same interface."""
    try:
        from cogrpo_schedulers.paper_head import PaperHead

        head = PaperHead(feature_dim=backbone.feature_dim, feature_grid=backbone.feature_grid, components=("r", "cfg"))
        return head, "paper-head"
    except ImportError:  # pragma: no cover - stand-in until paper_head exists

        class StandIn(torch.nn.Module):
            components = ("r", "cfg")

            def __init__(self, dim: int) -> None:
                super().__init__()
                self.net = torch.nn.Sequential(torch.nn.Linear(dim + 1, 64), torch.nn.SiLU(), torch.nn.Linear(64, 2))

            def forward(self, features, progress):
                return self.net(torch.cat([features.mean(dim=(2, 3)), progress[:, None]], dim=1))

        return StandIn(backbone.feature_dim), "stand-in MLP"


def timed_rounds(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, float]]:
    """Minimum wall and process-CPU time of each variant over interleaved rounds (one warm-up each)."""
    for fn in fns.values():
        fn()
    best = {name: {"wall": float("inf"), "cpu": float("inf")} for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            best[name]["wall"] = min(best[name]["wall"], time.perf_counter() - wall)
            best[name]["cpu"] = min(best[name]["cpu"], time.process_time() - cpu)
    return best


@contextmanager
def cached_transformer(model: torch.nn.Module, rows: int, grid: int, codebook: int):
    """Replace the UVit2D forward by its output for a fixed input (cost: one small RMSNorm, which
    also fires the backbone's feature hook)."""
    hidden = model.config.hidden_size
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, codebook, grid, grid, generator=g)
    states = torch.randn(rows, grid * grid, hidden, generator=g)

    def forward(*args, **kwargs):
        model.project_from_hidden_norm(states)
        return logits

    model.forward = forward
    try:
        yield
    finally:
        del model.forward


@contextmanager
def profile_sampler(backbone, actor):
    """Accumulate process CPU time per stage by wrapping the functions the rollout calls."""
    totals: dict[str, float] = defaultdict(float)
    patched = []

    def wrap(owner, name, label):
        original = getattr(owner, name)

        def inner(*a, **kw):
            start = time.process_time()
            result = original(*a, **kw)
            totals[label] += time.process_time() - start
            return result

        setattr(owner, name, inner)
        patched.append((owner, name, original))

    wrap(sampler, "guided_logits", "guided_logits (CFG mix, / tau_s, fp32)")
    wrap(sampler, "denoise_step", "denoise_step (softmax, multinomial, gumbel, sort)")
    wrap(sampler, "selected_log_probs", "selected_log_probs (gather + logsumexp)")
    wrap(backbone, "forward", "backbone forward (cached transformer)")
    wrap(backbone, "encode_prompts", "encode_prompts (CLIP)")
    wrap(actor, "act", "schedule head + Gaussian action")
    try:
        yield totals
    finally:
        for owner, name, original in patched:
            if isinstance(owner, (AmusedBackbone, ScheduleActor)):
                delattr(owner, name)  # back to the class attribute
            else:
                setattr(owner, name, original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--codebook", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--cfg", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3, help="end-to-end rounds")
    parser.add_argument("--sampler-repeats", type=int, default=7, help="rounds of the decomposed measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe, backbone = build(args)
    head, head_name = make_head(backbone)
    actor = ScheduleActor(backbone.default_schedule(), head, sigma=0.1)
    prompts = (PROMPTS * args.batch)[: args.batch]
    rows = 2 * args.batch if args.cfg > 1 else args.batch
    n_params = sum(p.numel() for p in backbone.model.parameters())
    print(
        f"UVit2D hidden {args.hidden}, {args.layers} layers, {args.grid}x{args.grid} tokens, codebook {args.codebook}"
        f" ({n_params / 1e6:.1f}M params); batch {args.batch}, {args.steps} steps, CFG {args.cfg}; "
        f"{torch.get_num_threads()} threads; head: {head_name}"
    )

    def run_pipeline():
        pipe(
            prompts,
            num_inference_steps=args.steps,
            guidance_scale=args.cfg,
            output_type="latent",
            generator=torch.Generator().manual_seed(0),
        )

    def run_cogrpo(per_sample: bool):
        def run():
            n = len(prompts)
            gens = (
                [torch.Generator().manual_seed(i) for i in range(n)] if per_sample else torch.Generator().manual_seed(0)
            )
            prompt = backbone.encode_prompts(prompts)
            sampler.rollout(
                backbone,
                prompt,
                num_steps=args.steps,
                actor=actor,
                action_mode="sample",
                generators=gens,
                keep_features=True,
            )

        return run

    variants = {"pipe": run_pipeline, "one": run_cogrpo(False), "per": run_cogrpo(True)}
    with torch.no_grad():
        if not args.skip_end_to_end:
            e2e = timed_rounds(variants, args.repeats)
            print(f"end to end (min of {args.repeats} interleaved rounds):")
            for key, label in LABELS.items():
                r = "" if key == "pipe" else f"  ratio cpu {e2e[key]['cpu'] / e2e['pipe']['cpu']:.3f}"
                r += "" if key == "pipe" else f", wall {e2e[key]['wall'] / e2e['pipe']['wall']:.3f}"
                print(f"  {label:38s} cpu {e2e[key]['cpu']:7.2f} s, wall {e2e[key]['wall']:7.2f} s{r}")

        grid = backbone.token_grid[0]
        ids = torch.full((rows, grid, grid), backbone.mask_token_id)
        prompt = backbone.encode_prompts(prompts)
        hidden = torch.cat([prompt["negative_encoder_hidden_states"], prompt["encoder_hidden_states"]])
        pooled = torch.cat([prompt["negative_pooled"], prompt["pooled"]])
        micro = torch.tensor([[32.0 * grid, 32.0 * grid, 0, 0, 6]]).expand(rows, -1)
        forward = timed_rounds(
            {
                "forward": lambda: backbone.model(
                    ids, micro_conds=micro, pooled_text_emb=pooled, encoder_hidden_states=hidden
                )
            },
            args.sampler_repeats,
        )["forward"]
        with cached_transformer(backbone.model, rows, grid, args.codebook):
            rest = timed_rounds(variants, args.sampler_repeats)
            totals = None
            if args.profile:
                with profile_sampler(backbone, actor) as totals:
                    for _ in range(args.sampler_repeats):
                        run_cogrpo(True)()
    for clock in ("cpu", "wall"):
        print(f"decomposed (min of {args.sampler_repeats} rounds, {'process CPU' if clock == 'cpu' else 'wall'} time):")
        print(f"  transformer forward F (same call in both)   : {forward[clock] * 1e3:8.1f} ms per step")
        base = args.steps * forward[clock] + rest["pipe"][clock]
        for key, label in LABELS.items():
            total = args.steps * forward[clock] + rest[key][clock]
            ratio = "" if key == "pipe" else f"   ratio {total / base:.3f}"
            print(f"  {label:38s}: outside the network {rest[key][clock] * 1e3:8.1f} ms, total {total:6.2f} s{ratio}")
    if totals is not None:
        print("cogrpo (per-sample generators) outside the network, CPU time per rollout:")
        for label, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
            print(f"  {label:55s} {seconds / args.sampler_repeats * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
