#!/usr/bin/env python
"""GRPO vs more SFT from one cold-start checkpoint, with nbs/train.ipynb runs (papermill) side by side on one machine.

Stage 1: two cold starts (grpo=False): `cs_main` on SynthTVG `learn` (the embedded default split) and `cs_ho` on a
split with 'Object Existence (Complex)' held out of training (`artifacts/data/synthtvg-learn-heldout`).
Stage 2: from each cold-start model, GRPO variants (cold_start=False, grpo=True) and an SFT arm (more cold-start steps,
grpo=False); every run evaluates all test items (eval_limit=0), so the arms are paired item by item.
Usage: python artifacts/bench/grpo_vs_sft/driver.py OUT_DIR [deadline_s]   (OUT_DIR/results.json, OUT_DIR/logs.txt)
"""
import json, os, subprocess, sys, time
from pathlib import Path

HO = 'artifacts/data/synthtvg-learn-heldout'
MAIN = dict(train_annotations='synth-train', test_annotations='synth-test')
HELD = dict(train_annotations=f'{HO}/train.json', test_annotations=f'{HO}/test.json', video_root=HO)
E = dict(eval_limit=0, eval_batch_size=64)                       # every test item, paired across runs
# stage 1: full default runs (cold start + GRPO) for 3 seeds; same-compute SFT arms from scratch (1000 + 300 cold-start
# steps, no GRPO); the cold start of the held-out split (+ its same-compute SFT arm)
STAGE1 = {**{f'main_s{s}': dict(MAIN, seed=s, **E) for s in range(3)},
          **{f'main_sft1300_s{s}': dict(MAIN, seed=s, grpo=False, cold_start_steps=1300, **E) for s in range(3)},
          'cs_ho': dict(HELD, grpo=False, cold_start_steps=1000, **E),
          'ho_sft1300': dict(HELD, grpo=False, cold_start_steps=1300, **E)}
def grpo(**kw): return dict(cold_start=False, grpo=True, **E, **kw)
STAGE2 = {   # name: (cold-start run, parameters): from the held-out split's cold-start model
    'ho_grpo_s0': ('cs_ho', grpo(**HELD, seed=0)),
    'ho_grpo_s1': ('cs_ho', grpo(**HELD, seed=1)),
    'ho_sft_more300': ('cs_ho', dict(HELD, cold_start=True, grpo=False, cold_start_steps=300, **E)),
}

def launch(name, params, scratch, logs):
    cmd = ['papermill', 'nbs/train.ipynb', str(scratch / f'{name}.ipynb'), '--cwd', 'nbs', '--log-output', '-k', 'python3',
           '-p', 'out_dir', str(scratch / name)]
    for k, v in params.items(): cmd += ['-p', k, str(v)] if not isinstance(v, str) else ['-r', k, v]
    return subprocess.Popen(cmd, stdout=open(logs / f'{name}.log', 'w'), stderr=subprocess.STDOUT)

def wait(procs, deadline):
    while any(p.poll() is None for p in procs.values()) and time.time() < deadline: time.sleep(2)
    for n, p in procs.items():
        if p.poll() is None: p.kill(); print(f'{n}: killed at the deadline', flush=True)

def main(out, budget=560.0):
    t0 = time.time(); deadline = t0 + budget
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    scratch = Path(os.environ.get('SCRATCH', '/tmp/grpo_vs_sft')); scratch.mkdir(parents=True, exist_ok=True)
    logs = scratch / 'logs'; logs.mkdir(exist_ok=True)
    p1 = {n: launch(n, p, scratch, logs) for n, p in STAGE1.items()}
    wait(p1, deadline)
    print(f'stage 1 done at {time.time() - t0:.0f} s', flush=True)
    p2 = {}
    for n, (cs, p) in STAGE2.items():
        if p1[cs].returncode == 0 and time.time() < deadline - 60: p2[n] = launch(n, dict(p, model_path=str(scratch / cs / 'coldstart')), scratch, logs)
    wait(p2, deadline)
    print(f'stage 2 done at {time.time() - t0:.0f} s', flush=True)
    res = {}
    for n in [*STAGE1, *STAGE2]:
        d = scratch / n
        r = dict(params=STAGE1.get(n) or dict(STAGE2[n][1], start=STAGE2[n][0]))
        if (d / 'metrics.json').is_file(): r['metrics'] = json.loads((d / 'metrics.json').read_text())
        ev = {}
        for f in sorted(d.glob('eval_*.jsonl')):   # per-item predictions: the paired comparison
            recs = [json.loads(l) for l in f.read_text().splitlines() if l.strip()]
            ev[f.stem] = [dict(id=x.get('id'), pred=x.get('pred'), gt=x.get('gt'), qtype=x.get('qtype')) for x in recs if x.get('type') != 'config']
        r['eval'] = ev
        res[n] = r
    (out / 'results.json').write_text(json.dumps(res) + '\n')
    with open(out / 'logs.txt', 'w') as f:
        for n in [*STAGE1, *STAGE2]:
            lf = logs / f'{n}.log'
            if lf.is_file():
                lines = [l for l in lf.read_text(errors='replace').splitlines() if l.strip() and not l.startswith(('Executing Cell', 'Ending Cell'))
                         and '%|' not in l]
                f.write(f'===== {n}\n' + '\n'.join(lines[-40:]) + '\n')
    print(f'done in {time.time() - t0:.0f} s', flush=True)

if __name__ == '__main__':
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 560.0)
