"""Tiny random-weight Meissonic / aMUSEd components, built offline (tests, benchmarks, GPU check).

Every component is seeded before it is built (diffusers' ``get_dummy_components`` style), so the
same call gives the same weights. The CLIP tokenizer is written to a directory from the byte
alphabet alone (no merges: one token per character), or from open_clip's bundled BPE
(``full_vocab=True``, the real CLIP ids); no hub access either way.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from cogrpo_meissonic.transformer import MeissonicTransformer2DModel

#: The fixture's tiny configuration (``tests/fixtures/meissonic/tiny_down``): inner width 16,
#: text width 24, pooled 16, codebook 32, mask id 39.
TINY_MEISSONIC_CONFIG: dict[str, Any] = {
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 8,
    "num_attention_heads": 2,
    "joint_attention_dim": 24,
    "pooled_projection_dim": 16,
    "axes_dims_rope": [2, 2, 4],
    "vocab_size": 40,
    "codebook_size": 32,
    "downsample": True,
    "upsample": True,
}

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable character table."""
    keep = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, (chr(c) for c in chars), strict=True))


def write_clip_tokenizer(directory: str | Path, *, full_vocab: bool = False) -> Path:
    """Write ``vocab.json`` + ``merges.txt`` for a CLIP BPE tokenizer into ``directory``.

    ``full_vocab=False``: 514 ids (256 characters, their word-final forms, BOS, EOS; no merges).
    ``full_vocab=True``: CLIP's 49408-id vocabulary from open_clip's bundled ``bpe_simple_vocab``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    alphabet = list(_bytes_to_unicode().values())
    merges: list[tuple[str, str]] = []
    if full_vocab:
        import open_clip.tokenizer as oct

        bpe_path = Path(oct.__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
        lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [BOS, EOS]
    (directory / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return directory


def tiny_clip_tokenizer(directory: str | Path | None = None, *, full_vocab: bool = False):
    """A ``CLIPTokenizer`` (77 ids per prompt) written and loaded offline."""
    from transformers import CLIPTokenizer

    if directory is None:
        directory = Path(tempfile.gettempdir()) / f"cogrpo-clip-tokenizer-{'full' if full_vocab else 'bytes'}"
    directory = Path(directory)
    if not (directory / "vocab.json").exists():
        write_clip_tokenizer(directory, full_vocab=full_vocab)
    return CLIPTokenizer.from_pretrained(str(directory), model_max_length=77)


def tiny_text_encoder(hidden_size: int, projection_dim: int, vocab_size: int, *, seed: int = 0, layers: int = 2):
    """A random ``CLIPTextModelWithProjection`` whose EOS id is the tokenizer's last id."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        projection_dim=projection_dim,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(config).eval()


def tiny_vqvae(codebook_size: int, *, seed: int = 0, latent_channels: int = 4, block_out_channels=(8, 8)):
    """A random ``VQModel`` with codebook lookup (``lookup_from_codebook=True``, as aMUSEd's);
    ``2 ** (len(block_out_channels) - 1)`` pixels per token side."""
    from diffusers import VQModel

    n = len(block_out_channels)
    torch.manual_seed(seed)
    return VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=1,
        latent_channels=latent_channels,
        num_vq_embeddings=codebook_size,
        norm_num_groups=min(8, min(block_out_channels)),
        mid_block_add_attention=False,
        lookup_from_codebook=True,
    ).eval()


def tiny_meissonic_transformer(config: dict[str, Any] | None = None, *, seed: int = 0) -> MeissonicTransformer2DModel:
    """Random-weight transformer (default: the fixture's tiny config). Zero-initialised-looking
    layers are not an issue: PyTorch's default init is used for every tensor."""
    torch.manual_seed(seed)
    return MeissonicTransformer2DModel(**(config or TINY_MEISSONIC_CONFIG)).eval()


