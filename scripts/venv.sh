#!/usr/bin/env bash
# Create or update the project virtualenv (.venv) with timer1 and its dev tools. Sourced by run.sh and test.sh.
# Re-installs only when pyproject.toml changed since the last install (hash stamp in .venv/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), f"timer1 needs Python >= 3.10, found {sys.version}"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.timer1-installed
want=$(cat pyproject.toml settings.ini | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[timer1] installing into .venv (first time: a few minutes; torch is large)" >&2
  # torch's CUDA build alone is ~5.5 GB: say so plainly instead of failing half-way with "No space left on device"
  free_gb=$("$PY" -c 'import shutil; print(shutil.disk_usage(".").free // 2**30)')
  df -h . >&2
  if [ "$free_gb" -lt "${TIMER1_MIN_FREE_GB:-8}" ]; then
    echo "[timer1] only ${free_gb} GiB free on $(pwd): .venv needs about 7 GiB (set TIMER1_MIN_FREE_GB to override)" >&2
    exit 1
  fi
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  .venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
  echo "$want" > "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
