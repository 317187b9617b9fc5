"""The ``meissonic`` and ``amused`` backbones on tiny random components (offline)."""

from __future__ import annotations

import pytest
import torch

from cogrpo.testing import BackboneContract
from cogrpo_meissonic.testing import tiny_amused_backbone, tiny_meissonic_backbone


class TestMeissonicContract(BackboneContract):
    num_steps = 4

    def make_backbone(self):
        return tiny_meissonic_backbone(grid=8)


class TestAmusedContract(BackboneContract):
    num_steps = 4

    def make_backbone(self):
        return tiny_amused_backbone(grid=8, hidden_size=16, codebook_size=16)


@pytest.fixture(scope="module")
def meissonic():
    return tiny_meissonic_backbone(grid=8)


def test_meissonic_shapes_and_ids(meissonic) -> None:
    assert meissonic.mask_token_id == 39 and meissonic.codebook_size == 32  # fixture config
    assert meissonic.token_grid == (8, 8) and meissonic.feature_grid == (4, 4)  # attended grid
    assert meissonic.feature_dim == 16
    assert meissonic.default_schedule().values(4)[0, 3] == 9.0  # Meissonic's CFG


def test_meissonic_forward_is_the_pipeline_call(meissonic) -> None:
    """One CFG forward = the transformer on [negative; positive] at t = T-1-k, with the micro-
    conditions [width, height, 0, 0, 6] and ids of the attended (down-sampled) grid."""
    bb = meissonic
    prompt = bb.encode_prompts(["a red circle", "a green cube"])
    tokens = torch.randint(0, 32, (2, 64), generator=torch.Generator().manual_seed(1))
    tokens[:, ::3] = bb.mask_token_id
    step, steps = 1, 5
    with torch.no_grad():
        out = bb.forward(tokens, prompt, step, steps, True)
        neg_hidden, neg_pooled = bb.text(["", ""])
        pos_hidden, pos_pooled = bb.text(["a red circle", "a green cube"])
        grid = tokens.view(2, 8, 8)
        rows = torch.tensor([[0, r, c] for r in range(4) for c in range(4)])
        micro = torch.tensor([[16.0, 16.0, 0.0, 0.0, 6.0]] * 4)
        logits, features = bb.model(
            hidden_states=torch.cat([grid, grid]),
            encoder_hidden_states=torch.cat([neg_hidden, pos_hidden]),
            pooled_projections=torch.cat([neg_pooled, pos_pooled]),
            micro_conds=micro,
            timestep=torch.tensor([steps - 1 - step]),
            img_ids=rows,
            txt_ids=torch.zeros(77, 3),
            return_features=True,
        )
    expected = logits.permute(0, 2, 3, 1).reshape(4, 64, 32)
    torch.testing.assert_close(out.uncond_logits, expected[:2], atol=0, rtol=0)
    torch.testing.assert_close(out.cond_logits, expected[2:], atol=0, rtol=0)
    torch.testing.assert_close(out.features, features[2:], atol=0, rtol=0)
    with torch.no_grad():
        other_step = bb.forward(tokens, prompt, step + 1, steps, True)
    assert not torch.allclose(other_step.cond_logits, out.cond_logits), "the step must reach the timestep"


