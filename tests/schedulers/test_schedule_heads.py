"""The learned schedule heads (paper-head, mlp-head): contract, sizing, registration, inputs."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from cogrpo.errors import ConfigError
from cogrpo.plugins import collect, create, get_plugin_manager
from cogrpo.protocols import SCHEDULE_COMPONENTS, SchedulePolicy
from cogrpo.testing import SchedulePolicyContract
from cogrpo_schedulers import plugin
from cogrpo_schedulers.paper_head import sinusoidal_embedding

MANIFEST = Path(__file__).parents[1] / "fixtures/meissonic/transformer_manifest.json"
ALL = ("r", "tau_r", "tau_s", "cfg")


def make_head(name: str, components=ALL, feature_dim: int = 16, feature_grid=(4, 4), **options):
    torch.manual_seed(0)
    pm = get_plugin_manager(plugins=[plugin], autoload=False)
    return create(
        pm,
        "schedule_policy",
        name,
        feature_dim=feature_dim,
        feature_grid=feature_grid,
        components=components,
        **options,
    )


def perturb(head: torch.nn.Module, scale: float = 0.2, seed: int = 1) -> torch.nn.Module:
    """Move every parameter off its initial value (zero layers included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return head


# -- contract ---------------------------------------------------------------------------------------


class TestPaperHeadContract(SchedulePolicyContract):
    def make_policy(self, components):
        return make_head("paper-head", components, self.feature_dim, self.feature_grid)


class TestMLPHeadContract(SchedulePolicyContract):
    def make_policy(self, components):
        return make_head("mlp-head", components, self.feature_dim, self.feature_grid)


# -- registration and options -----------------------------------------------------------------------


def test_both_heads_registered_next_to_fixed_schedules() -> None:
    pm = get_plugin_manager(plugins=[plugin], autoload=False)
    policies = collect(pm, "schedule_policy")
    assert {"paper-head", "mlp-head"} <= set(policies)
    assert all(policies[n].description for n in ("paper-head", "mlp-head"))
    assert {"cosine", "linear"} <= set(collect(pm, "fixed_schedule"))


@pytest.mark.parametrize("name", ["paper-head", "mlp-head"])
def test_every_subset_of_components(name: str) -> None:
    feats = torch.randn(2, 16, 4, 4)
    for n in range(1, 5):
        for subset in itertools.combinations(SCHEDULE_COMPONENTS, n):
            head = make_head(name, tuple(reversed(subset)))  # any order in, canonical order out
            assert head.components == subset
            assert isinstance(head, SchedulePolicy)
            assert perturb(head)(feats, torch.tensor([0.1, 0.7])).shape == (2, n)


@pytest.mark.parametrize("name", ["paper-head", "mlp-head"])
def test_bad_options_are_one_line_config_errors(name: str) -> None:
    with pytest.raises(ConfigError, match="unknown option.*hidden_size.*valid:.*hidden_dim"):
        make_head(name, hidden_size=8)
    with pytest.raises(ConfigError, match="hidden_dim"):
        make_head(name, hidden_dim=0)
    with pytest.raises(ConfigError, match=name):
        make_head(name, depth="two")
    with pytest.raises(ConfigError, match="at least one component"):
        make_head(name, components=())
    with pytest.raises(ConfigError, match="unknown schedule component"):
        make_head(name, components=("r", "temperature"))


def test_even_kernel_is_rejected() -> None:
    with pytest.raises(ConfigError, match="kernel_size"):
        make_head("paper-head", kernel_size=4)


@pytest.mark.parametrize("name", ["paper-head", "mlp-head"])
def test_wrong_feature_shape_is_a_clear_error(name: str) -> None:
    head = make_head(name)
    with pytest.raises(ValueError, match=r"features \[B, 16, Hf, Wf\]"):
        head(torch.randn(2, 8, 4, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="progress"):
        head(torch.randn(2, 16, 4, 4), torch.zeros(3))


# -- sizing -----------------------------------------------------------------------------------------


def paper_head_params(d: int, h: int, c: int, k: int = 3, e: int = 64, depth: int = 1, mlp: int | None = None) -> int:
    """Hand count from the architecture in the module docstring."""
    mlp = h if mlp is None else mlp
    progress = (e * h + h) + (h * h + h)
    convs = (d * k * k + d) + (d * h + h)
    block = (h * 3 * h + 3 * h) + (h * mlp + mlp) + (mlp * h + h)
    final = (h * 2 * h + 2 * h) + (h * c + c)
    return progress + convs + depth * block + final


def mlp_head_params(d: int, h: int, c: int, e: int = 64, depth: int = 2) -> int:
    return ((d + e) * h + h) + (depth - 1) * (h * h + h) + (h * c + c)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_head_is_about_one_percent_of_meissonic() -> None:
    manifest = json.loads(MANIFEST.read_text())
    cfg = manifest["config"]
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]  # 1024: Meissonic's token feature width
    head = make_head("paper-head", feature_dim=d, feature_grid=(32, 32))
    n = count(head)
    assert n == paper_head_params(d, d, 4)
    assert 0.005 < n / manifest["num_parameters"] < 0.015  # paper: 9M next to a 1.0B backbone


@pytest.mark.parametrize(
    ("options", "h", "depth", "mlp"),
    [({}, 128, 1, 128), ({"hidden_dim": 64, "depth": 2, "mlp_ratio": 2.0}, 64, 2, 128)],
)
def test_paper_head_sizes_follow_options(options: dict, h: int, depth: int, mlp: int) -> None:
    head = make_head("paper-head", components=("r", "cfg"), feature_dim=128, feature_grid=(8, 8), **options)
    assert count(head) == paper_head_params(128, h, 2, depth=depth, mlp=mlp)


def test_mlp_head_size() -> None:
    assert count(make_head("mlp-head", feature_dim=128, feature_grid=(8, 8))) == mlp_head_params(128, 128, 4)
    head = make_head("mlp-head", ("tau_s",), feature_dim=40, hidden_dim=16, depth=3, embed_dim=8)
    assert count(head) == mlp_head_params(40, 16, 1, e=8, depth=3)


# -- behaviour --------------------------------------------------------------------------------------


def test_sinusoidal_embedding_hand_computed() -> None:
    emb = sinusoidal_embedding(torch.tensor([0.5, 0.0]), 4, 32.0)  # frequencies 1 and 32 rad
    expected = torch.tensor([[math.cos(0.5), math.cos(16.0), math.sin(0.5), math.sin(16.0)], [1.0, 1.0, 0.0, 0.0]])
    torch.testing.assert_close(emb, expected)


@pytest.mark.parametrize("name", ["paper-head", "mlp-head"])
def test_output_depends_on_progress_alone(name: str) -> None:
    head = perturb(make_head(name))
    feats = torch.randn(1, 16, 4, 4).expand(3, -1, -1, -1)
    with torch.no_grad():
        mu = head(feats, torch.tensor([0.0, 0.5, 0.5]))
    assert not torch.allclose(mu[0], mu[1])
    torch.testing.assert_close(mu[1], mu[2])


def test_paper_head_sees_the_spatial_layout_mlp_head_does_not() -> None:
    feats = torch.randn(2, 16, 4, 4)
    shuffled = feats.flatten(2)[:, :, torch.randperm(16, generator=torch.Generator().manual_seed(0))].view_as(feats)
    progress = torch.tensor([0.2, 0.6])
    with torch.no_grad():
        paper, mlp = perturb(make_head("paper-head")), perturb(make_head("mlp-head"))
        assert not torch.allclose(paper(feats, progress), paper(shuffled, progress), atol=1e-4)
        torch.testing.assert_close(mlp(feats, progress), mlp(shuffled, progress), atol=1e-5, rtol=1e-5)


def test_paper_head_runs_on_other_grids() -> None:
    head = perturb(make_head("paper-head", feature_grid=(4, 4)))
    with torch.no_grad():
        mu = head(torch.randn(2, 16, 8, 6), torch.tensor([0.0, 0.5]))
    assert mu.shape == (2, 4) and torch.isfinite(mu).all()


@pytest.mark.parametrize("name", ["paper-head", "mlp-head"])
def test_bfloat16_head(name: str) -> None:
    head = make_head(name).to(torch.bfloat16)
    feats = (torch.randn(2, 16, 4, 4) * 50).to(torch.bfloat16)  # large, low-precision features
    progress = torch.tensor([0.0, 0.9], dtype=torch.bfloat16)
    with torch.no_grad():
        mu = head(feats, progress)
        assert mu.dtype == torch.bfloat16 and torch.equal(mu, torch.zeros_like(mu))
        mu = perturb(head)(feats, progress)
    assert torch.isfinite(mu).all() and not torch.equal(mu, torch.zeros_like(mu))


@pytest.mark.parametrize("name", ["paper-head", "mlp-head"])
def test_same_seed_same_head(name: str) -> None:
    a, b = perturb(make_head(name)), perturb(make_head(name))
    feats = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        assert torch.equal(a(feats, torch.tensor([0.1, 0.8])), b(feats, torch.tensor([0.1, 0.8])))
