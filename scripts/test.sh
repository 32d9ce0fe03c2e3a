#!/usr/bin/env bash
# The test command: set up .venv, lint (ruff; notebooks through nbqa), run the notebooks' tests (nbdev_test,
# default flags: no slow/gpu/browser cells),
# then pytest (export/clean sync check, integration, papermill and browser tests; GPU tests skip without CUDA).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k data`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
export MPLBACKEND=Agg PYTHONHASHSEED=0
# lint first (config: [tool.ruff] in pyproject.toml); nbqa exits non-zero when ruff reports a violation
ruff check timer1_lib tests scripts
nbqa ruff nbs
nbdev_test --n_workers 2
python -m pytest tests -ra "$@"
