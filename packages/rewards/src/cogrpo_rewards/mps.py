"""MPS, Multi-dimensional Preference Score (Zhang et al., CVPR 2024; Kwai-Kolors/MPS), "overall" model.

Source: https://github.com/Kwai-Kolors/MPS. The released checkpoint ``MPS_overall_checkpoint.pth``
(Google Drive link in that README; no hub mirror) is ``torch.save`` of the *whole* training module
(classes ``trainer.models.clip_model.CLIPModel`` / ``XCLIPModel`` / ``Cross_model``, fp16), which
only loads by unpickling arbitrary code. cogrpo never does that on a default path: convert it once
with ``python -m cogrpo_rewards.mps convert MPS_overall_checkpoint.pth mps_overall.safetensors``
(a restricted unpickler that rebuilds tensors only and replaces every other class by an inert stub),
then pass ``--reward-opt mps.path=mps_overall.safetensors``. The converted file holds the module's
``state_dict()``: ``model.*`` (a transformers ``CLIPModel`` with the ViT-H-14 config of
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``) and ``cross_model.*`` (4 fusion layers, width 1024,
16 heads of 64, multi-query attention, rotary embeddings, SwiGLU feed-forwards).

Scoring, as the reference ``CLIPModel.forward`` and the README's ``infer_example``:

1. per-token projected text features of the prompt ``T [B, 77, D]`` (after the final layer norm)
   and of the fixed "overall" condition string ``C [77, D]``; the prompt's EOS feature ``e [B, D]``;
2. per prompt token ``i``: ``s_i = max_j <T_i, C_j>``, normalised by its maximum; tokens with
   ``s_i <= 0.01`` are masked out of the fusion's cross-attention;
3. the projected patch tokens of the image (before the vision post-layer-norm) ``V [B, 257, D]``
   attend to the unmasked prompt tokens through the fusion layers; the CLS output ``f [B, D]``;
4. ``score = logit_scale.exp() · cos(e, f)`` (≈ 100 · cos).

Known differences from the reference: (a) step 2's normaliser is each prompt's own maximum; the
reference divides by the maximum over the whole batch it is given (it is called with one prompt
at a time, where both agree; per-prompt normalisation keeps batching equal to one-by-one
scoring); (b) the reference casts images and the mask to fp16 (its checkpoint is fp16); here the
dtype is the reward's (fp32 on CPU by default). Not verified: the converted official weights
(unavailable offline here); the architecture is checked against the reference's parameter
names and shapes in the tests, and the forward against a transcription of the reference code.
Preprocessing: the 8-bit image through ``CLIPImageProcessorPil`` of the laion processor (as the
README's ``CLIPImageProcessor`` before transformers 5), prompts padded to 77 without attention mask.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import sys
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cogrpo.errors import CheckpointError, WeightsNotFoundError
from cogrpo.protocols import RewardOutput
from cogrpo.reward_utils import validate_reward_inputs
from cogrpo_rewards._images import to_pil
from cogrpo_rewards._weights import load_state_dict_file, resolve_file, resolve_folder

SOURCE_URL = "https://github.com/Kwai-Kolors/MPS (README: MPS_overall_checkpoint.pth)"
CLIP_REPO_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
#: The condition string of the released "overall" model (from the MPS README).
OVERALL_CONDITION = (
    "light, color, clarity, tone, style, ambiance, artistry, shape, face, hair, hands, limbs, structure, "
    "instance, texture, quantity, attributes, position, number, location, word, things."
)


# --------------------------------------------------------------------------------------------------
# The fusion model (parameter names as in the reference's Cross_model)
# --------------------------------------------------------------------------------------------------


class BiasFreeLayerNorm(nn.Module):
    """LayerNorm with a learned scale and a fixed zero bias (stored as a buffer, as in the reference)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_buffer("bias", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias)


class Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        return self.fn(x, *args) + x


