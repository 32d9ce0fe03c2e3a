#!/usr/bin/env python
"""Run several learnability.py configurations as parallel processes (one CPU thread each; `--device cuda` ones share
the GPU). Usage: python sweep.py SWEEP.json OUT_DIR [deadline_s]. SWEEP.json: {"name": ["--arg", "value", ...], ...}.
Writes OUT_DIR/results.jsonl (one summary per finished run) and OUT_DIR/logs.txt (all logs, by run)."""
import json, os, subprocess, sys, time
from pathlib import Path

def main(spec, out, deadline=580.0):
    runs = json.loads(Path(spec).read_text())
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).resolve().parent
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false',
           'PYTHONUNBUFFERED': '1'}
    logs, procs, t0 = Path('/tmp/learnability_logs'), {}, time.time()
    logs.mkdir(exist_ok=True)
    for name, argv in runs.items():
        cmd = [sys.executable, str(here / 'learnability.py'), '--name', name, '--out', str(out / 'results.jsonl'), *argv]
        procs[name] = subprocess.Popen(cmd, stdout=open(logs / f'{name}.log', 'w'), stderr=subprocess.STDOUT, env=env)
    while any(p.poll() is None for p in procs.values()) and time.time() - t0 < deadline:
        time.sleep(2)
    for name, p in procs.items():
        if p.poll() is None: p.kill(); print(f'{name}: killed at the deadline')
    with open(out / 'logs.txt', 'w') as f:
        for name in procs:
            txt = (logs / f'{name}.log').read_text(errors='replace')
            lines = [l for l in txt.splitlines() if not l.startswith(('Writing', 'Loading'))]
            f.write(f'===== {name} (rc {procs[name].returncode})\n' + '\n'.join(lines[-60:]) + '\n')
    print(f'sweep done in {time.time() - t0:.0f}s; ' + ', '.join(f'{n}:{p.returncode}' for n, p in procs.items()))

if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 580.0)
