"""layerwise: how diffusion and autoregressive language models differ layer by layer.

One module per responsibility (see the book's intro):

- ``config``: data/cache/benchmark directories (arguments or environment), device selection, the error type.
- ``arch``: one module per architecture (layer adapter, forward quirks, load-time fixes, config
  checks), detected from a checkpoint's config; the adapters every other module goes through.
- ``models``: the hub-id registry of per-model facts, ``load()`` and ``wrap()``.
- ``data``: synthetic and Gutenberg corpora, the arithmetic task, tokenizer, token cache, packing.
- ``training``: the controlled triplet (ar / dlm / ar2dlm) and its presets.
- ``sampling``: AR and masked-diffusion generation, exact and Monte-Carlo likelihoods.
- ``probes``: streaming hidden-state statistics (layer/token similarity, channel magnitudes).
- ``skipping``: reversible static layer skipping and block-selection strategies.
- ``ablation``: reversible channel ablation hooks.
- ``spectra``: alpha-Hill estimates of weight spectra.
- ``compress``: GPTQ, magnitude/Wanda/SparseGPT pruning, layer-wise sparsity allocation.
- ``evals``: lm-eval integration, local offline tasks, retention with confidence intervals.
- ``stats``: bootstrap intervals, Wilson intervals, binomial tests, retention ratios.
- ``claims``: the papers' claims as functions (one per ledger metric), early layers.
- ``results`` / ``ledger``: result files with provenance; the claims ledger's verdicts.
- ``params``: the typed schema of a chapter's parameters (common fields, types from defaults).
- ``book``: the papermill runner and the jupyter-book build (package: chapters, runner, site, CLI).
- ``plots``: the book's shared figure style.
"""

__version__ = "0.1.0"
