#!/usr/bin/env bash
# The main job: set up .venv, then run the training notebook headless on the embedded default
# (tiny Qwen2.5-VL on SynthTVG `learn`, CPU). Extra arguments go to papermill, e.g. `-p seed 1 -p num_train_epochs 2`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
export MPLBACKEND=Agg
run="artifacts/runs/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$run"
papermill nbs/train.ipynb "$run/train.ipynb" --cwd nbs --log-output -p out_dir "$PWD/$run" "$@"
echo "[timer1] run folder: $run"
