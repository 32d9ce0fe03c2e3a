#!/usr/bin/env python
"""Scaled-up GRPO on the GPU machine: nbs/train.ipynb runs (papermill) side by side, one plan per call.

Every run is a plain `papermill nbs/train.ipynb` with parameters (the plans below); every run evaluates all test
items greedily (eval_limit=0), so arms are compared item by item. Results of all runs (metrics, per-step GRPO log,
per-item predictions of every evaluation) go to OUT/results.json, the tails of the logs to OUT/logs.txt.
Usage: python artifacts/bench/grpo_gpu/driver.py PLAN OUT_DIR [deadline_s]
"""
import json, os, subprocess, sys, time
from pathlib import Path

HO = 'artifacts/data/synthtvg-learn-heldout'
MAIN = dict(train_annotations='synth-train', test_annotations='synth-test')
HELD = dict(train_annotations=f'{HO}/train.json', test_annotations=f'{HO}/test.json', video_root=HO)
E = dict(eval_limit=0, eval_batch_size=64)
# the GPU configuration of GRPO: 16 prompts x G 8 = 128 completions a step, TimeRFT draw from all training items
GPU = dict(num_generations=8, prompts_per_step=16, sample_pool=0, **E)

def grpo_cfg(k, epochs, **kw): return dict(GPU, sample_k=k, num_train_epochs=epochs, **kw)

SFT_MORE = 1200   # the same-compute SFT arm: +1200 SFT steps (~ the time of the GPU GRPO phase, measured in the runs)
NOBEFORE = dict(eval_before=False)   # the untrained model's answers are not parsable (0 on every metric in every earlier run)

def main_plan(seeds=(0, 1, 2), rewards=('tiou', 'recall'), k=512, epochs=2):
    "name -> (parameters, the run whose cold-start model it starts from or None). All on the embedded SynthTVG split."
    plan = {}
    for s in seeds:
        plan[f'main_cs_s{s}'] = (dict(MAIN, seed=s, grpo=False, cold_start_steps=1000, **E, **NOBEFORE), None)
        plan[f'main_sft_s{s}'] = (dict(MAIN, seed=s, grpo=False, cold_start_steps=1000 + SFT_MORE, **E, **NOBEFORE), None)
        for r in rewards:   # eval_before: GRPO's starting point (= main_cs_s{s}'s after_coldstart, a determinism check)
            plan[f'main_grpo_{r}_s{s}'] = (grpo_cfg(k, epochs, **MAIN, seed=s, cold_start=False, reward_funcs=f'{r},format_answer'),
                                           f'main_cs_s{s}')
    return plan

def heldout_plan(seeds=(0, 1), rewards=('tiou', 'recall'), k=512, epochs=2):
    """The held-out-type split (generated on the machine; the GPU box has no PyAV, so `timer1_lib.synth` cannot write
    videos there: the split travels as files), a cold start per seed, then from its model GRPO arms and a same-compute
    SFT arm (+SFT_MORE steps). GRPO's starting point is the cold-start run's after_coldstart evaluation."""
    plan = {}
    for s in seeds:
        plan[f'ho_cs_s{s}'] = (dict(HELD, seed=s, grpo=False, cold_start_steps=1000, **E, **NOBEFORE), None)
        plan[f'ho_sft_s{s}'] = (dict(HELD, seed=s, grpo=False, cold_start_steps=SFT_MORE, **E, **NOBEFORE), f'ho_cs_s{s}')
        for r in rewards:
            plan[f'ho_grpo_{r}_s{s}'] = (grpo_cfg(k, epochs, **HELD, seed=s, cold_start=False, reward_funcs=f'{r},format_answer',
                                                  **NOBEFORE), f'ho_cs_s{s}')
    return plan

PLANS = {
    # timing probe: 8 runs at once (cold start 300 steps, 8 GRPO steps of 128 completions, 100 test items)
    'probe': {f'probe{i}': (dict(MAIN, seed=i, cold_start_steps=300, num_generations=8, prompts_per_step=16, sample_pool=256,
                                 sample_k=128, num_train_epochs=1, eval_limit=100, eval_batch_size=64,
                                 reward_funcs='tiou,format_answer' if i % 2 else 'recall,format_answer'), None) for i in range(8)},
    'main': main_plan(),
    'heldout': heldout_plan(),
    # a seconds-long check of the scheduling on a CPU (cold start -> GRPO from its model, held-out data generation)
    'smoke': {'cs': (dict(MAIN, grpo=False, cold_start_steps=2, eval_limit=3, eval_before=False), None),
              'g': (dict(MAIN, cold_start=False, num_generations=2, prompts_per_step=2, sample_pool=4, sample_k=4,
                         num_train_epochs=1, eval_limit=3, max_completion_length=16, eval_max_new_tokens=16), 'cs')},
}

