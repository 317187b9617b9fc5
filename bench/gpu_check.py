"""GPU check for the Meissonic backbone: generation throughput and Co-GRPO iterations in bf16.

Started by ``bench/gpu_check.sh`` (which puts the repo's packages and carried wheels on the path).

``--tiny``: a Meissonic-shaped random model (2D RoPE, joint + single blocks, 2x down/up-sampling,
codebook 8192) on a ``--grid`` token canvas. ``--weights DIR``: the released model from a local
copy of MeissonFlow/Meissonic, generating with the reference settings (1024 px, 64 steps, CFG 9,
the reference negative prompt) and saving PNGs. Both then run ``--iterations`` Co-GRPO
iterations (rollout with the paper head, brightness reward, model phase replay + backward step by
step, schedule phase) under bf16 autocast with gradient checkpointing, printing time per
iteration, peak memory and the replay ratio check. A JSON summary goes to ``$OUT/gpu_check.json``
when ``OUT`` is set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

REFERENCE_PROMPTS = [
    "Two actors are posing for a pictur with one wearing a black and white face paint.",
    "A large body of water with a rock in the middle and mountains in the background.",
    "A white and blue coffee mug with a picture of a man on it.",
    "A statue of a man with a crown on his head.",
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def tiny_backbone(args, device: torch.device, **options):
    """Meissonic-shaped random components (no tokenizer download: a byte-level CLIP vocabulary)."""
    from cogrpo_meissonic.backbone import MeissonicBackbone
    from cogrpo_meissonic.testing import tiny_clip_tokenizer, tiny_meissonic_transformer, tiny_text_encoder, tiny_vqvae

    head_dim = 64
    heads = args.hidden // head_dim
    config = {
        "num_layers": args.layers,
        "num_single_layers": 2 * args.layers,
        "attention_head_dim": head_dim,
        "num_attention_heads": heads,
        "joint_attention_dim": args.hidden,
        "pooled_projection_dim": args.hidden,
        "axes_dims_rope": [8, 28, 28],
        "vocab_size": 8256,
        "codebook_size": 8192,
        "downsample": True,
        "upsample": True,
    }
    transformer = tiny_meissonic_transformer(config, seed=0)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = tiny_text_encoder(args.hidden, args.hidden, len(tokenizer), seed=0)
    vqvae = tiny_vqvae(8192, seed=0, latent_channels=8, block_out_channels=(8,) * 5)  # 16 px per token
    return MeissonicBackbone(
        transformer, vqvae, text_encoder, tokenizer, device=device, resolution=args.grid * 16, **options
    )


def real_backbone(args, device: torch.device, **options):
    from cogrpo_meissonic.backbone import REFERENCE_NEGATIVE_PROMPT, MeissonicBackbone

    options.setdefault("negative_prompt", REFERENCE_NEGATIVE_PROMPT)
    return MeissonicBackbone.from_pretrained(
        args.weights,
        device=device,
        text_encoder=args.text_encoder,
        resolution=args.resolution,
        local_files_only=True,
        **options,
    )


def check_generation(backbone, args, device: torch.device, out_dir: Path | None) -> dict:
    prompts = (REFERENCE_PROMPTS * args.batch)[: args.batch]
    with torch.no_grad():
        backbone.generate(prompts[:1], num_steps=2, generator=torch.Generator(device).manual_seed(0))  # warm-up
        reset_peak(device)
        sync(device)
        start = time.perf_counter()
        for r in range(args.repeats):
            images = backbone.generate(prompts, num_steps=args.steps, generator=torch.Generator(device).manual_seed(r))
        sync(device)
        seconds = (time.perf_counter() - start) / args.repeats
    result = {
        "images_per_s": args.batch / seconds,
        "s_per_batch": seconds,
        "peak_gib": peak_gib(device),
        "image_shape": list(images.shape),
        "image_mean": images.float().mean().item(),
    }
    if out_dir is not None:
        from PIL import Image

        for i, img in enumerate(images):
            array = (img.permute(1, 2, 0).float().cpu().numpy() * 255).round().astype("uint8")
            Image.fromarray(array).save(out_dir / f"generate_{i}.png")
    return result


def check_training(backbone, args, device: torch.device) -> dict:
    from cogrpo.grpo import clipped_surrogate, group_advantages
    from cogrpo.sampler import replay_model_log_prob, rollout
    from cogrpo.schedule import ScheduleActor
    from cogrpo.testing import BrightnessReward
    from cogrpo_schedulers.paper_head import PaperHead

    group = args.group
    prompts = [p for p in REFERENCE_PROMPTS[: max(1, args.batch // group)] for _ in range(group)]
    head = PaperHead(feature_dim=backbone.feature_dim, feature_grid=backbone.feature_grid, components=("r", "cfg")).to(
        device
    )
    actor = ScheduleActor(backbone.default_schedule(), head, sigma=0.1)
    model_opt = torch.optim.AdamW(backbone.trainable_parameters(), lr=1e-5, weight_decay=0.02, betas=(0.9, 0.95))
    head_opt = torch.optim.AdamW(head.parameters(), lr=1e-4, weight_decay=0.0, betas=(0.9, 0.95))
    reward = BrightnessReward(device=device)
    times, ratio_err, rollout_s, update_s = [], 0.0, [], []
    reset_peak(device)
    for it in range(args.iterations):
        sync(device)
        start = time.perf_counter()
        prompt = backbone.encode_prompts(prompts)
        gens = [torch.Generator(device).manual_seed(1000 * it + i) for i in range(len(prompts))]
        traj = rollout(
            backbone,
            prompt,
            num_steps=args.steps,
            actor=actor,
            action_mode="sample",
            generators=gens,
            keep_features=True,
        )
        scores = reward(backbone.decode(traj.tokens), prompts).scores
        adv = group_advantages(scores[:, None], torch.ones(1), group).advantages
        sync(device)
        mid = time.perf_counter()
        model_opt.zero_grad(set_to_none=True)
        for k in range(args.steps):  # step by step: peak memory does not grow with T
            logp, _, _ = replay_model_log_prob(backbone, traj, prompt, k)
            logratio = logp - traj.model_logp[k]
            ratio_err = max(ratio_err, (logratio.detach().exp() - 1).abs().max().item())
            pg, _ = clipped_surrogate(logratio, adv, 0.2, 0.28)
            (pg.mean() / args.steps).backward()
        model_opt.step()
        head_opt.zero_grad(set_to_none=True)
        for k in range(args.steps):
            logp = actor.log_prob(traj.features[k], k, args.steps, traj.actions[k]).cpu()
            pg, _ = clipped_surrogate(logp - traj.schedule_logp[k], adv, 0.2, 0.28)
            (pg.mean() / args.steps).backward()
        head_opt.step()
        sync(device)
        end = time.perf_counter()
        times.append(end - start)
        rollout_s.append(mid - start)
        update_s.append(end - mid)
        print(
            f"  iteration {it}: {end - start:.2f} s (rollout {mid - start:.2f} s, updates {end - mid:.2f} s)",
            flush=True,
        )
    steady = times[1:] or times
    return {
        "s_per_iteration": sum(steady) / len(steady),
        "rollout_s": sum(rollout_s[1:] or rollout_s) / len(steady),
        "update_s": sum(update_s[1:] or update_s) / len(steady),
        "trajectories": len(prompts),
        "max_first_replay_ratio_error": ratio_err,
        "peak_gib": peak_gib(device),
        "trainable_params": sum(p.numel() for p in backbone.trainable_parameters()),
        "head_params": sum(p.numel() for p in head.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="random Meissonic-shaped model (no weights)")
    parser.add_argument("--weights", help="local copy of MeissonFlow/Meissonic")
    parser.add_argument("--text-encoder", default=None, help="CLIP text encoder dir (default: the checkpoint's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hidden", type=int, default=512, help="tiny: transformer width (multiple of 64)")
    parser.add_argument("--layers", type=int, default=4, help="tiny: joint blocks (single blocks: twice as many)")
    parser.add_argument("--grid", type=int, default=32, help="tiny: token grid side (even)")
    parser.add_argument("--resolution", type=int, default=1024, help="real weights: image side in pixels")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default 64 real, 16 tiny)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--group", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--lora-rank", type=int, default=0)
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    parser.add_argument("--no-checkpointing", action="store_true")
    args = parser.parse_args()
    if not args.tiny and not args.weights:
        parser.error("pass --tiny or --weights DIR")
    args.steps = args.steps or (16 if args.tiny else 64)
    device = torch.device(args.device)
    out_env = os.environ.get("OUT")
    out_dir = Path(out_env) if out_env else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = True

    import diffusers
    import transformers

    summary: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
        },
        "args": vars(args),
    }
    print(json.dumps({k: summary[k] for k in ("device", "versions")}), flush=True)
    build = tiny_backbone if args.tiny else real_backbone

    # 1. Generation as released (reference settings with --weights; fp32 unless bf16 is asked for).
    gen_bf16 = args.tiny and not args.fp32
    backbone = build(args, device, bf16=gen_bf16)
    summary["model_params"] = sum(p.numel() for p in backbone.model.parameters())
    summary["feature"] = {"dim": backbone.feature_dim, "grid": list(backbone.feature_grid)}
    summary["generation"] = check_generation(backbone, args, device, out_dir)
    summary["generation"]["bf16"] = gen_bf16
    print("generation:", json.dumps(summary["generation"]), flush=True)
    del backbone
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # 2. Co-GRPO iterations in bf16 autocast with gradient checkpointing.
    backbone = build(
        args, device, bf16=not args.fp32, gradient_checkpointing=not args.no_checkpointing, lora_rank=args.lora_rank
    )
    summary["training"] = check_training(backbone, args, device)
    print("training:", json.dumps(summary["training"]), flush=True)
    if summary["training"]["max_first_replay_ratio_error"] > 1e-3:
        print("WARNING: replay ratio differs from 1 by more than 1e-3 (non-deterministic kernels?)")
    if out_dir is not None:
        (out_dir / "gpu_check.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