class RotaryEmbedding(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, length: int, device: torch.device) -> torch.Tensor:  # -> [length, dim]
        positions = torch.arange(length, device=device, dtype=self.inv_freq.dtype)
        freqs = positions[:, None] * self.inv_freq[None, :]
        return torch.cat([freqs, freqs], dim=-1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def _apply_rotary(angles: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x * angles.cos() + _rotate_half(x) * angles.sin()


def _swiglu(x: torch.Tensor) -> torch.Tensor:
    x, gate = x.chunk(2, dim=-1)
    return F.silu(gate) * x


class SwiGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _swiglu(x)


class ParallelBlock(nn.Module):
    """Pre-norm self-attention (multi-query: one key/value head, rotary) + SwiGLU MLP in parallel."""

    def __init__(self, dim: int, dim_head: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        self.heads, self.dim_head, self.ff_inner = heads, dim_head, dim * ff_mult
        self.norm = BiasFreeLayerNorm(dim)
        self.rotary_emb = RotaryEmbedding(dim_head)
        self.fused_attn_ff_proj = nn.Linear(dim, heads * dim_head + 2 * dim_head + 2 * self.ff_inner, bias=False)
        self.attn_out = nn.Linear(heads * dim_head, dim, bias=False)
        self.ff_out = nn.Sequential(SwiGLU(), nn.Linear(self.ff_inner, dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, dim]
        b, n, _ = x.shape
        x = self.norm(x)
        sizes = (self.heads * self.dim_head, self.dim_head, self.dim_head, 2 * self.ff_inner)
        q, k, v, ff = self.fused_attn_ff_proj(x).split(sizes, dim=-1)
        q = q.view(b, n, self.heads, self.dim_head).transpose(1, 2)  # [B, h, N, d]
        angles = self.rotary_emb(n, x.device)  # [N, d]
        q, k = _apply_rotary(angles, q), _apply_rotary(angles, k)  # k: [B, N, d]
        sim = (q * self.dim_head**-0.5) @ k.unsqueeze(1).transpose(-1, -2)  # [B, h, N, N]
        attn = (sim - sim.amax(dim=-1, keepdim=True)).softmax(dim=-1)
        out = (attn @ v.unsqueeze(1)).transpose(1, 2).reshape(b, n, -1)  # [B, N, h*d]
        return self.attn_out(out) + self.ff_out(ff)


class CrossAttention(nn.Module):
    """Pre-norm multi-query cross-attention (one key/value head) with a parallel SwiGLU feed-forward."""

    def __init__(self, dim: int, dim_head: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.norm = BiasFreeLayerNorm(dim)
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)
        ff_inner = dim * ff_mult
        self.ff = nn.Sequential(
            nn.Linear(dim, 2 * ff_inner, bias=False), SwiGLU(), nn.Linear(ff_inner, dim, bias=False)
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x [B, N, dim], context [B, M, dim], mask [B, N, M] additive (0 or -inf)
        b, n, _ = x.shape
        x = self.norm(x)
        q = self.to_q(x).view(b, n, self.heads, self.dim_head).transpose(1, 2) * self.dim_head**-0.5
        k, v = self.to_kv(context).chunk(2, dim=-1)  # [B, M, d]
        sim = q @ k.unsqueeze(1).transpose(-1, -2) + mask.unsqueeze(1)  # [B, h, N, M]
        attn = (sim - sim.amax(dim=-1, keepdim=True)).softmax(dim=-1)
        out = (attn @ v.unsqueeze(1)).transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out) + self.ff(x)


class CrossModel(nn.Module):
    """Image tokens attend to prompt tokens: ``layers`` × (cross-attention, parallel block), residual."""

    def __init__(self, dim: int = 1024, layers: int = 4, dim_head: int = 64, heads: int = 16, ff_mult: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    Residual(CrossAttention(dim, dim_head, heads, ff_mult)),
                    Residual(ParallelBlock(dim, dim_head, heads, ff_mult)),
                ]
            )
            for _ in range(layers)
        )

    def forward(self, query: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for cross_attn, block in self.layers:
            query = cross_attn(query, context, mask)
            query = block(query)
        return query


class MPSModel(nn.Module):
    """``model`` (transformers CLIPModel) + ``cross_model`` under the reference's parameter names."""

    def __init__(self, clip_config: Any, fusion_layers: int = 4, heads: int = 16, dim_head: int = 64) -> None:
        super().__init__()
        from transformers import CLIPModel

        self.model = CLIPModel(clip_config)
        self.cross_model = CrossModel(clip_config.projection_dim, fusion_layers, dim_head, heads)

    def text_tokens(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> per-token projected features ``[B, L, D]`` and the EOS feature ``[B, D]`` (EOS = highest id)."""
        hidden = self.model.text_model(input_ids=input_ids).last_hidden_state  # [B, L, W] after final LN
        eos = hidden[torch.arange(hidden.shape[0], device=hidden.device), input_ids.argmax(dim=-1)]
        return self.model.text_projection(hidden), self.model.text_projection(eos)

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, 77] prompt ids (padded, no attention mask)
        pixel_values: torch.Tensor,  # [B, 3, 224, 224]
        condition_ids: torch.Tensor,  # [1, 77] the condition string
    ) -> torch.Tensor:  # [B] scores
        text, text_eos = self.text_tokens(input_ids)  # [B, 77, D], [B, D]
        condition, _ = self.text_tokens(condition_ids)  # [1, 77, D]
        image = self.model.visual_projection(self.model.vision_model(pixel_values=pixel_values).last_hidden_state)
        relevance = torch.einsum("bid,jd->bji", text, condition[0]).amax(dim=1)  # [B, 77]: best condition match
        relevance = relevance / relevance.amax(dim=-1, keepdim=True)
        mask = torch.zeros_like(relevance).masked_fill(relevance <= 0.01, float("-inf"))  # [B, 77]
        mask = mask[:, None, :].expand(-1, image.shape[1], -1)  # [B, 257, 77]
        fused = self.cross_model(image, text, mask)[:, 0, :]  # [B, D] CLS output
        cosine = (F.normalize(text_eos.float(), dim=-1) * F.normalize(fused.float(), dim=-1)).sum(-1)
        return self.model.logit_scale.float().exp() * cosine


# --------------------------------------------------------------------------------------------------
# Converting the pickled release to a state dict, without executing its code
# --------------------------------------------------------------------------------------------------


class _Stub:
    """Stands in for every non-torch class in a pickled module tree; keeps its attributes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)

    def __call__(self, *args: Any, **kwargs: Any) -> _Stub:
        return _Stub(*args, **kwargs)


def _stub_class(module: str, name: str) -> type:
    return type(name, (_Stub,), {"__module__": f"stub:{module}"})


_TORCH_CALLABLES = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "device"),
    ("torch", "Size"),
    ("torch.nn.parameter", "Parameter"),
    ("collections", "OrderedDict"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Allows torch's tensor rebuilders, storages and dtypes; every other global becomes a stub class."""

    def find_class(self, module: str, name: str) -> Any:
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))  # protocol-2 names
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _TORCH_CALLABLES:
            return getattr(sys.modules[module] if module in sys.modules else __import__(module), name)
        if module == "torch":
            value = getattr(torch, name, None)
            if isinstance(value, torch.dtype) or (isinstance(value, type) and name.endswith("Storage")):
                return value
        if module == "torch.storage" and name in ("UntypedStorage", "TypedStorage", "_LegacyStorage"):
            return getattr(torch.storage, name)
        return _stub_class(module, name)


class _RestrictedPickleModule:
    Unpickler = _RestrictedUnpickler
    load = pickle.load
    __name__ = "cogrpo_rewards.mps.restricted_pickle"


def _collect_state(node: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = node.__dict__ if isinstance(node, _Stub) else {}
    for name, value in (state.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + name] = value.detach().clone()
    skipped = state.get("_non_persistent_buffers_set") or set()
    for name, value in (state.get("_buffers") or {}).items():
        if value is not None and name not in skipped:
            out[prefix + name] = value.detach().clone()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _collect_state(child, f"{prefix}{name}.", out)


def convert_pickled_checkpoint(src: str | Path, dst: str | Path) -> dict[str, torch.Tensor]:
    """``torch.save(module)`` file -> ``safetensors`` of its ``state_dict()`` (no foreign code runs)."""
    from safetensors.torch import save_file

    root = torch.load(src, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickleModule)
    state: dict[str, torch.Tensor] = OrderedDict()
    _collect_state(root, "", state)
    if not state:
        raise CheckpointError(f"mps: {src} holds no module parameters; is it MPS_overall_checkpoint.pth?")
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst))
    return state


