"""cogrpo's sampler under the default schedule reproduces diffusers' ``AmusedPipeline``
token for token and pixel for pixel (same generator, steps and guidance)."""

from __future__ import annotations

import warnings

import pytest
import torch

from cogrpo_meissonic.amused import AmusedBackbone
from cogrpo_meissonic.testing import tiny_amused_components

PROMPTS = ["a red circle", "two blue squares", "a lighthouse at night"]


@pytest.fixture(
    scope="module", params=[dict(), dict(grid=8, hidden_size=32, layers=2, codebook_size=64)], ids=["dummy", "wider"]
)
def pipeline_and_backbone(request):
    from diffusers import AmusedPipeline

    parts = tiny_amused_components(**request.param)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AmusedPipeline's deprecation notice
        pipe = AmusedPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    backbone = AmusedBackbone(
        parts["transformer"],
        parts["vqvae"],
        parts["text_encoder"],
        parts["tokenizer"],
        mask_token_id=parts["scheduler"].config.mask_token_id,
    )
    return pipe, backbone


@pytest.mark.parametrize(("steps", "guidance"), [(8, 10.0), (4, 4.0), (4, 1.0)])
def test_sampler_reproduces_the_pipeline(pipeline_and_backbone, steps: int, guidance: float) -> None:
    pipe, bb = pipeline_and_backbone
    kwargs = dict(num_inference_steps=steps, guidance_scale=guidance)
    latents = pipe(PROMPTS, generator=torch.Generator().manual_seed(11), output_type="latent", **kwargs).images
    images = pipe(PROMPTS, generator=torch.Generator().manual_seed(11), output_type="pt", **kwargs).images
    got_images, got_tokens = bb.generate(
        PROMPTS,
        num_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(11),
        return_tokens=True,
    )
    assert torch.equal(got_tokens, latents.flatten(1))
    assert torch.equal(got_images, images)
    other = bb.generate(
        PROMPTS,
        num_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(12),
        return_tokens=True,
    )[1]
    assert not torch.equal(other, got_tokens), "a different seed gives different tokens"


def test_default_schedule_is_the_pipeline_default(pipeline_and_backbone) -> None:
    _, bb = pipeline_and_backbone
    values = bb.default_schedule().values(12)
    assert torch.all(values[:, 3] == 10.0)  # AmusedPipeline's guidance_scale default
    assert values[0, 1] == 2.0 and values[-1, 1] == 0.0  # temperature (2, 0)
