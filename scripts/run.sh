#!/usr/bin/env bash
# The main job: set up .venv, then run the training notebook headless on the embedded default
# (tiny Qwen2.5-VL on SynthTVG, CPU). Extra arguments go to papermill, e.g. `-p max_steps 50`.
# Until nbs/train.ipynb exists, the main job is nbs/evaluate.ipynb on the embedded default
# (the tiny model on the SynthTVG test split).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
export MPLBACKEND=Agg
run="artifacts/runs/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$run"
if [ -f nbs/train.ipynb ]; then
  papermill nbs/train.ipynb "$run/train.ipynb" --cwd nbs --log-output -p out_dir "$PWD/$run" "$@"
else
  papermill nbs/evaluate.ipynb "$run/evaluate.ipynb" --cwd nbs --log-output -p out_dir "$PWD/$run" "$@"
fi
echo "[timer1] run folder: $run"
