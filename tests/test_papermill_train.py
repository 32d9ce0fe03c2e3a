"""nbs/train.ipynb headless with papermill on a minimal config (tiny 'test' model, a few SynthTVG items, G=2, 16-token
completions): the whole pipeline writes metrics.json, the saved model and the curves; bad parameters stop in the
validation cell with a clear message; an interrupted run resumes GRPO with the same curriculum state."""
import json
from pathlib import Path

import pytest
from nbrun import error_cell, run_papermill

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / 'nbs' / 'train.ipynb'
TINY = dict(eval_limit=4, eval_max_new_tokens=16, max_completion_length=16, num_generations=2, prompts_per_step=2,
            sample_k=4, sample_pool=4, num_train_epochs=2, cold_start_steps=2, learning_rate=3e-4)


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    from timer1_lib.model import make_tiny_model
    return make_tiny_model(tmp_path_factory.mktemp('train_nb') / 'tiny', size='test')


def _papermill(tmp_path, name='out', **params):
    out = tmp_path / f'{name}.ipynb'
    return run_papermill(NB, out, params), out


def test_minimal_run_writes_everything(tmp_path, tiny_ckpt):
    run = tmp_path / 'run'
    res, out = _papermill(tmp_path, model_path=tiny_ckpt, out_dir=run, **TINY)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((run / 'metrics.json').read_text())
    assert {'metrics', 'config', 'timings', 'grpo'} <= set(m)
    assert set(m['metrics']) == {'before', 'after_coldstart', 'after_grpo'}
    for v in m['metrics'].values():
        assert {'R1@0.3', 'R1@0.5', 'R1@0.7', 'mIoU', 'parsed'} <= set(v) and v['n'] == 4
    assert {'data_s', 'cold_start_s', 'curriculum_s', 'grpo_s', 'total_s'} <= set(m['timings'])
    assert m['config']['num_generations'] == 2 and m['config']['think'] is False          # think='auto': tiny model
    assert m['config']['reward_funcs'] == ['tiou', 'format_answer']                       # reward_funcs='auto', no-think
    preds = [json.loads(l) for l in (run / 'eval_after_coldstart.jsonl').read_text().splitlines()[1:]]
    assert all('<think>' not in p['text'] for p in preds)
    assert m['grpo']['epochs_done'] == 2 and m['grpo']['global_step'] == 4       # 4 items / 2 prompts per step, 2 epochs
    assert (run / 'model' / 'config.json').is_file() and list((run / 'model').glob('*.safetensors'))
    assert (run / 'coldstart' / 'cold_start.json').is_file() and (run / 'curves.png').stat().st_size > 1000
    assert len(json.loads((run / 'curriculum_selection.json').read_text())['ids']) == 4
    log = [json.loads(l) for l in (run / 'grpo' / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in log][:4] == [1, 2, 3, 4]
    assert all(r['nonfinite_grad_steps'] == 0 for r in log if 'loss' in r)       # NonFiniteGradGuard is installed
    rc = json.loads((run / 'grpo' / 'run_config.json').read_text())
    assert rc['gradient_checkpointing'] is False and rc['per_device_train_batch_size'] == 4   # tiny: no recompute
    nb = json.loads(out.read_text())
    assert sum('image/png' in o.get('data', {}) for c in nb['cells'] for o in c.get('outputs', [])) >= 1


@pytest.mark.parametrize('params, ename, text', [
    (dict(reward_funcs='tiou,nope'), 'ValueError', "unknown reward name(s) ['nope']"),
    (dict(num_generations=1), 'ValueError', "GRPO needs G >= 2"),
    (dict(model_path='artifacts/runs/nope/model'), 'FileNotFoundError', "checkpoint 'artifacts/runs/nope/model'"),
    (dict(sample_mode='gauss'), 'ValueError', "parameter sample_mode='gauss': must be one of"),
    (dict(resume_from_checkpoint='latest'), 'ValueError', "needs the out_dir of the run to resume"),
    (dict(think=False, reward_funcs='tiou,format'), 'ValueError', "'format' needs <think>...</think> completions"),
    (dict(think='maybe'), 'ValueError', "parameter think='maybe': must be True or False or 'auto'"),
    (dict(grpo=False, cold_start=False), 'ValueError', "nothing to train"),
    (dict(eval_before='no'), 'ValueError', "parameter eval_before='no': must be True or False"),
])
def test_bad_parameters_fail_in_the_validation_cell(tmp_path, params, ename, text):
    res, out = _papermill(tmp_path, **params)
    assert res.returncode != 0
    idx, got_ename, evalue = error_cell(out)
    assert got_ename == ename and text in evalue, evalue
    assert idx <= 2, f'failed in code cell {idx}, expected the validation cell (2)'   # params, injected, validation


def test_existing_run_folder_is_not_overwritten(tmp_path):
    run = tmp_path / 'run'; run.mkdir()
    (run / 'metrics.json').write_text('{}')
    res, out = _papermill(tmp_path, out_dir=run)
    assert res.returncode != 0
    idx, ename, evalue = error_cell(out)
    assert idx <= 2 and ename == 'ValueError' and 'already holds a run' in evalue, evalue
    assert (run / 'metrics.json').read_text() == '{}'


def test_sft_only_run(tmp_path, tiny_ckpt):
    "grpo=False: cold start and evaluations only (the 'more SFT' arm of a comparison); the SFT model is the result."
    run = tmp_path / 'run'
    res, _ = _papermill(tmp_path, model_path=tiny_ckpt, out_dir=run, grpo=False, eval_before=False, **TINY)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((run / 'metrics.json').read_text())   # eval_before=False: the loaded model is not evaluated
    assert set(m['metrics']) == {'after_coldstart'} and 'grpo' not in m and m['config']['grpo'] is False
    assert not (run / 'eval_before.jsonl').exists() and m['config']['eval_before'] is False
    assert (run / 'model' / 'config.json').is_file() and not (run / 'grpo').exists()


def test_interrupted_run_resumes_with_the_curriculum_state(tmp_path, tiny_ckpt):
    "Also the think=True path: CoT cold start from SynthTVG captions and Time-R1's format reward."
    run = tmp_path / 'run'
    TINY = dict(globals()['TINY'], think=True)
    res, _ = _papermill(tmp_path, 'first', model_path=tiny_ckpt, out_dir=run, stop_after_epochs=1, **TINY)
    assert res.returncode == 0, res.stderr[-3000:]
    first = json.loads((run / 'metrics.json').read_text())
    assert first['config']['think'] is True and first['config']['reward_funcs'] == ['tiou', 'format']
    assert first['grpo']['epochs_done'] == 1 and first['grpo']['global_step'] == 2
    ckpt = run / 'grpo' / 'checkpoint-2'
    st1 = json.loads((ckpt / 'curriculum_state.json').read_text())
    assert st1['epoch'] == 1
    cs_mtime = (run / 'coldstart' / 'cold_start.json').stat().st_mtime
    res, out = _papermill(tmp_path, 'second', model_path=tiny_ckpt, out_dir=run, resume_from_checkpoint='latest', **TINY)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((run / 'metrics.json').read_text())
    assert m['grpo']['resumed_from'] == str(ckpt) and m['grpo']['epochs_done'] == 2 and m['grpo']['global_step'] == 4
    assert m['metrics']['before'] == first['metrics']['before']                     # recorded, not re-evaluated
    assert (run / 'coldstart' / 'cold_start.json').stat().st_mtime == cs_mtime      # the cold start was reused
    st2 = json.loads((run / 'grpo' / 'curriculum_state.json').read_text())
    assert st2['history'][0] == st1['history'][0] and st2['epoch'] == 2
    assert st2['remaining'] == [i for i in st1['remaining'] if i not in st2['dropped'][1]]
    steps = [json.loads(l)['step'] for l in (run / 'grpo' / 'metrics.jsonl').read_text().splitlines()]
    assert steps[:2] == [1, 2] and 3 in steps and 4 in steps and 1 not in steps[2:]   # the step count continues
    texts = [o.get('text', '') for c in json.loads(out.read_text())['cells'] for o in c.get('outputs', [])]
    logs = ''.join(t if isinstance(t, str) else ''.join(t) for t in texts)
    assert 'recorded in' in logs and 'reusing' in logs


def test_real_data_path(tmp_path, tiny_ckpt):
    """The real-data parameters: a TimeRFT-format training file and a TVGBench-format test file whose videos live in
    `video_root` (here the bundled Charades video OHOFG.mp4 under Time-R1's relative paths), and a user CoT file for the
    think=True cold start."""
    import shutil
    from timer1_lib.data import asset_path
    vids = tmp_path / 'videos'; vids.mkdir()
    shutil.copy(asset_path('OHOFG.mp4'), vids / 'OHOFG.mp4')
    rel = './dataset/timer1/videos/timerft_data/OHOFG.mp4'
    queries = [('person sitting down in a chair.', [1.0, 7.5]), ('a person opens a door.', [12.0, 18.0]),
               ('person takes a book from the shelf.', [20.0, 26.5]), ('a person stands up.', [28.0, 33.0])]
    train = [dict(video=rel, duration=35.04, timestamp=seg, sentence=q, qid=f'real|{i}', video_start=None, video_end=None,
                  difficulty=30.0 + 10 * i) for i, (q, seg) in enumerate(queries)]
    (tmp_path / 'train.json').write_text(json.dumps(train))
    cot = [r | dict(cot=f'<{r["timestamp"][0]:g} to {r["timestamp"][1]:g}: {r["sentence"]}>') for r in train]
    (tmp_path / 'cot.json').write_text(json.dumps(cot))
    test = [dict(path='./dataset/timer1/videos/tvgbench_data/OHOFG.mp4', question=q, answer=f'{s}-{e}', start=None,
                 end=None, duration=35.04, question_type='video temporal grounding', dataset_name='charades',
                 qsemtype='Human Pose') for q, (s, e) in queries[:2]]
    (tmp_path / 'test.json').write_text(json.dumps(test))
    run = tmp_path / 'run'
    params = dict(TINY, think=True, num_train_epochs=1, eval_limit=0)
    res, _ = _papermill(tmp_path, model_path=tiny_ckpt, out_dir=run, train_annotations=tmp_path / 'train.json',
                        test_annotations=tmp_path / 'test.json', video_root=vids, cot_file=tmp_path / 'cot.json', **params)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((run / 'metrics.json').read_text())
    assert m['metrics']['after_grpo']['n'] == 2 and m['config']['reward_funcs'] == ['tiou', 'format']
    cs = json.loads((run / 'coldstart' / 'cold_start.json').read_text())
    assert cs['steps'] == 2
    preds = [json.loads(l) for l in (run / 'eval_after_grpo.jsonl').read_text().splitlines()[1:]]
    assert sorted(p['query'] for p in preds) == sorted(q for q, _ in queries[:2])
    assert all(Path(p['video']).name == 'OHOFG.mp4' and p['duration'] == 35.04 for p in preds)
    sel = json.loads((run / 'curriculum_selection.json').read_text())['ids']
    assert sorted(sel) == sorted(r['qid'] for r in train)
    # a video that is not under video_root stops before any model is loaded, naming the record
    (vids / 'OHOFG.mp4').unlink()
    res, out = _papermill(tmp_path, 'missing', model_path=tiny_ckpt, out_dir=tmp_path / 'run2',
                          train_annotations=tmp_path / 'train.json', test_annotations=tmp_path / 'test.json',
                          video_root=vids, cot_file=tmp_path / 'cot.json', **params)
    assert res.returncode != 0
    idx, ename, evalue = error_cell(out)
    assert ename == 'MissingVideosError' and idx == 3, (idx, ename)               # the data cell, before any model
    assert evalue.startswith(f"train_annotations={str(tmp_path / 'train.json')!r}: train: 1 video(s) missing (4 of 4 items)")
    assert 'OHOFG.mp4' in evalue and 'exclude_missing' not in evalue, evalue
    assert (tmp_path / 'run2' / 'missing_videos_train.txt').read_text() == rel + '\n'


def _descendants(pid: int) -> list[int]:
    "Process ids below `pid` (Linux /proc), deepest last: papermill's kernel runs in its own session."
    kids = {}
    for p in Path('/proc').iterdir():
        if p.name.isdigit():
            try: ppid = int(next(l for l in (p / 'status').read_text().splitlines() if l.startswith('PPid:')).split()[1])
            except (OSError, StopIteration): continue
            kids.setdefault(ppid, []).append(int(p.name))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []): out.append(c); todo.append(c)
    return out


