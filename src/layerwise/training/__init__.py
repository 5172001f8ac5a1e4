"""The controlled triplet: ``ar``, ``dlm`` and ``ar2dlm`` trained on identical data from one init.

- One architecture (transformers ``LlamaForCausalLM``: RMSNorm, SwiGLU, RoPE) for all three;
  ``dlm`` and ``ar2dlm`` set ``config.is_causal = False`` (bidirectional attention, sdpa and eager).
- The same initial weights (built under ``torch.manual_seed(preset.seed)``), the same tokenizer and
  the same data order: the batch at global step ``s`` is the same rows for every objective.
- Objectives: ``ar`` next-token cross-entropy; ``dlm`` LLaDA masked diffusion (t ~ U(eps, 1) per
  sequence, each token masked with probability t, CE on masked tokens weighted 1/t, normalised by
  batch * length; logits at i predict token i); ``ar2dlm`` starts from the ``ar`` snapshot at
  ``branch_frac`` (75%) of the budget and trains the remaining steps with the diffusion loss in
  Dream's shifted form (logits at i-1 predict masked token i; position 0 is never masked). Extra
  branch points (``Preset.branch_fracs``) train runs ``ar2dlm_b<percent>`` the same way.
- Training seeds (``Preset.seed``): the initial weights, the row order and the masking noise; seed
  ``k > 0`` trains into ``<preset>-seed<k>/`` on the same data as seed 0.
- AdamW, warmup-stable-decay schedule (the 75% branch point lies in the stable phase), gradient
  clipping, bf16 autocast + SDPA + optional ``torch.compile`` on CUDA, TF32 on.
- Resumable: ``<run>/ckpt/state.pt`` holds model, optimizer, scheduler, step, data position and RNG
  states. The masking noise of step ``s`` comes from a generator seeded by (seed, objective, s), so a
  resumed run is identical to an uninterrupted one.

Layout under ``<cache>/triplet/<preset>/<run>/``: the final checkpoint (``save_pretrained`` +
tokenizer + ``layerwise_meta.json``), ``train_log.jsonl``, ``ckpt/`` and ``snapshots/step_<n>/``
(model snapshots at ``snapshot_fracs`` of the budget and at every branch point, all kept).
:mod:`~layerwise.training.competence` scores finished runs and snapshots (held-out arithmetic by each
model's own sampler, bits per byte by its own likelihood, tokens per parameter, throughput and MFU).
"""

from __future__ import annotations

from ..diffusion import Objective
from .cli import main
from .compile import _autocast as _autocast
from .compile import compile_for_training, cpu_threads, flash_sdpa_under_compile
from .loop import RunResult, ensure_triplet, order_seed, ordered, train, validation_loss
from .losses import OBJECTIVES, ar_loss, check_objective, diffusion_loss, objective_loss, token_ce, wsd_lambda
from .presets import (
    H100_BF16_PEAK,
    H200_BF16_PEAK,
    PRESETS,
    Preset,
    flops_per_token,
    get_preset,
    init_model,
    model_config,
    n_params,
)
from .runs import is_complete, parse_run, read_log, run_dir, run_name, run_names, triplet_dir

__all__ = [
    "Objective", "OBJECTIVES", "H100_BF16_PEAK", "H200_BF16_PEAK", "Preset", "PRESETS", "get_preset", "check_objective",
    "model_config", "init_model", "n_params", "flops_per_token", "token_ce", "ar_loss", "diffusion_loss",
    "objective_loss", "wsd_lambda", "triplet_dir", "run_dir", "run_name", "run_names", "parse_run", "is_complete",
    "read_log", "RunResult", "order_seed", "ordered",
    "validation_loss", "compile_for_training", "flash_sdpa_under_compile", "cpu_threads", "train",
    "ensure_triplet", "main",
]
