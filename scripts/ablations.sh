#!/usr/bin/env bash
# The ablations of EXPERIMENTS.md: one learning-benchmark run (scripts/learn.sh) per setting, at
# an equal budget of 4,800 samples, one after another (about 20 to 40 minutes each on two cores).
#
#   bash scripts/ablations.sh [OUT_PREFIX]      (default runs/ablate-; logs in OUT_PREFIXNAME.log)
set -uo pipefail
cd "$(dirname "$0")/.."
prefix="${1:-runs/ablate-}"
common=(--set train.total_samples=4800 --set train.val_every=1600 --set train.checkpoint_every=1600)
run() {
  name=$1; shift
  bash scripts/learn.sh "$prefix$name" "${common[@]}" "$@" > "$prefix$name.log" 2>&1
  echo "$name: exit $?"
}
run base --steps 32 --steps 128
run vmse --set 'diffusion.weighting={kind="v_mse"}'
run epsmse --set 'diffusion.weighting={kind="eps_mse"}'
run no-temporal --set 'model.temporal=[]'
run bias0 --set 'diffusion.weighting={kind="sigmoid",bias=0.0,jacobian=true}'
run level1-joint --set 'model.kinds=["res","transformer","transformer"]' --set 'model.temporal=[true,false,false]'
python3 scripts/learn_table.py "$prefix"*/
