"""Scale-out (#15): `accelerate launch` of 2 gloo processes on the CPU (`timer1_lib/assets/accelerate/cpu.yaml`)
against 1 process, on the tiny model.

(1) a 2-process GRPO run on fixed rollouts (`scale_harness.py`: every completion a function of its prompt and its
index in the group, so that both runs see the same batch) gives the 1-process losses, rewards, KL and updated
weights, the same on both ranks; (2) the curriculum's kept and dropped items are identical on both ranks and equal
the 1-process run's; (3) a sharded `python -m timer1_lib.evaluate` gives exactly the 1-process predictions (greedy)
and metrics, and resumes from what an interrupted run left (merged file and rank files) without duplicates or
losses; (4) a 2-process run killed mid-epoch resumes with 1 process and ends with the uninterrupted run's weights
and curriculum. Also: the notebook's `num_gpus=2`, the accelerate configs, and ZeRO-3 without DeepSpeed.
`TIMER1_SCALE_EVIDENCE=<file.json>` writes the measured differences (artifacts/bench/scale/)."""
import datetime, importlib.util, json, os, platform, signal, subprocess, sys, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / 'tests' / 'scale_harness.py'
CPU_CFG = ROOT / 'timer1_lib' / 'assets' / 'accelerate' / 'cpu.yaml'
LAUNCH2 = [sys.executable, '-m', 'accelerate.commands.launch', '--config_file', str(CPU_CFG), '--num_processes', '2']
# 8 items, 2 prompts x G=2 a step: epoch 1 = 4 steps; drop IoU > 0.01 leaves 5 items: epoch 2 = 2 steps
# (GRPO starts from `base` itself: no cold start, so both runs start from the same weights)
FLAGS = ['--preset', 'smoke', '--eval_limit', '8', '--eval_batch_size', '2', '--sample_k', '8', '--sample_pool', '8',
         '--num_train_epochs', '2', '--cold_start', 'false', '--drop_iou', '0.01', '--qa_limit', '4',
         '--learning_rate', '1e-5']
EVIDENCE: dict = {}


def _env():
    return {k: v for k, v in os.environ.items() if k != 'IN_TEST'} | {'MPLBACKEND': 'Agg', 'OMP_NUM_THREADS': '1'}


def _json(p): return json.loads(Path(p).read_text())
def _jsonl(p): return [json.loads(x) for x in Path(p).read_text().splitlines() if x.strip()]
def _nosec(recs): return [{k: v for k, v in r.items() if k != 'seconds'} for r in recs]


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    ("The tiny `test` model after 80 + 2 cold-start steps: it answers in the format, with IoUs just above 0, so that "
     "the curriculum drops some items (IoU > 0.01) after GRPO's first epoch and keeps the others.")
    from timer1_lib.model import make_tiny_model
    from timer1_lib.train import TrainConfig, run_training
    d = tmp_path_factory.mktemp('scale')
    model = make_tiny_model(d / 'tiny', size='test')
    for i, (steps, lr) in enumerate([(80, 3e-3), (2, 1e-5)]):
        model = run_training(TrainConfig.preset('smoke', model_path=str(model), out_dir=str(d / f'base{i}'),
                                                grpo=False, cold_start_steps=steps, cold_start_lr=lr,
                                                eval_before=False, eval_limit=1, qa_annotations='')).model_dir
    return d, model


def _harness(n: int, dump: Path, out: Path, model, *extra, pause: int = 0, wait: bool = True):
    cmd = ([*LAUNCH2] if n == 2 else [sys.executable]) + [str(HARNESS), '--dump', str(dump)]
    cmd += (['--pause_at_step', str(pause)] if pause else []) + ['--', *FLAGS, '--model_path', str(model),
                                                                  '--out_dir', str(out), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                            start_new_session=True)
    if not wait: return proc
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-4000:]
    return log


@pytest.fixture(scope='module')
def runs(base):
    d, model = base
    t0 = time.perf_counter(); _harness(1, d / 'dump1', d / 'run1', model); t1 = time.perf_counter()
    _harness(2, d / 'dump2', d / 'run2', model); t2 = time.perf_counter()
    EVIDENCE['seconds'] = {'one_process_run': round(t1 - t0, 1), 'two_process_run': round(t2 - t1, 1)}
    return d, model


def _weights(p):
    import torch
    return torch.load(p, weights_only=True)