def test_meissonic_generate_equals_a_reference_pipeline_loop(meissonic) -> None:
    """``generate`` against Meissonic's pipeline loop written out with diffusers' AmusedScheduler
    (the same scheduler algorithm): same tokens and images for the same generator."""
    from diffusers import AmusedScheduler

    bb, prompts, steps, cfg = meissonic, ["a red circle", "two blue squares"], 6, 9.0
    images, tokens = bb.generate(
        prompts, num_steps=steps, generator=torch.Generator().manual_seed(3), return_tokens=True
    )

    scheduler = AmusedScheduler(mask_token_id=bb.mask_token_id)
    scheduler.set_timesteps(steps, (2, 0))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        neg_hidden, neg_pooled = bb.text([""] * 2)
        hidden, pooled = bb.text(prompts)
        hidden, pooled = torch.cat([neg_hidden, hidden]), torch.cat([neg_pooled, pooled])
        micro = torch.tensor([[16.0, 16.0, 0.0, 0.0, 6.0]]).expand(4, -1)
        img_ids = torch.tensor([[0, r, c] for r in range(4) for c in range(4)])  # the 1024-px branch's ids
        latents = torch.full((2, 8, 8), bb.mask_token_id)
        for t in scheduler.timesteps:
            out = bb.model(
                hidden_states=torch.cat([latents] * 2),
                encoder_hidden_states=hidden,
                pooled_projections=pooled,
                micro_conds=micro,
                timestep=torch.tensor([t]),
                img_ids=img_ids,
                txt_ids=torch.zeros(77, 3),
            )
            uncond, cond = out.chunk(2)
            latents = scheduler.step(uncond + cfg * (cond - uncond), t, latents, generator=generator).prev_sample
        reference = bb.vqvae.decode(latents, force_not_quantize=True, shape=(2, 8, 8, 4)).sample.clip(0, 1)
    assert torch.equal(tokens, latents.view(2, -1))
    assert torch.equal(images, reference)
    again = bb.generate(prompts, num_steps=steps, generator=torch.Generator().manual_seed(4), return_tokens=True)[1]
    assert not torch.equal(again, tokens), "another seed must give other tokens (the check can fail)"


@pytest.mark.parametrize("make", [tiny_meissonic_backbone, tiny_amused_backbone], ids=["meissonic", "amused"])
def test_lora_trains_only_adapters_and_starts_at_the_base_model(make) -> None:
    base = make()
    lora = make(lora_rank=4)
    trainable = dict((n, p) for n, p in lora.model.named_parameters() if p.requires_grad)
    assert trainable and all("lora_" in n for n in trainable)
    assert {id(p) for p in lora.trainable_parameters()} == {id(p) for p in trainable.values()}
    prompt = base.encode_prompts(["a cat"])
    tokens = torch.full((1, base.token_grid[0] * base.token_grid[1]), base.mask_token_id)
    with torch.no_grad():
        a = base.forward(tokens, prompt, 0, 4, True)
        b = lora.forward(tokens, lora.encode_prompts(["a cat"]), 0, 4, True)
    torch.testing.assert_close(a.cond_logits, b.cond_logits, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("make", [tiny_meissonic_backbone, tiny_amused_backbone], ids=["meissonic", "amused"])
def test_gradient_checkpointing_and_bf16_options(make) -> None:
    plain, checkpointed = make(), make(gradient_checkpointing=True)
    grads = []
    for bb in (plain, checkpointed):
        prompt = bb.encode_prompts(["a cat", "a dog"])
        tokens = torch.full((2, bb.token_grid[0] * bb.token_grid[1]), bb.mask_token_id)
        out = bb.forward(tokens, prompt, 0, 4, True)
        out.cond_logits.float().logsumexp(-1).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in bb.model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)
    frozen = [p for p in list(plain.vqvae.parameters()) + list(plain.text.text_encoder.parameters())]
    assert not any(p.requires_grad for p in frozen), "VQ and text encoder are frozen"

    low = make(bf16=True)
    assert low.dtype == torch.bfloat16 and next(low.model.parameters()).dtype == torch.float32
    prompt = low.encode_prompts(["a cat"])
    tokens = torch.full((1, low.token_grid[0] * low.token_grid[1]), low.mask_token_id)
    with torch.no_grad():
        out = low.forward(tokens, prompt, 0, 4, True)
    assert out.cond_logits.dtype == torch.bfloat16 and torch.isfinite(out.cond_logits.float()).all()


