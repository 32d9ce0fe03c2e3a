#!/usr/bin/env bash
# Run nbs/train.ipynb headless on a GPU machine, twice: the embedded default (tiny `learn` Qwen2.5-VL on SynthTVG,
# all defaults) and a random Qwen2.5-VL-3B-shaped model (full size, bf16) for a few cold-start and GRPO steps.
# Keeps the executed notebooks, metrics.json (timings, device, peak GPU memory) and the GRPO logs under $1
# (default artifacts/bench/train_gpu); the trained weights go to a scratch folder and are not kept.
# Usage (repository root, GPU machine with papermill + ipykernel importable): bash scripts/gpu_train_bench.sh [out]
# RUNS='tiny qwen3b' (default) selects the runs; 'real' adds the 3B-shaped model on the real-data path: the bundled
# Charades video OHOFG.mp4 (35 s, Time-R1 pixel budget) and its TVGBench query as TimeRFT-format annotation files,
# video_root and a one-record cot_file, written by timer1_lib.bench.real_data_fixture (a pipeline and memory check,
# not a learning claim). PYTHON (default python3). Benchmarks in Python: python -m timer1_lib.bench --list.
set -uo pipefail
out=${1:-artifacts/bench/train_gpu}; scratch=${SCRATCH:-/tmp/timer1_gpu_bench}; runs=${RUNS:-tiny qwen3b}; py=${PYTHON:-python3}
mkdir -p "$out" "$scratch"; out=$(cd "$out" && pwd)
keep() {   # keep the small outputs of run $1
  mkdir -p "$out/$1"; cp "$scratch/$1/metrics.json" "$out/$1/"
  for f in curves.png grpo/metrics.jsonl grpo/completions.jsonl; do [ -f "$scratch/$1/$f" ] && cp "$scratch/$1/$f" "$out/$1/$(basename $f)"; done
  true
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" || true
# the tiny run is CPU-bound (video processing) and the 3B run GPU-bound: run them side by side
tiny_pid=
[[ " $runs " == *" tiny "* ]] && { ( t0=$(date +%s); papermill nbs/train.ipynb "$out/tiny.ipynb" --cwd nbs --log-output -k python3 -p out_dir "$scratch/tiny" \
    > "$scratch/tiny.log" 2>&1; rc=$?; keep tiny; echo "tiny default run: rc $rc, $(( $(date +%s) - t0 )) s" ) & tiny_pid=$!; }
if [[ " $runs " == *" qwen3b "* || " $runs " == *" real "* ]]; then
t0=$(date +%s)
$py -c "from timer1_lib.model import make_random_model, qwen_3b_config; make_random_model(qwen_3b_config(), '$scratch/qwen3b-random')"
echo "random 3B checkpoint written: $(( $(date +%s) - t0 )) s"
fi
if [[ " $runs " == *" qwen3b "* ]]; then
t0=$(date +%s)
papermill nbs/train.ipynb "$out/qwen3b.ipynb" --cwd nbs --log-output -k python3 -p out_dir "$scratch/qwen3b" \
  -p model_path "$scratch/qwen3b-random" -p think True -p cold_start_steps 4 -p sample_pool 8 -p sample_k 4 \
  -p num_train_epochs 1 -p prompts_per_step 2 -p num_generations 4 -p max_completion_length 64 -p learning_rate 1e-6 \
  -p eval_limit 8 -p eval_max_new_tokens 64
keep qwen3b; echo "3B run: $(( $(date +%s) - t0 )) s"
fi
if [[ " $runs " == *" real "* ]]; then
t0=$(date +%s); data="$scratch/real-data"
$py -c "from timer1_lib.bench import real_data_fixture; real_data_fixture('$data')"   # OHOFG.mp4 + its TVGBench query as files
papermill nbs/train.ipynb "$out/qwen3b_real.ipynb" --cwd nbs --log-output -k python3 -p out_dir "$scratch/qwen3b_real" \
  -p model_path "$scratch/qwen3b-random" -p think True -p train_annotations "$data/annotations.json" \
  -p test_annotations "$data/annotations.json" -p video_root "$data/videos" -p cot_file "$data/cot.json" \
  -p cold_start_steps 2 -p sample_pool 0 -p sample_k 1 -p num_train_epochs 2 -p prompts_per_step 1 -p num_generations 4 \
  -p max_completion_length 64 -p learning_rate 1e-6 -p eval_max_new_tokens 64
keep qwen3b_real; echo "3B real-data run: $(( $(date +%s) - t0 )) s"
fi
[ -n "$tiny_pid" ] && { wait $tiny_pid; tail -n 25 "$scratch/tiny.log"; }
true
