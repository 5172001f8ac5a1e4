# Sourced by lab/gpu/hold.sh (defines step; outputs under runs/, which a device call does not re-sync).
R=runs/results
SETS="--set d_model=256 --set n_layers=8 --set n_heads=4 --set d_mlp=704 --set arith_frac=0.5 --set tokens=600000000 --set ckpt_every=1000"
# lane B (CPU): assemble the training corpus (two parts, carried by the next two calls), then prepare the data
(
  SHA=4c742519967853d5651b23753ea4a01ea4aae4edbb17e163dad8bdef90dee660
  F=.carry/data/corpus/gutenberg-train-200MB.txt.xz
  mkdir -p .carry/data/corpus
  echo "=== waiting for the corpus $(date -u +%T)"
  until [ "$(sha256sum $F 2>/dev/null | cut -c1-64)" = "$SHA" ]; do
    sleep 5; cat .carry/trainA/train_part_aa .carry/trainB/train_part_ab > $F 2>/dev/null
  done
  echo "=== corpus ok $(date -u +%T)"
  step data_prep 400 python3 -c "
from layerwise import data as D, training as T
p = T.get_preset('gpu', d_model=256, n_layers=8, n_heads=4, d_mlp=704, arith_frac=0.5, tokens=600000000)
D.prepare(p.data, progress=False); print('prepared')"
) & laneB=$!
step paper_profile 480 python3 benchmarks/bench_paper_profile.py --remote-code .carry/remote_code \
  --out $R/paper_profile --costs $R/paper_profile_costs.json
wait $laneB
step triplet_design 1080 python3 benchmarks/bench_triplet_design.py --preset gpu $SETS --out $R/triplet_design
step llada_reference 240 python3 benchmarks/bench_llada_reference.py --remote-code .carry/remote_code \
  --batches 32 --time-blocks 1 --sliced-head --cuda-graph --batch1-rows 2 --out $R/llada_reference_options
D=$(ls -d .cache/layerwise/triplet/gpu-*/dlm 2>/dev/null | head -1); A=${D%/dlm}/ar2dlm
step mc_se 150 python3 benchmarks/bench_mc_se.py --models $D $A --data-dir .carry/data \
  --cache-dir .cache/layerwise --device cuda --limit 100 --targets 0.5,0.1 --out $R/mc_se
