#!/usr/bin/env bash
# A sweep on the lent GPU machine's CPUs (tiny runs are CPU-bound), run through the device tool from the repository
# root with `.whl/` carried: the wheels the machine lacks and *.tar.gz of the data the specs read (relative to the
# repository root, e.g. artifacts/data/synthtvg-learn-heldout + artifacts/models/tiny-learn):
#   bash scripts/device_sweep.sh SPEC[:PARALLEL][,SPEC2[:PARALLEL2]...] BUDGET_S [-- command to run on the GPU meanwhile]
# (several specs run side by side). Continues an earlier call's sweep when .whl/<spec>_runs.tgz is carried (its run folders without weights: finished
# rows stay finished; cold starts without weights are dropped so that rows still to run re-make them). Leaves
# $OUT/<spec>_runs.tgz (every run folder, no weights), $OUT/<spec>_log.txt and, with a GPU command, $OUT/gpu_log.txt.
set -uo pipefail
specs=$1; budget=$2; shift 2; [ "${1:-}" = "--" ] && shift
out=${OUT:-/tmp/out}; mkdir -p "$out"
for t in .whl/*.tar.gz; do tar xzf "$t" || exit 1; done
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 -c "import sys, torch, transformers, trl, datasets, decord, timer1_lib.train; print(sys.version.split()[0], \
  'torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__)" || exit 1
if [ $# -gt 0 ]; then (taskset -c 15 "$@" > "$out/gpu_log.txt" 2>&1; echo "[gpu] exit $?" >> "$out/gpu_log.txt") & fi
sweep() {   # spec parallel
  local spec=$1 par=$2 dir=artifacts/bench/ablations/$1
  if [ -f ".whl/${spec}_runs.tgz" ]; then
    mkdir -p "$dir" && tar xzf ".whl/${spec}_runs.tgz" -C "$dir"
    for d in "$dir"/runs/cs_*; do [ -e "$d/coldstart/model.safetensors" ] || rm -rf "$d"; done
  fi
  taskset -c 0-14 python3 -m timer1_lib.sweep "$spec" ${par:+--parallel "$par"} --budget_s "$budget" --out_dir "$dir" \
    > "$out/${spec}_log.txt" 2>&1
  echo "[sweep] exit $?" >> "$out/${spec}_log.txt"
  python3 -m timer1_lib.sweep "$dir" --table-only >> "$out/${spec}_log.txt" 2>&1
  tar czf "$out/${spec}_runs.tgz" -C "$dir" --exclude='*.safetensors' --exclude='*/trainer' --exclude='checkpoint-*' \
    --exclude='*.pt' --exclude='*.bin' .
}
for sp in ${specs//,/ }; do sweep "${sp%%:*}" "$(echo "$sp" | grep -o ':.*' | tr -d :)" & done
wait
ls -la "$out"