@pytest.mark.skipif(not Path('/proc/self/status').exists(), reason='finds the kernel process through /proc (Linux)')
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path, tiny_ckpt):
    "SIGKILL the kernel right after the first epoch's checkpoint, then resume='latest': same curriculum state, same end."
    import os, signal, subprocess, sys, time
    run = tmp_path / 'run'
    params = dict(TINY, num_train_epochs=3, sample_k=8, sample_pool=8)          # 4 steps an epoch, checkpoints 4, 8, 12
    args = [sys.executable, '-m', 'papermill', str(NB), str(tmp_path / 'first.ipynb'), '--cwd', str(ROOT / 'nbs'),
            '--no-progress-bar', '-p', 'model_path', str(tiny_ckpt), '-p', 'out_dir', str(run)]
    for k, v in params.items(): args += ['-p', k, str(v)]
    env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'} | {'MPLBACKEND': 'Agg'}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = run / 'grpo' / 'checkpoint-4'
    try:
        t0 = time.monotonic()
        while not (first / 'curriculum_state.json').is_file():
            assert proc.poll() is None, 'the run ended before its first checkpoint'
            assert time.monotonic() - t0 < 240, 'no first checkpoint after 240 s'
            time.sleep(0.05)
        time.sleep(0.2)                                                          # let the checkpoint's files land
        killed = _descendants(proc.pid)
        for pid in killed: os.kill(pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=120)
    assert killed and proc.returncode != 0
    assert not (run / 'metrics.json').is_file() or 'after_grpo' not in json.loads((run / 'metrics.json').read_text())['metrics']
    st1 = json.loads((first / 'curriculum_state.json').read_text())
    assert st1['epoch'] == 1
    res, _ = _papermill(tmp_path, 'second', model_path=tiny_ckpt, out_dir=run, resume_from_checkpoint='latest', **params)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((run / 'metrics.json').read_text())
    resumed = Path(m['grpo']['resumed_from'])
    assert resumed.parent == run / 'grpo' and resumed.name.startswith('checkpoint-')   # the last complete checkpoint
    assert m['grpo']['epochs_done'] == 3 and m['grpo']['global_step'] == 12
    st = json.loads((run / 'grpo' / 'curriculum_state.json').read_text())
    assert st['history'][0] == st1['history'][0] and st['epoch'] == 3
    assert set(st['remaining']) <= set(st1['remaining'])