def _max_diff(a, b) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_two_processes_train_like_one(runs):
    "(1) Same rollouts -> same rewards, advantages, loss, KL and weights; both ranks hold the same weights."
    d = runs[0]
    one, r0, r1 = (_json(d / p) for p in ('dump1/rank0.json', 'dump2/rank0.json', 'dump2/rank1.json'))
    assert (one['world'], r0['world'], r1['world']) == (1, 2, 2)
    steps = lambda r, k: [h[k] for h in r['log_history'] if 'loss' in h]
    assert len(steps(one, 'loss')) == len(steps(r0, 'loss')) == 6
    assert steps(one, 'reward') == steps(r0, 'reward') == steps(r1, 'reward')      # same rollouts, exactly
    assert steps(one, 'reward_std') == steps(r0, 'reward_std')                     # the groups' spread: gathered
    dloss = max(abs(a - b) for a, b in zip(steps(one, 'loss'), steps(r0, 'loss')))
    dkl = max(abs(a - b) for a, b in zip(steps(one, 'kl'), steps(r0, 'kl')))
    assert dloss < 1e-5 and dkl < 1e-5, (dloss, dkl)
    w1, w2a, w2b = (_weights(d / p) for p in ('dump1/rank0.pt', 'dump2/rank0.pt', 'dump2/rank1.pt'))
    assert _max_diff(w2a, w2b) == 0.0                                              # DDP: one update on both ranks
    w0 = _weights(d / 'dump1' / 'rank0_start.pt')                                  # GRPO's starting weights ...
    assert _max_diff(w0, _weights(d / 'dump2' / 'rank0_start.pt')) == 0.0          # ... the same in both runs
    update = _max_diff(w1, w0)
    dw = _max_diff(w1, w2a)
    assert dw < 0.05 * update, (dw, update)    # rounding only (Adam can amplify it on near-zero gradients)
    # the pipeline around it: the same evaluations, one metrics.json, one log line a step
    m1, m2 = _json(d / 'run1' / 'metrics.json'), _json(d / 'run2' / 'metrics.json')
    drop = lambda m: {k: {q: v for q, v in x.items() if q != 'seconds'} for k, x in m['metrics'].items()}
    assert drop(m1) == drop(m2) and m2['config']['num_processes'] == 2 and m2['device']['processes'] == 2
    for phase in ('before', 'after_grpo'):
        assert _nosec(_jsonl(d / 'run1' / f'eval_{phase}.jsonl')[1:]) == \
            _nosec(_jsonl(d / 'run2' / f'eval_{phase}.jsonl')[1:]), phase
    assert [r['step'] for r in _jsonl(d / 'run2' / 'grpo' / 'metrics.jsonl')] == \
        [r['step'] for r in _jsonl(d / 'run1' / 'grpo' / 'metrics.jsonl')]          # written once, not per rank
    assert _json(d / 'run2' / 'grpo' / 'run_config.json')['per_device_train_batch_size'] == 2   # 4 / 2 processes
    assert sorted(p.name for p in (d / 'run2' / 'grpo').glob('checkpoint-*')) == ['checkpoint-4', 'checkpoint-6']
    assert not list((d / 'run2').rglob('*.rank*.jsonl'))                            # every rank file merged
    EVIDENCE['grpo'] = dict(steps=len(steps(one, 'loss')), max_abs_delta_loss=dloss, max_abs_delta_kl=dkl,
                            rewards_identical=True, max_abs_delta_weight=dw, max_abs_weight_update=update,
                            max_abs_delta_weight_between_ranks=0.0,
                            losses_1proc=steps(one, 'loss'), losses_2proc=steps(r0, 'loss'))


def test_curriculum_identical_on_every_rank(runs):
    "(2) The per-epoch filtering keeps and drops the same items on both ranks, and the same as one process."
    d = runs[0]
    one, r0, r1 = (_json(d / p)['curriculum'] for p in ('dump1/rank0.json', 'dump2/rank0.json', 'dump2/rank1.json'))
    for k in ('remaining', 'dropped', 'epoch', 'epoch_start_step'):
        assert one[k] == r0[k] == r1[k], k
    assert [{k: v for k, v in h.items() if k != 'seconds'} for h in one['history']] == \
        [{k: v for k, v in h.items() if k != 'seconds'} for h in r0['history']]
    assert len(one['dropped'][0]) == 3 and len(one['remaining']) == 5           # the check is not vacuous
    assert _json(d / 'run2' / 'grpo' / 'curriculum_state.json')['remaining'] == one['remaining']
    s1, s2 = (_nosec(_jsonl(d / r / 'grpo' / 'curriculum' / 'scores_epoch1.jsonl')[1:]) for r in ('run1', 'run2'))
    assert s1 == s2                                                             # the sharded re-scoring, merged
    EVIDENCE['curriculum'] = dict(identical_on_ranks_and_to_1proc=True, dropped_after_epoch1=sorted(one['dropped'][0]),
                                  remaining=len(one['remaining']))


