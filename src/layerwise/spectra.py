"""alpha-Hill: the power-law exponent of a weight matrix's eigenvalue spectrum.

Heavy-tailed self-regularisation (Martin & Mahoney) reads training quality off the empirical
spectral density (ESD) of ``W^T W``: a well-trained layer has a heavy power-law tail
``p(lambda) ~ lambda^-alpha`` with a small ``alpha`` (about 2-4); a random (untrained) matrix has a
Marchenko-Pastur bulk with a sharp edge and a large fitted ``alpha``. Paper B (Fig. 4 and 6) uses
AlphaPruning's Hill estimator to argue that LLaDA's early layers are *over*-trained (low alpha).

The estimator (AlphaPruning, ``lib/esd_utils.py``; same in super-outlier-dlm): sort the eigenvalues
ascending, ``lambda_0 <= ... <= lambda_{N-1}``; pick a cut-off index ``i`` (``xmin = lambda_i``);
with the ``n = N - i`` tail eigenvalues (``xmin`` included, as in AlphaPruning)::

    alpha = 1 + n / sum_{j >= i} log(lambda_j / xmin)

which is the maximum-likelihood exponent of a continuous power-law density above ``xmin``. Two
ways to pick the cut-off:

- ``method="fixed"``: a fixed share of the spectrum, ``i = int(N * (1 - fraction))``; ``fraction=0.5``
  is AlphaPruning's ``xmin_mid`` (the median eigenvalue), or a fixed number ``k`` of top eigenvalues.
- ``method="ks"``: every cut-off is tried and the one whose fitted power law has the smallest
  Kolmogorov-Smirnov distance to the empirical tail wins (WeightWatcher / ``powerlaw`` /
  AlphaPruning's default). The search is vectorised over cut-offs in torch, in chunks so that
  memory stays ``O(chunk * N)``.

Eigenvalues are computed as ``eigvalsh`` of the smaller Gram matrix (``W W^T`` or ``W^T W``) in
float64 on the weight's device: the same eigenvalues as squared singular values, faster than an SVD
on a GPU, and float64 keeps the small ones accurate (the Gram matrix squares the condition number).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from tqdm.auto import tqdm

from .config import LayerwiseError, progress_disabled, resolve_device
from .models import LoadedModel

Method = Literal["fixed", "ks"]

#: eigenvalues below this share of the largest are numerical zeros (rank-deficient weights) and are
#: dropped before fitting: their log would be -inf.
ZERO_EIG_RTOL = 1e-12


@dataclass(frozen=True)
class HillFit:
    """One power-law fit of a spectrum's tail.

    ``alpha``: density exponent; ``xmin``: cut-off eigenvalue; ``n_tail``: eigenvalues in the tail
    (``xmin`` included); ``ks``: Kolmogorov-Smirnov distance between the fitted power law and the
    empirical tail; ``n_eigs``: non-zero eigenvalues used.
    """

    alpha: float
    xmin: float
    n_tail: int
    ks: float
    n_eigs: int


def eigenvalues(weight: torch.Tensor, *, dtype: torch.dtype = torch.float64,
                device: str | torch.device | None = None) -> torch.Tensor:
    """Eigenvalues of ``W^T W`` (= squared singular values of ``W``), ascending.

    ``weight``: ``[out, in]`` (anything with >2 dims is flattened to ``[shape[0], -1]``).
    Returns ``[min(out, in)]`` in ``dtype`` on ``device`` (default: the weight's device).
    """
    if weight.dim() < 2:
        raise LayerwiseError(f"alpha-Hill needs a matrix, got a tensor of shape {tuple(weight.shape)}")
    w = weight.detach().reshape(weight.shape[0], -1).to(device=device or weight.device, dtype=dtype)
    # the smaller Gram matrix has the same non-zero eigenvalues and costs min(m,n)^2 memory
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    eigs = torch.linalg.eigvalsh(gram)  # ascending
    return eigs.clamp_min(0.0)


def _clean_eigs(eigs: torch.Tensor) -> torch.Tensor:
    """Sorted, finite, positive eigenvalues (numerical zeros dropped); ``[N]`` float64."""
    if eigs.dim() != 1:
        raise LayerwiseError(f"eigenvalues must be a 1-D tensor, got shape {tuple(eigs.shape)}")
    e = eigs.detach()
    if not e.dtype.is_floating_point or e.dtype in (torch.float16, torch.bfloat16):
        e = e.to(torch.float64)
    e = torch.sort(e[torch.isfinite(e)]).values
    if e.numel() == 0 or e[-1] <= 0:
        raise LayerwiseError("the spectrum has no positive eigenvalue: is the weight all zeros?")
    return e[e > e[-1] * ZERO_EIG_RTOL]


def _hill_at(log_e: torch.Tensor, suffix: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """alpha for cut-off indices ``i`` ([C]) given ``log_e`` ([N]) and its suffix sums ([N])."""
    n = (log_e.numel() - i).to(log_e.dtype)
    denom = suffix[i] - n * log_e[i]
    return 1.0 + n / denom  # denom == 0 (flat tail) gives inf: no power law there


def _ks_at(log_e: torch.Tensor, i: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """KS distance of the fitted power law above ``e[i]`` for each cut-off; ``[C]``.

    Empirical CDF of the tail at its j-th value is ``j / n`` (AlphaPruning's convention), fitted CDF
    ``1 - (x / xmin)^(1 - alpha)``. Rows are cut-offs, columns tail positions (only columns from the
    chunk's smallest cut-off on); positions outside a row's tail are masked out.
    """
    N, j0 = log_e.numel(), int(i.min())
    j = torch.arange(j0, N, device=log_e.device)
    pos = j[None, :] - i[:, None]  # [C, N - j0] index within the tail
    n = (N - i).to(log_e.dtype)[:, None]
    log_ratio = (log_e[None, j0:] - log_e[i][:, None]).clamp_min(0.0)
    fitted = 1.0 - torch.exp((1.0 - alpha[:, None]) * log_ratio)
    d = (fitted - pos.to(log_e.dtype) / n).abs().masked_fill_(pos < 0, 0.0)
    ks = d.amax(dim=1)
    return torch.where(alpha > 1.0, ks, torch.ones_like(ks))  # alpha <= 1 is no normalisable fit


def fit_power_law(eigs: torch.Tensor, *, method: Method = "fixed", fraction: float = 0.5,
                  k: int | None = None, min_tail: int = 10, chunk: int = 256) -> HillFit:
    """Fit alpha-Hill to a spectrum ``eigs`` (``[N]``, any order).

    ``method="fixed"``: the top ``k`` eigenvalues form the tail when ``k`` is given, else the top
    ``fraction`` (``0.5`` = AlphaPruning's median ``xmin``). ``method="ks"``: the cut-off minimising
    the KS distance among those leaving at least ``min_tail`` eigenvalues in the tail (capped at
    ``N // 2`` for tiny spectra); ``chunk`` cut-offs are evaluated at once (memory ``chunk * N``).
    """
    e = _clean_eigs(eigs)
    N = e.numel()
    if N < 3:
        raise LayerwiseError(f"a power-law fit needs at least 3 positive eigenvalues, got {N}")
    log_e = e.log()
    suffix = torch.flip(torch.cumsum(torch.flip(log_e, [0]), 0), [0])  # suffix[i] = sum_{j>=i} log e_j
    if method == "fixed":
        if k is not None:
            if not 2 <= k <= N:
                raise LayerwiseError(f"k={k} must be in [2, {N}] (the number of non-zero eigenvalues)")
            i0 = N - k
        else:
            if not 0.0 < fraction <= 1.0:
                raise LayerwiseError(f"fraction={fraction} must be in (0, 1]: the share of eigenvalues in the tail")
            i0 = min(int(N * (1.0 - fraction)), N - 2)
        idx = torch.tensor([i0], device=e.device)
    elif method == "ks":
        last = N - max(2, min(min_tail, N // 2))  # largest admissible cut-off index
        idx = torch.arange(0, last + 1, device=e.device)
    else:
        raise LayerwiseError(f"unknown method {method!r}: use 'fixed' (fraction / k) or 'ks'")
    best_ks, best_i, best_alpha = torch.inf, int(idx[0]), torch.nan
    for start in range(0, idx.numel(), chunk):
        ii = idx[start:start + chunk]
        alpha = _hill_at(log_e, suffix, ii)
        ks = _ks_at(log_e, ii, alpha)
        j = int(torch.argmin(ks))
        if float(ks[j]) < best_ks:
            best_ks, best_i, best_alpha = float(ks[j]), int(ii[j]), float(alpha[j])
    return HillFit(alpha=best_alpha, xmin=float(e[best_i]), n_tail=N - best_i, ks=best_ks, n_eigs=N)


def alpha_hill(weight: torch.Tensor, *, method: Method = "fixed", fraction: float = 0.5,
               k: int | None = None, min_tail: int = 10, dtype: torch.dtype = torch.float64,
               device: str | torch.device | None = None) -> HillFit:
    """alpha-Hill of one weight matrix ``[out, in]``; see :func:`fit_power_law` for the options."""
    return fit_power_law(eigenvalues(weight, dtype=dtype, device=device), method=method,
                         fraction=fraction, k=k, min_tail=min_tail)


def model_alpha_hill(lm: LoadedModel, *, method: Method = "fixed", fraction: float = 0.5,
                     k: int | None = None, min_tail: int = 10, dtype: torch.dtype = torch.float64,
                     device: str | torch.device | None = None, progress: bool = True) -> pd.DataFrame:
    """alpha-Hill of every Linear weight in every block.

    Weights are copied one at a time to ``device`` (default: where the model lives; ``"auto"``
    picks the GPU) in ``dtype``, so memory is one matrix's Gram, not the model. Returns a DataFrame
    with columns ``layer, role, alpha, xmin, n_tail, ks, n_eigs, shape`` (one row per matrix).
    """
    dev = resolve_device(device) if device is not None else None
    mats = list(lm.adapter.named_linears(lm.model))
    rows = []
    for layer, role, mod in tqdm(mats, desc=f"alpha-Hill ({method})", disable=progress_disabled(not progress)):
        fit = alpha_hill(mod.weight, method=method, fraction=fraction, k=k, min_tail=min_tail,
                         dtype=dtype, device=dev)
        rows.append({"layer": layer, "role": role, "alpha": fit.alpha, "xmin": fit.xmin,
                     "n_tail": fit.n_tail, "ks": fit.ks, "n_eigs": fit.n_eigs,
                     "shape": tuple(mod.weight.shape)})
    return pd.DataFrame(rows)


def layer_alpha(df: pd.DataFrame) -> pd.DataFrame:
    """Per-layer alpha averaged over modules (paper B Fig. 4): columns ``layer, alpha, n_modules``."""
    g = df.groupby("layer")["alpha"]
    return pd.DataFrame({"alpha": g.mean(), "n_modules": g.size()}).reset_index()



def checkpoint_alpha_hill(checkpoints: dict[int, str], *, method: Method = "fixed", fraction: float = 0.5,
                          k: int | None = None, min_tail: int = 10, device: str | torch.device = "auto",
                          progress: bool = True) -> pd.DataFrame:
    """alpha-Hill of every matrix at each training checkpoint: ``{step: checkpoint dir}`` in, the
    :func:`model_alpha_hill` table with a ``step`` column out. Checkpoints are loaded one at a time
    (``layerwise.models.load``) and freed before the next."""
    from .models import load

    frames = []
    for step, path in tqdm(sorted(checkpoints.items()), desc="checkpoints", disable=progress_disabled(not progress)):
        lm = load(str(path), device=device, dtype="float32")
        frames.append(model_alpha_hill(lm, method=method, fraction=fraction, k=k, min_tail=min_tail,
                                       progress=False).assign(step=step))
        del lm
    if not frames:
        raise LayerwiseError("no checkpoints given: pass {step: path} of saved models (e.g. the triplet's snapshots/)")
    return pd.concat(frames, ignore_index=True)
