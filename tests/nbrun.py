"""Run a user-facing notebook headless with papermill, as a researcher would, and find the cell that failed."""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_papermill(nb: Path, out: Path, params: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    "`papermill nb out --cwd nbs -p k v ...` in a subprocess (outside nbdev_test's IN_TEST smoke mode)."
    args = [sys.executable, '-m', 'papermill', str(nb), str(out), '--cwd', str(ROOT / 'nbs'), '--no-progress-bar']
    for k, v in params.items(): args += ['-p', k, str(v)]
    env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'} | {'MPLBACKEND': 'Agg'}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)


def error_cell(nb_path: Path):
    "(index among code cells, ename, evalue) of the cell that raised, or None."
    nb = json.loads(Path(nb_path).read_text())
    code = [c for c in nb['cells'] if c['cell_type'] == 'code']
    for i, c in enumerate(code):
        for o in c.get('outputs', []):
            if o.get('output_type') == 'error': return i, o['ename'], o['evalue']
    return None