def _evaluate(n: int, ckpt, out: Path):
    cmd = ([*LAUNCH2] if n == 2 else [sys.executable]) + [
        '-m', 'timer1_lib.evaluate', '--checkpoints', str(ckpt), '--datasets', 'synth-test', 'synth-qa',
        '--limit', '6', '--batch_size', '2', '--max_new_tokens', '16', '--out_dir', str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r


def test_sharded_evaluation_equals_one_process(runs):
    "(3) Evaluation split over 2 processes = 1 process, exactly; resumable from merged and rank files."
    d = runs[0]
    model = d / 'run1' / 'model'
    _evaluate(1, model, d / 'ev1'); _evaluate(2, model, d / 'ev2')
    files = sorted(p.relative_to(d / 'ev1') for p in (d / 'ev1').rglob('predictions.jsonl'))
    assert len(files) == 2
    for f in files:
        a, b = _jsonl(d / 'ev1' / f), _jsonl(d / 'ev2' / f)
        assert a[0] == b[0] and _nosec(a[1:]) == _nosec(b[1:]) and len(a) == 7, f   # header + 6 items, same order
    assert _json(d / 'ev1' / 'metrics.json')['results'] == _json(d / 'ev2' / 'metrics.json')['results']
    # an interrupted sharded run: the merged file holds 2 items, rank 1's file one more, rank 0's a torn line
    f = d / 'ev2' / files[0]
    lines = f.read_text().splitlines(keepends=True)
    f.write_text(''.join(lines[:3]))
    f.with_name('predictions.rank1.jsonl').write_text(lines[0] + lines[4])
    f.with_name('predictions.rank0.jsonl').write_text(lines[0] + lines[5][:40])
    (d / 'ev2' / 'metrics.json').unlink()
    _evaluate(2, model, d / 'ev2')
    again = _jsonl(f)
    assert [r["id"] for r in again[1:]] == [r["id"] for r in _jsonl(d / "ev1" / files[0])[1:]]   # once each
    kept = {r['id']: r['seconds'] for r in map(json.loads, (lines[1], lines[2], lines[4]))}
    assert {r['id']: r['seconds'] for r in again[1:] if r['id'] in kept} == kept       # reused, not predicted again
    assert _nosec(again[1:]) == _nosec(_jsonl(d / 'ev1' / files[0])[1:]) and not list(f.parent.glob('*.rank*'))
    assert _json(d / 'ev1' / 'metrics.json')['results'] == _json(d / 'ev2' / 'metrics.json')['results']
    EVIDENCE['evaluation'] = dict(items=6, datasets=['synth-test', 'synth-qa'], predictions_identical=True,
                                  metrics_identical=True, resumed_without_duplicates=True,
                                  metrics=_json(d / 'ev1' / 'metrics.json')['results'])


def test_killed_two_process_run_resumes_with_one(runs):
    "(4) SIGKILL a 2-process run mid-epoch 2 (after checkpoint-4), resume it with 1 process: the uninterrupted run."
    d, model = runs
    out, dump = d / 'run_kill', d / 'dump_kill'
    proc = _harness(2, dump, out, model, pause=5, wait=False)
    try:
        t0 = time.monotonic()
        while not all((dump / f'paused{r}').is_file() for r in (0, 1)):
            assert proc.poll() is None, proc.stdout.read()[-4000:]
            assert time.monotonic() - t0 < 400, 'never reached step 5'
            time.sleep(0.2)
    finally:
        import psutil                                        # accelerate's dependency
        # the launcher and every process under it (torchrun starts the ranks in their own process groups)
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for p in tree:
            try: p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess: pass
        proc.wait(timeout=60)
        assert not psutil.wait_procs(tree, timeout=60)[1], 'processes of the killed run still alive'
    assert not (out / 'grpo' / 'checkpoint-6').exists() and (out / 'grpo' / 'checkpoint-4').is_dir()
    log = _harness(1, d / 'dump_resumed', out, model, '--resume_from_checkpoint', 'latest')
    m = _json(out / 'metrics.json')
    assert m['grpo']['resumed_from'] == str(out / 'grpo' / 'checkpoint-4') and m['grpo']['global_step'] == 6
    assert m['config']['num_processes'] == 1 and '[grpo] step 6' in log
    res, ref = _json(d / 'dump_resumed' / 'rank0.json'), _json(d / 'dump1' / 'rank0.json')
    for k in ('remaining', 'dropped', 'epoch'): assert res['curriculum'][k] == ref['curriculum'][k], k
    w1 = _weights(d / 'dump1' / 'rank0.pt')
    dw = _max_diff(w1, _weights(d / 'dump_resumed' / 'rank0.pt'))
    assert dw < 0.05 * _max_diff(w1, _weights(d / 'dump1' / 'rank0_start.pt')), dw
    EVIDENCE['resume'] = dict(killed_at_step=5, resumed_from='checkpoint-4 (2 processes)', resumed_with_processes=1,
                              final_step=6, curriculum_identical=True, max_abs_delta_weight_vs_uninterrupted=dw)


def test_notebook_num_gpus_launches(tmp_path, runs):
    "nbs/train.ipynb with num_gpus=2: the run is an accelerate subprocess whose log streams into the notebook."
    from nbrun import run_papermill
    run, out = tmp_path / 'run', tmp_path / 'out.ipynb'
    params = dict(preset='smoke', model_path=str(runs[1]), out_dir=str(run), num_gpus=2, eval_limit=4,
                  qa_limit=4, sample_k=4, sample_pool=4, num_train_epochs=1, cold_start_steps=2)
    res = run_papermill(ROOT / 'nbs' / 'train.ipynb', out, params)
    assert res.returncode == 0, res.stderr[-3000:]
    m = _json(run / 'metrics.json')
    assert m['device']['processes'] == 2 and m['grpo']['global_step'] == 2 and (run / 'launch_config.yaml').is_file()
    text = ''.join(''.join(o.get('text', '')) for c in _json(out)['cells'] for o in c.get('outputs', []))
    assert '[launch] 2 processes (cpu)' in text and '[grpo] step 2' in text and 'after GRPO' in text


def test_accelerate_configs():
    "The shipped configs parse as accelerate configs of the intended kind (FSDP2, ZeRO-3, DDP, CPU)."
    from accelerate.commands.config.config_args import load_config_from_file
    from timer1_lib.train import ACCELERATE_CONFIGS
    base = ROOT / 'timer1_lib' / 'assets' / 'accelerate'
    kinds = {n: load_config_from_file(str(base / f'{n}.yaml')) for n in ACCELERATE_CONFIGS}
    assert kinds['fsdp2'].distributed_type == 'FSDP' and kinds['fsdp2'].fsdp_config['fsdp_version'] == 2
    assert kinds['fsdp2'].fsdp_config['fsdp_state_dict_type'] == 'FULL_STATE_DICT'
    assert kinds['zero3'].distributed_type == 'DEEPSPEED' and kinds['zero3'].deepspeed_config['zero_stage'] == 3
    assert kinds['ddp'].distributed_type == kinds['cpu'].distributed_type == 'MULTI_GPU'
    import tomllib
    data = tomllib.loads((ROOT / 'pyproject.toml').read_text())['tool']['setuptools']['package-data']['timer1_lib']
    assert 'assets/accelerate/*' in data                                        # shipped with the package


@pytest.mark.skipif(importlib.util.find_spec('deepspeed') is not None, reason='DeepSpeed is installed')
def test_zero3_without_deepspeed_names_the_extra(tmp_path):
    "Choosing ZeRO-3 without DeepSpeed: one clear error naming `pip install deepspeed`, before anything starts."
    from timer1_lib.train import TrainConfig, accelerate_config_file, launch_training
    with pytest.raises(ImportError, match=r"accelerate_config='zero3' runs DeepSpeed ZeRO, which is not installed: "
                                          r"pip install deepspeed"):
        accelerate_config_file('zero3')
    with pytest.raises(ImportError, match='pip install deepspeed'):
        launch_training(TrainConfig.preset('smoke', out_dir=str(tmp_path / 'run')), 2, 'zero3')
    assert not (tmp_path / 'run').exists()                                       # refused before the run folder
    # plain `accelerate launch` with the file: accelerate's own message names the package too
    r = subprocess.run([sys.executable, '-m', 'accelerate.commands.launch', '--config_file',
                        str(CPU_CFG.with_name('zero3.yaml')),
                        '-m', 'timer1_lib.train', '--help'], capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode != 0 and 'deepspeed' in (r.stdout + r.stderr).lower(), (r.stdout + r.stderr)[-2000:]


def teardown_module(module):
    path = os.environ.get('TIMER1_SCALE_EVIDENCE')
    if not path or not EVIDENCE: return
    import torch, accelerate
    out = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               machine=dict(cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                            python=platform.python_version(), torch=torch.__version__,
                            accelerate=accelerate.__version__, backend='gloo (CPU), 2 processes vs 1'),
               command=f"TIMER1_SCALE_EVIDENCE={path} python -m pytest tests/test_scale.py", **EVIDENCE)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1) + '\n')
