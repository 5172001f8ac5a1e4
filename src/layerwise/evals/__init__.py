"""Evaluation on lm-eval 0.4.x: a wrapper around an already-loaded model, the project's offline
tasks, and retention under interventions with paired-bootstrap confidence intervals.

Three pieces:

- :class:`LayerwiseLM`, an lm-eval ``LM`` around a :class:`~layerwise.models.LoadedModel` that is
  already in memory, so that whatever was done to it in place (blocks skipped, channels ablated,
  weights quantised) is what lm-eval scores. Autoregressive and masked-diffusion families go through
  :mod:`layerwise.sampling`: exact log-likelihood or the Monte-Carlo estimate, AR decoding or the
  diffusion sampler, rolling log-likelihood or its ELBO.
- Local task YAMLs (``layerwise/tasks/lw_*.yaml``) for the offline data in the data directory,
  rendered at run time with absolute paths (lm-eval's ``data_files`` must be absolute) and
  registered through ``TaskManager(include_path=...)``. Names: see :data:`LOCAL_TASKS`. Any other
  name goes to lm-eval's own registry unchanged (needs hub access for its dataset).
- :func:`retention`: the unmodified model and each intervention on the same items, every metric as a
  fraction of the unmodified model, a paired bootstrap interval, and a flag for baselines that are
  not significantly above chance (retaining chance-level accuracy means nothing). The statistics
  themselves (bootstrap, binomial test, ratios) are :mod:`layerwise.stats`.
"""


from .lm import (
    Backend,
    LayerwiseLM,
    cut_at_stops,
)
from .run import (
    ContextManagerFactory,
    evaluate,
    retention,
    retention_table,
)
from .tasks import (
    CODE_EVAL_ENV,
    GUTENBERG_HELDOUT,
    HEADLINE_METRICS,
    LOCAL_TASKS,
    PAPER_FEWSHOT,
    PIQA_FILES,
    STORY_ITEMS,
    TASKS_DIR,
    LocalTask,
    TaskParams,
    TaskSet,
    load_tasks,
    render_tasks,
    set_offline,
)

__all__ = [
    "Backend",
    "CODE_EVAL_ENV",
    "ContextManagerFactory",
    "GUTENBERG_HELDOUT",
    "HEADLINE_METRICS",
    "LOCAL_TASKS",
    "LayerwiseLM",
    "LocalTask",
    "PAPER_FEWSHOT",
    "PIQA_FILES",
    "STORY_ITEMS",
    "TASKS_DIR",
    "TaskParams",
    "TaskSet",
    "cut_at_stops",
    "evaluate",
    "load_tasks",
    "render_tasks",
    "retention",
    "retention_table",
    "set_offline",
]