def test_released_model_features_fit_the_paper_head() -> None:
    """At 1024 px the released transformer attends a 32x32 grid of width 1024; the paper head
    sized from them has ~1% of the backbone's parameters (the paper: about 9M)."""
    import json

    from meissonic_helpers import FIXTURES

    from cogrpo_meissonic.transformer import MeissonicTransformer2DModel
    from cogrpo_schedulers.paper_head import PaperHead

    config = json.loads((FIXTURES / "transformer_manifest.json").read_text())["config"]
    with torch.device("meta"):
        model = MeissonicTransformer2DModel(**config)
        grid = 1024 // 16 // model.attended_grid_factor
        head = PaperHead(
            feature_dim=model.inner_dim, feature_grid=(grid, grid), components=("r", "tau_r", "tau_s", "cfg")
        )
    assert (model.inner_dim, grid) == (1024, 32)
    n_head = sum(p.numel() for p in head.parameters())
    assert 8e6 < n_head < 11e6, n_head


def test_bf16_weights_forward() -> None:
    bb = tiny_meissonic_backbone(grid=8, dtype=torch.bfloat16)
    assert next(bb.model.parameters()).dtype == torch.bfloat16 and bb.dtype == torch.bfloat16
    prompt = bb.encode_prompts(["a cat", "a dog"])
    tokens = torch.full((2, 64), bb.mask_token_id)
    with torch.no_grad():
        out = bb.forward(tokens, prompt, 0, 4, True)
    assert out.cond_logits.dtype == torch.bfloat16 and torch.isfinite(out.cond_logits.float()).all()
    images = bb.decode(torch.zeros(2, 64, dtype=torch.long))
    assert images.dtype == torch.float32 and images.shape == (2, 3, 16, 16)


@pytest.mark.parametrize("make", [tiny_meissonic_backbone, tiny_amused_backbone], ids=["meissonic", "amused"])
def test_a_deep_copied_model_can_be_swapped_in(make) -> None:
    """The trainer's KL reference: ``backbone.model`` replaced by a frozen deep copy, then the
    trained model changed; the copy must keep giving the old outputs (hooks and checkpointing
    wrappers included)."""
    import copy

    bb = make(gradient_checkpointing=True)
    prompt = bb.encode_prompts(["a cat"])
    tokens = torch.full((1, bb.token_grid[0] * bb.token_grid[1]), bb.mask_token_id)
    with torch.no_grad():
        before = bb.forward(tokens, prompt, 0, 4, True)
        reference = copy.deepcopy(bb.model).requires_grad_(False)
        for p in bb.model.parameters():
            p.add_(0.05)
        trained = bb.forward(tokens, prompt, 0, 4, True)
        original, bb.model = bb.model, reference
        try:
            out = bb.forward(tokens, prompt, 0, 4, True)
            with torch.enable_grad():  # the checkpointed path of the copy
                grad_path = bb.forward(tokens, prompt, 0, 4, True)
        finally:
            bb.model = original
    assert not torch.allclose(trained.cond_logits, before.cond_logits)
    torch.testing.assert_close(out.cond_logits, before.cond_logits, atol=0, rtol=0)
    torch.testing.assert_close(out.features, before.features, atol=0, rtol=0)
    torch.testing.assert_close(grad_path.cond_logits, before.cond_logits, atol=1e-6, rtol=1e-6)


def test_offline_tokenizer_with_the_full_vocabulary_matches_open_clip(tmp_path) -> None:
    """``write_clip_tokenizer(full_vocab=True)`` gives CLIP's ids (oracle: open_clip's tokenizer)."""
    open_clip = pytest.importorskip("open_clip")
    from cogrpo_meissonic.testing import tiny_clip_tokenizer

    ours = tiny_clip_tokenizer(tmp_path, full_vocab=True)
    reference = open_clip.tokenizer.SimpleTokenizer()
    prompts = ["a photo of a cat", "Two actors are posing for a picture, one wearing face paint!", "an oil painting"]
    got = ours(prompts, padding="max_length", max_length=77, truncation=True).input_ids
    want = reference(prompts, context_length=77)
    assert len(ours) == 49408
    for g, w in zip(got, want.tolist(), strict=True):
        n = g.index(ours.eos_token_id) + 1
        assert g[:n] == w[:n]
