"""alpha-Hill: recovery of known tail indices, ranking, the vectorised KS search, and the model sweep.

Tolerances: with ``n`` tail eigenvalues the Hill estimate's standard error is about
``(alpha - 1) / sqrt(n)``; the tests use ``n`` large enough that the stated tolerances are >= 4
standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise.config import LayerwiseError
from layerwise.models import wrap
from layerwise.spectra import (
    alpha_hill,
    eigenvalues,
    fit_power_law,
    layer_alpha,
    model_alpha_hill,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def pareto(n: int, alpha: float, xmin: float, g: torch.Generator) -> torch.Tensor:
    """Samples with density ~ x^-alpha above xmin (a Pareto law of shape alpha - 1)."""
    u = torch.rand(n, generator=g, dtype=torch.float64)
    return xmin * u.pow(-1.0 / (alpha - 1.0))


def spectrum(alpha: float, n_tail: int, n_body: int, seed: int, xmin: float = 1.0) -> torch.Tensor:
    """A Pareto tail above xmin plus a uniform bulk below it (like a trained layer's ESD)."""
    g = torch.Generator().manual_seed(seed)
    body = torch.rand(n_body, generator=g, dtype=torch.float64) * 0.9 * xmin + 0.05 * xmin
    return torch.cat([body, pareto(n_tail, alpha, xmin, g)])


def matrix_with_spectrum(eigs: torch.Tensor, m: int, n: int, seed: int) -> torch.Tensor:
    """``W = U diag(sqrt(eigs)) V^T`` with random orthogonal U, V: ``W^T W`` has eigenvalues ``eigs``."""
    g = torch.Generator().manual_seed(seed)
    r = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=torch.float64))  # orthonormal columns
    V, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))
    return (U * eigs[:r].sqrt()) @ V.T


@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.0])
def test_fixed_k_at_true_xmin_recovers_alpha(alpha):
    n_tail = 6000
    e = spectrum(alpha, n_tail, 3000, seed=int(alpha * 10))
    fit = fit_power_law(e, method="fixed", k=n_tail)
    assert abs(fit.xmin - 1.0) < 0.01  # the smallest tail sample sits just above xmin = 1
    assert abs(fit.alpha - alpha) < 0.15
    assert fit.n_tail == n_tail


@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.0])
def test_ks_chooses_a_reasonable_xmin(alpha):
    e = spectrum(alpha, 2000, 800, seed=int(alpha * 7))
    fit = fit_power_law(e, method="ks")
    assert 0.9 <= fit.xmin <= 1.6  # true xmin 1.0; above it the tail is still a power law
    assert fit.n_tail >= 800
    assert abs(fit.alpha - alpha) < 0.25


def test_vectorised_ks_equals_a_plain_loop():
    """The chunked torch search picks the same cut-off as a direct loop over every candidate."""
    e = torch.sort(spectrum(2.5, 150, 100, seed=3)).values
    N, min_tail = e.numel(), 10
    best = (math.inf, None, None)
    for i in range(0, N - min_tail + 1):
        tail = e[i:]
        n = tail.numel()
        a = 1 + n / torch.log(tail / e[i]).sum()
        emp = torch.arange(n, dtype=torch.float64) / n
        d = (1 - (tail / e[i]) ** (1 - a) - emp).abs().max() if a > 1 else torch.tensor(1.0)
        if d < best[0]:
            best = (float(d), i, float(a))
    fit = fit_power_law(e, method="ks", min_tail=min_tail, chunk=37)
    assert fit.n_tail == N - best[1]
    assert fit.alpha == pytest.approx(best[2], rel=1e-9)
    assert fit.ks == pytest.approx(best[0], rel=1e-9)


def test_matrices_heavier_tails_rank_lower_and_gaussian_is_large():
    alphas = [2.0, 3.0, 5.0]
    g = torch.Generator().manual_seed(0)
    est_fixed, est_ks = [], []
    for a in alphas:
        W = matrix_with_spectrum(pareto(256, a, 1.0, g), 256, 384, seed=int(a))
        est_fixed.append(alpha_hill(W, method="fixed").alpha)
        est_ks.append(alpha_hill(W, method="ks").alpha)
    assert est_fixed == sorted(est_fixed) and est_ks == sorted(est_ks)
    assert torch.allclose(eigenvalues(W), torch.sort(torch.linalg.svdvals(W) ** 2).values, rtol=1e-8)
    # the whole spectrum of the alpha=3 matrix is Pareto from xmin=1: fraction=1 recovers it
    W3 = matrix_with_spectrum(pareto(512, 3.0, 1.0, g), 512, 640, seed=9)  # s.e. 2/sqrt(512) = 0.09
    assert abs(alpha_hill(W3, method="fixed", fraction=1.0).alpha - 3.0) < 0.3
    # random Gaussian weights: a Marchenko-Pastur bulk with a hard edge, no power-law tail
    for shape in [(256, 256), (128, 512)]:
        G = torch.randn(*shape, generator=g)
        ks = alpha_hill(G, method="ks").alpha
        assert ks > 4.0 and ks > max(est_ks)
        assert alpha_hill(G, method="fixed").alpha > est_fixed[0]


def test_fit_input_checks():
    with pytest.raises(LayerwiseError, match="matrix"):
        alpha_hill(torch.ones(5))
    with pytest.raises(LayerwiseError, match="method"):
        fit_power_law(torch.rand(20) + 0.1, method="peak")
    with pytest.raises(LayerwiseError, match="k="):
        fit_power_law(torch.rand(20) + 0.1, k=50)
    with pytest.raises(LayerwiseError, match="all zeros"):
        alpha_hill(torch.zeros(8, 8))
    # rank-deficient matrices: the numerical zeros are dropped, not fitted as log(0)
    W = torch.randn(16, 4, dtype=torch.float64) @ torch.randn(4, 32, dtype=torch.float64)
    fit = alpha_hill(W, fraction=1.0)
    assert fit.n_eigs == 4 and math.isfinite(fit.alpha)


def test_model_alpha_hill_on_tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=50)
    lm = wrap(LlamaForCausalLM(cfg), None, "ar")
    df = model_alpha_hill(lm, progress=False)
    assert len(df) == 3 * 7 and set(df.role) == {"q", "k", "v", "o", "gate", "up", "down"}
    assert (df.alpha > 1).all() and np.isfinite(df.alpha).all()
    # the sweep equals the per-matrix call, and k/v matrices of GQA have min(out, in) = 16 eigenvalues
    blk = lm.adapter.get_blocks(lm.model)[1]
    assert df[(df.layer == 1) & (df.role == "k")].alpha.item() == alpha_hill(blk.self_attn.k_proj.weight).alpha
    assert df[df.role == "k"].n_eigs.eq(16).all()
    per_layer = layer_alpha(df)
    assert list(per_layer.layer) == [0, 1, 2] and per_layer.n_modules.eq(7).all()
    assert per_layer.alpha[0] == pytest.approx(df[df.layer == 0].alpha.mean())
    ks = model_alpha_hill(lm, method="ks", progress=False)
    assert (ks.ks <= 1).all() and len(ks) == len(df)

