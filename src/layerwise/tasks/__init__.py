"""lm-eval task templates for the offline data (``lw_*.yaml``) and their helper functions (``utils``).

The YAMLs are templates: :func:`layerwise.evals.render_tasks` fills in absolute data paths and
copies ``utils.py`` beside them, where lm-eval's ``!function utils.<name>`` finds it.
"""
