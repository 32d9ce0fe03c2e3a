#!/usr/bin/env bash
# The test command: set up .venv, run the notebooks' tests (nbdev_test, default flags: no slow/gpu/browser cells),
# then pytest (export/clean sync check, integration, papermill and browser tests; GPU tests skip without CUDA).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k data`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
export MPLBACKEND=Agg PYTHONHASHSEED=0
nbdev_test --n_workers 2
python -m pytest tests -ra "$@"
