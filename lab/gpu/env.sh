# Source on the lent GPU machine (repo root): wheels carried in .whl/ -> /tmp/site, the project from src/.
# The GPU image has torch/transformers/accelerate; it lacks lm-eval, papermill, jupytext, ipykernel.
if [ ! -f /tmp/site/.installed ] && [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && touch /tmp/site/.installed
fi
export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export PATH=/tmp/site/bin:$PATH
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=true
export LAYERWISE_DATA_DIR=${LAYERWISE_DATA_DIR:-$PWD/.carry/data}
export LAYERWISE_CACHE_DIR=${LAYERWISE_CACHE_DIR:-$PWD/.cache/layerwise}
mkdir -p runs/logs runs/results