# --------------------------------------------------------------------------------------------------
# The reward
# --------------------------------------------------------------------------------------------------


def _load_clip_config(clip_config: str | Path | None, name: str):
    from transformers import CLIPConfig

    source = str(Path(clip_config).expanduser()) if clip_config is not None else CLIP_REPO_ID
    try:
        return CLIPConfig.from_pretrained(source)
    except OSError as exc:
        raise WeightsNotFoundError(
            f"{name}: config.json of {CLIP_REPO_ID} is not in the Hugging Face cache and the hub is unreachable; "
            f"download it and pass --reward-opt {name}.clip_config=/path/to/folder"
        ) from exc


class MPSScorer:
    """MPS (overall) as a cogrpo reward. Options: ``path`` (converted ``.safetensors``; required),
    ``clip_config`` / ``processor_path`` (folders in the layout of
    ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``; default: that repo in the HF cache), ``condition``
    (default: the released "overall" condition), ``batch_size``."""

    def __init__(
        self,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        path: str | Path | None = None,
        clip_config: str | Path | None = None,
        processor_path: str | Path | None = None,
        condition: str = OVERALL_CONDITION,
        batch_size: int = 8,
        name: str = "mps",
    ) -> None:
        from transformers import CLIPTokenizer

        from cogrpo_rewards._images import clip_image_processor_class

        image_processor_class = clip_image_processor_class()

        from cogrpo_rewards._models import build_from_state_dict

        self.name = name
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = int(batch_size)
        file = resolve_file(
            name,
            path=path,
            repo_id=None,
            filenames=("mps_overall.safetensors",),
            source=SOURCE_URL + ", then convert it",
        )
        if file.suffix in (".pth", ".pt", ".bin"):
            try:
                state_dict = load_state_dict_file(file)
            except CheckpointError as exc:
                raise CheckpointError(
                    f"{name}: {file} is a pickled module; convert it first: "
                    f"python -m cogrpo_rewards.mps convert {file} mps_overall.safetensors"
                ) from exc
        else:
            state_dict = load_state_dict_file(file)
        state_dict = {k: v for k, v in state_dict.items() if not k.endswith("embeddings.position_ids")}
        config = _load_clip_config(clip_config, name)
        self.model = build_from_state_dict(lambda: MPSModel(config), state_dict, reward=name, source=file)
        self.model.to(self.device, dtype)
        from cogrpo_rewards.pickscore import PROCESSOR_FILES

        processor_folder = resolve_folder(
            name, path=processor_path, repo_id=CLIP_REPO_ID, filenames=PROCESSOR_FILES, option="processor_path"
        )
        self.tokenizer = CLIPTokenizer.from_pretrained(str(processor_folder))
        self.image_processor = image_processor_class.from_pretrained(str(processor_folder))
        if len(self.tokenizer) != config.text_config.vocab_size:
            raise CheckpointError(
                f"{name}: the tokenizer in {processor_folder} has {len(self.tokenizer)} tokens, the model "
                f"{config.text_config.vocab_size}; pass the laion CLIP-ViT-H-14 processor folder"
            )
        self.condition = condition
        self.checkpoint = str(file)

    def _tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts), max_length=77, padding="max_length", truncation=True, return_tensors="pt")[
            "input_ids"
        ]

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,  # [B, 3, H, W] in [0, 1]
        prompts: Sequence[str],
        *,
        tokens: torch.Tensor | None = None,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> RewardOutput:
        validate_reward_inputs(images, prompts, tokens=tokens, metadata=metadata)
        pixels = self.image_processor(images=to_pil(images), return_tensors="pt")["pixel_values"]
        input_ids = self._tokenize(prompts)
        condition_ids = self._tokenize([self.condition]).to(self.device)
        scores = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            scores.append(
                self.model(input_ids[chunk].to(self.device), pixels[chunk].to(self.device, self.dtype), condition_ids)
            )
        return RewardOutput(scores=torch.cat(scores).float().cpu(), info={})


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cogrpo_rewards.mps convert SRC.pth DST.safetensors``"""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or args[0] != "convert":
        print("usage: python -m cogrpo_rewards.mps convert MPS_overall_checkpoint.pth mps_overall.safetensors")
        return 2
    state = convert_pickled_checkpoint(args[1], args[2])
    params = sum(v.numel() for v in state.values())
    print(f"wrote {args[2]}: {len(state)} tensors, {params / 1e6:.1f}M values")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