def launch(name, params, scratch, logs, gpu=None):
    cmd = [sys.executable, '-m', 'papermill', 'nbs/train.ipynb', str(scratch / f'{name}.ipynb'), '--cwd', 'nbs', '--log-output',
           '-k', 'python3', '-p', 'out_dir', str(scratch / name)]
    for k, v in params.items(): cmd += ['-p', k, str(v)] if not isinstance(v, str) else ['-r', k, v]
    env = dict(os.environ, **({} if gpu is None else {'CUDA_VISIBLE_DEVICES': str(gpu)}))
    return subprocess.Popen(cmd, stdout=open(logs / f'{name}.log', 'w'), stderr=subprocess.STDOUT, env=env)

def run_plan(plan, scratch, logs, deadline, t0, ngpu=1):
    "Start every run as soon as the cold-start model it starts from is saved; kill at the deadline."
    procs, todo, k = {}, dict(plan), 0
    while (todo or any(p.poll() is None for p in procs.values())) and time.time() < deadline:
        for n, (params, after) in list(todo.items()):
            if after is not None:   # its cold-start model is complete once cold_start.json is written (its evaluation may still run)
                if after in procs and procs[after].poll() not in (None, 0): todo.pop(n); print(f'{n}: skipped ({after} failed)', flush=True); continue
                if after not in procs or not (scratch / after / 'coldstart' / 'cold_start.json').is_file(): continue
            if after is not None: params = dict(params, model_path=str(scratch / after / 'coldstart'))
            procs[n] = launch(n, params, scratch, logs, None if ngpu <= 1 else k % ngpu); k += 1; todo.pop(n)
            print(f'{n}: started at {time.time() - t0:.0f} s', flush=True)
        for n, p in procs.items():
            if p.poll() is not None and not getattr(p, 'reported', False):
                p.reported = True; print(f'{n}: exit {p.returncode} at {time.time() - t0:.0f} s', flush=True)
        time.sleep(2)
    for n, p in procs.items():
        if p.poll() is None: p.kill(); print(f'{n}: killed at the deadline', flush=True)
    for n in todo: print(f'{n}: never started', flush=True)

def _jsonl(f): return [json.loads(l) for l in f.read_text().splitlines() if l.strip()] if f.is_file() else []

def collect(names, plan, scratch, logs, out):
    res = {}
    for n in names:
        d = scratch / n
        r = dict(params=plan[n][0], start=plan[n][1])
        if (d / 'metrics.json').is_file(): r['metrics'] = json.loads((d / 'metrics.json').read_text())
        r['grpo_log'] = [{k: v for k, v in x.items() if k in ('step', 'epoch', 'reward', 'kl', 'completions/mean_length', 'step_time',
                          'frac_reward_zero_std') or k.startswith('rewards/') or k.startswith('curriculum')}
                         for x in _jsonl(d / 'grpo' / 'metrics.jsonl')]
        r['curriculum'] = _jsonl(d / 'grpo' / 'curriculum.jsonl')
        r['eval'] = {f.stem: [dict(id=x.get('id'), pred=x.get('pred'), gt=x.get('gt'), duration=x.get('duration'))
                              for x in _jsonl(f) if x.get('type') != 'config' and 'id' in x]
                     for f in sorted(d.glob('eval_*.jsonl'))}
        res[n] = r
    (out / 'results.json').write_text(json.dumps(res) + '\n')
    with open(out / 'logs.txt', 'w') as f:
        for n in names:
            lf = logs / f'{n}.log'
            if lf.is_file():
                lines = [l for l in lf.read_text(errors='replace').splitlines() if l.strip() and not l.startswith(('Executing Cell', 'Ending Cell'))
                         and '%|' not in l and 'Warning' not in l and 'warnings.warn' not in l]
                f.write(f'===== {n}\n' + '\n'.join(lines[-60:]) + '\n')

def main(plan_name, out, budget=560.0):
    t0 = time.time(); deadline = t0 + budget
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    scratch = Path(os.environ.get('SCRATCH', '/tmp/grpo_gpu')); scratch.mkdir(parents=True, exist_ok=True)
    logs = scratch / 'logs'; logs.mkdir(exist_ok=True)
    plan = PLANS[plan_name]
    import torch
    ngpu = torch.cuda.device_count()
    missing = sorted({p['video_root'] for p, _ in plan.values() if p.get('video_root') and not Path(p['video_root'], 'test.json').is_file()})
    if missing: raise FileNotFoundError(f"data not here: {missing} (carry it; see the docstrings)")
    print(f'{plan_name}: {len(plan)} runs on {ngpu} GPU(s), {os.cpu_count()} CPUs', flush=True)
    run_plan(plan, scratch, logs, deadline, t0, ngpu)
    print(f'{plan_name} done at {time.time() - t0:.0f} s', flush=True)
    collect(list(plan), plan, scratch, logs, out)
    print(f'collected at {time.time() - t0:.0f} s', flush=True)

if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 560.0)
