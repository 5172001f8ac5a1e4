"""Why 2-bit GPTQ can leave a diffusion model's loss unchanged: low-rank Linear inputs.

GPTQ moves each column's rounding error into the directions the layer's inputs do not use; when the
inputs span few directions (low effective rank of ``X^T X``), the outputs stay nearly exact even on
a 2-bit grid. Shown on constructed inputs of controlled rank, then on the trained ``test`` triplet,
whose masked-diffusion model (``dlm``) has Linear inputs of much lower effective rank than the AR
model, with the per-Linear error table of :func:`layerwise.compress.linear_errors`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from layerwise import compress as C
from layerwise import training as T
from layerwise.data import calibration_sequences, eval_sequences
from layerwise.diffusion import mask_token_id, mask_tokens, sample_t
from layerwise.subjects import load_subjects

pytestmark = pytest.mark.usefixtures("one_thread")


def _low_rank_inputs(n: int, d: int, rank: int, seed: int) -> torch.Tensor:
    """``[n, d]`` inputs on a fixed random ``rank``-dimensional subspace plus 1% isotropic noise."""
    g = torch.Generator().manual_seed(0)  # the same subspace for calibration and held-out inputs
    basis = torch.randn(rank, d, generator=g)
    gs = torch.Generator().manual_seed(seed)
    return torch.randn(n, rank, generator=gs) @ basis + 0.01 * torch.randn(n, d, generator=gs)


def _errors(rank: int, d: int = 64, out: int = 48, bits: int = 2) -> tuple[float, float, float]:
    """(GPTQ held-out output error, RTN held-out output error, effective rank of the inputs)."""
    w = torch.randn(out, d, generator=torch.Generator().manual_seed(1))
    x_cal, x_test = _low_rank_inputs(2048, d, rank, seed=2), _low_rank_inputs(512, d, rank, seed=3)
    h = 2 * x_cal.T @ x_cal / len(x_cal)
    y = x_test @ w.T
    gptq = C.relative_error(x_test @ C.gptq_quantize_weight(w, h, bits, 32).T, y)
    rtn = C.relative_error(x_test @ C.rtn_quantize_weight(w, bits, 32).T, y)
    return gptq, rtn, C.effective_rank(x_cal.T @ x_cal)[0]


def test_effective_rank_counts_the_directions_inputs_use():
    iso = torch.randn(4096, 16, generator=torch.Generator().manual_seed(0))
    assert C.effective_rank(iso.T @ iso)[0] > 15
    line = iso[:, :1] @ torch.ones(1, 16)
    rank, top1 = C.effective_rank(line.T @ line)
    assert rank == pytest.approx(1.0, abs=1e-3) and top1 == pytest.approx(1.0, abs=1e-6)
    assert C.effective_rank(torch.zeros(4, 4)) == (0.0, 0.0)


def test_gptq_2bit_error_vanishes_as_the_inputs_lose_rank_and_rtn_does_not():
    errs = {r: _errors(r) for r in (64, 16, 4, 1)}  # rank -> (GPTQ error, RTN error, effective rank)
    gptq, rtn, eff = ([errs[r][k] for r in errs] for k in range(3))
    assert eff[-1] < 1.5 and eff[0] > 30
    # the same weights on the same 2-bit grid: RTN's output error stays put whatever the inputs' rank ...
    assert max(rtn) < 1.3 * min(rtn)
    # ... GPTQ's falls with every halving of the rank, from RTN's order to a small fraction of it
    assert all(a > b for a, b in zip(gptq, gptq[1:])), gptq
    assert gptq[0] > 0.5 * rtn[0] and gptq[-1] < 0.2 * rtn[-1]


@pytest.fixture(scope="module")
def triplet(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    cache = tmp_path_factory.mktemp("cache")
    T.ensure_triplet("test", cache_dir=cache, device="cpu", progress=False)
    return load_subjects([], preset="test", cache_dir=cache, device="cpu"), cache


@pytest.fixture(scope="module")
def error_tables(triplet: tuple[dict, Path]) -> dict[str, dict[tuple[str, int], object]]:
    """model -> {(method, bits): linear_errors table}; ``("none", 0)``: the unmodified model's ranks."""
    subjects, cache = triplet
    out: dict[str, dict[tuple[str, int], object]] = {}
    for name, lm in subjects.items():
        ids = calibration_sequences(lm.tokenizer, "test", 8, 32, cache_dir=cache, seed=0)
        ev = eval_sequences(lm.tokenizer, "test", 8, 32, cache_dir=cache, seed=1)
        if lm.family.is_diffusion:  # held-out inputs as the diffusion likelihood sees them
            g = torch.Generator().manual_seed(1)
            ev = mask_tokens(ev, sample_t(len(ev), generator=g), mask_token_id(lm), generator=g)[0]
        calib = C.calibration_inputs(lm, ids, diffusion_masking=lm.family.is_diffusion)
        snap = C.snapshot(lm)
        out[name] = {("none", 0): C.linear_errors(lm, snap, ev)}
        for method in ("gptq", "rtn"):
            for bits in (2, 3, 4):
                with C.preserved(lm, snap):
                    C.quantize(lm, method, bits, 128, calib_ids=calib, progress=False)
                    out[name][(method, bits)] = C.linear_errors(lm, snap, ev)
        assert all(torch.equal(snap[k], w) for k, w in C.snapshot(lm).items())  # restored
    return out


@pytest.mark.slow
def test_2bit_gptq_changes_the_weights_and_errors_fall_with_bits(error_tables):
    for name, tabs in error_tables.items():
        assert (tabs[("none", 0)].rel_output_error == 0).all()
        for method in ("gptq", "rtn"):
            w = [tabs[(method, b)].rel_weight_change.to_numpy() for b in (2, 3, 4)]
            e = [tabs[(method, b)].rel_output_error.to_numpy() for b in (2, 3, 4)]
            assert (w[0] > 0.2).all(), (name, method)  # 2 bits is a real change of every Linear
            assert (w[0] > w[1]).all() and (w[1] > w[2]).all(), (name, method)
            assert (e[0] > e[1]).all() and (e[1] > e[2]).all(), (name, method)
            assert (e[0] > 0).all()


@pytest.mark.slow
def test_dlm_inputs_are_low_rank_and_gptq_hides_its_2bit_error(error_tables):
    rank = {n: float(t[("none", 0)].effective_rank.median()) for n, t in error_tables.items()}
    ratio = {n: float((t[("gptq", 2)].rel_output_error / t[("rtn", 2)].rel_output_error).median())
             for n, t in error_tables.items()}
    gptq2 = {n: float(t[("gptq", 2)].rel_output_error.median()) for n, t in error_tables.items()}
    assert rank["dlm"] < 0.5 * rank["ar"], rank
    assert ratio["dlm"] < 0.6 * ratio["ar"], ratio  # GPTQ's advantage over RTN is far larger on the dlm
    assert gptq2["dlm"] < 0.5 * gptq2["ar"], gptq2  # although the weights moved as much
    assert error_tables["dlm"][("gptq", 2)].rel_weight_change.median() > 0.5 * \
        error_tables["ar"][("gptq", 2)].rel_weight_change.median()
