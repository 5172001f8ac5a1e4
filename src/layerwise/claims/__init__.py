"""The papers' claims as functions: each computes one claim part's metric from a chapter's measured data.

The claims ledger (:mod:`layerwise.ledger`) compares numbers that the chapters write to their result
files (:mod:`layerwise.results`). Every such number is computed here, by one named function per claim
part, from the arrays and tables the chapter has measured:

======  ============================================  ==========================================
claim   part (metric name)                            function
======  ============================================  ==========================================
A1      ``early_similarity_dlm_minus_ar``             :func:`early_similarity_difference`
A2      ``recency_dlm_minus_ar``                      :func:`recency_difference`
A3      ``retention_at_18.75pct_{dlm,ar}``            :func:`retention_at_target`
A4      ``ar2dlm_closer_to_ar``                       :func:`ar2dlm_closer_to_ar`
A5      ``retention_at_18.75pct_ar2dlm``              :func:`retention_at_target`
A6      ``ar2dlm_branch_dose``                        :func:`ar2dlm_branch_dose`
A7      ``native_disruption_dlm_minus_ar``            :func:`native_disruption_difference`
A8      ``stage_retention_dlm``                       :func:`stage_retention_min`
B1      ``early_outlier_ratio_{dlm,dlm_minus_ar}``    :func:`early_outlier_ratio_difference`
B2      ``repetition_increase_dlm``                   :func:`repetition_increase`
B3      ``early_alpha_dlm_minus_ar``                  :func:`early_alpha_difference`
B4      ``gptq3_change_pct_dlm_minus_ar``             :func:`gptq3_change_difference`
B5      ``early_minus_late_pct_{dlm,ar}``             :func:`early_minus_late`
B6      ``early_minus_late_similarity_{dlm,ar}``      :func:`early_minus_late_similarity`
B7      ``outlier_persistence_dlm``                   :func:`outlier_persistence`
B8      ``early_alpha_trend_dlm``                     :func:`early_alpha_trend`
======  ============================================  ==========================================

**Alternative definitions.** The ledger checks each claim part under pre-registered alternative
definitions, saved beside the headline under ``definition(name, label)`` (``name::label``): A1, A4
and B6 ``with_block0`` / ``without_block0`` (chapter 01); A3 and A5 ``early:<task>`` /
``redundant:<task>`` for every generation task (and ``<strategy>:<task>:flops`` where the configuration
nearest the target share of FLOPs is another one), A7 ``at:<point>`` per trajectory point and A8
``stage:<stage>`` per stage of the diffusion schedule (chapter 03); B1 ``attn_input`` / ``residual``
(chapter 04); B2 ``<site>/<definition>`` of the ablation (chapter 05); B3 ``fixed`` / ``ks``
(chapter 06); B4 and B5 ``<task>:<metric>`` for every task evaluated (chapter 07; for files written
before B5's, :mod:`layerwise.claims.backfill` reads them from the file's own table); B7 ``max_abs`` /
``mean_abs`` (chapter 04). The chapter functions below write them all.

**Training seeds.** :func:`over_seeds` combines one metric measured on several training seeds
(:func:`layerwise.stats.seed_item_interval`) and keeps each seed's value for the ledger.

Each returns a :class:`ClaimMetric` (value, 95% interval, a ``meaningful`` flag, the model(s) and a
note). A chapter calls its ``*_metrics`` function (e.g. :func:`layer_similarity_metrics`), which runs
the claim functions for every model or pair of models and names each result with the metric names
defined here (:class:`MetricName`), and saves that dict with :func:`layerwise.results.save_result`;
the ledger reads the same names, so a metric name lives in this module only.

**Early layers** have one definition, :func:`early_layers`: the first ``ceil(L / 3)`` blocks of an
``L``-block model (never empty; 2 of 4 blocks, 4 of 12, 10 of 28, 11 of 32).

The package: :mod:`~layerwise.claims.base` (:class:`ClaimMetric`, the metric names, early layers,
formatting), :mod:`~layerwise.claims.paper_a` (A1-A6 and B6, chapters 01-03), :mod:`~layerwise.claims.paper_b`
(B1-B5, chapters 04-07), :mod:`~layerwise.claims.dynamics` (B7-B8: over denoising steps and over
training); everything is importable from ``layerwise.claims``.

Conventions: models are named (``"ar"``, ``"LLaDA-8B-Base"``...) and each has a family (``"ar"``,
``"dlm"``, ``"ar2dlm"``); where a claim compares families, the *first* model of each family (in the
order the chapter lists its subjects) is the family's representative, and every diffusion/AR pair
also gets its own per-pair metric.
"""

from .base import *  # noqa: F401,F403
from .dynamics import *  # noqa: F401,F403
from .paper_a import *  # noqa: F401,F403
from .paper_b import *  # noqa: F401,F403