def tiny_meissonic_backbone(
    *,
    config: dict[str, Any] | None = None,
    grid: int = 8,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    tokenizer_dir: str | Path | None = None,
    **options: Any,
):
    """A :class:`~cogrpo_meissonic.backbone.MeissonicBackbone` on tiny random components with a
    ``grid x grid`` token canvas (2 pixels per token side)."""
    from cogrpo_meissonic.backbone import MeissonicBackbone

    config = {**TINY_MEISSONIC_CONFIG, **(config or {})}
    transformer = tiny_meissonic_transformer(config, seed=seed)
    tokenizer = tiny_clip_tokenizer(tokenizer_dir)
    text_encoder = tiny_text_encoder(
        config["joint_attention_dim"], config["pooled_projection_dim"], len(tokenizer), seed=seed
    )
    vqvae = tiny_vqvae(config["codebook_size"], seed=seed)
    resolution = grid * 2
    return MeissonicBackbone(
        transformer, vqvae, text_encoder, tokenizer, device=device, dtype=dtype, resolution=resolution, **options
    )


def tiny_amused_components(
    *,
    hidden_size: int = 8,
    layers: int = 1,
    heads: int = 1,
    codebook_size: int = 8,
    grid: int = 4,
    downsample: bool = True,
    res_blocks: int = 1,
    seed: int = 0,
    tokenizer_dir: str | Path | None = None,
) -> dict[str, Any]:
    """``AmusedPipeline`` components in diffusers' ``get_dummy_components`` style (hidden 8, one
    layer, 4x4 tokens by default; ``vocab_size = codebook + 1`` so the mask id is ``codebook``)."""
    from diffusers import AmusedScheduler, UVit2DModel

    torch.manual_seed(seed)
    transformer = UVit2DModel(
        hidden_size=hidden_size,
        use_bias=False,
        hidden_dropout=0.0,
        cond_embed_dim=hidden_size,
        micro_cond_encode_dim=2,
        micro_cond_embed_dim=10,
        encoder_hidden_size=hidden_size,
        vocab_size=codebook_size + 1,
        codebook_size=codebook_size,
        in_channels=hidden_size,
        block_out_channels=hidden_size,
        num_res_blocks=res_blocks,
        downsample=downsample,
        upsample=downsample,
        block_num_heads=1,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        attention_dropout=0.0,
        intermediate_size=4 * hidden_size,
        layer_norm_eps=1e-12,
        ln_elementwise_affine=True,
        sample_size=grid,
    ).eval()
    vqvae = tiny_vqvae(codebook_size, seed=seed, latent_channels=hidden_size, block_out_channels=(8, 8))
    tokenizer = tiny_clip_tokenizer(tokenizer_dir)
    text_encoder = tiny_text_encoder(hidden_size, hidden_size, len(tokenizer), seed=seed)
    torch.manual_seed(seed)
    scheduler = AmusedScheduler(mask_token_id=codebook_size)
    return {
        "transformer": transformer,
        "vqvae": vqvae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def tiny_amused_backbone(*, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, **kw: Any):
    """An :class:`~cogrpo_meissonic.amused.AmusedBackbone` on :func:`tiny_amused_components`;
    backbone options (``bf16``, ``lora_rank`` ...) are passed through."""
    from cogrpo_meissonic.amused import AmusedBackbone

    component_keys = {
        "hidden_size",
        "layers",
        "heads",
        "codebook_size",
        "grid",
        "downsample",
        "res_blocks",
        "seed",
        "tokenizer_dir",
    }
    parts = tiny_amused_components(**{k: kw.pop(k) for k in list(kw) if k in component_keys})
    scheduler = parts.pop("scheduler")
    return AmusedBackbone(
        parts["transformer"],
        parts["vqvae"],
        parts["text_encoder"],
        parts["tokenizer"],
        device=device,
        dtype=dtype,
        mask_token_id=scheduler.config.mask_token_id,
        **kw,
    )
