"""The training pipeline (`timer1_lib.train`) on a minimal config (tiny 'test' model, a few SynthTVG items, G=2,
16-token completions), called directly: SFT-only runs, resume of an interrupted run with the same curriculum state,
the real-data path (annotation files, video_root, cot_file); one papermill run of nbs/train.ipynb end to end; and a
`python -m timer1_lib.train` run killed with SIGKILL after its first checkpoint, then resumed."""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path

import pytest
from nbrun import run_papermill

from timer1_lib.evaluate import MissingVideosError
from timer1_lib.train import TrainConfig, run_training

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(eval_limit=4, eval_max_new_tokens=16, max_completion_length=16, num_generations=2, prompts_per_step=2,
            sample_k=4, sample_pool=4, num_train_epochs=2, cold_start_steps=2, learning_rate=3e-4)


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    from timer1_lib.model import make_tiny_model
    return make_tiny_model(tmp_path_factory.mktemp('train') / 'tiny', size='test')


def _read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def test_notebook_end_to_end(tmp_path, tiny_ckpt):
    "papermill nbs/train.ipynb as a researcher runs it: metrics.json, model, curves, and the plots in the notebook."
    run, out = tmp_path / 'run', tmp_path / 'out.ipynb'
    res = run_papermill(ROOT / 'nbs' / 'train.ipynb', out, dict(model_path=tiny_ckpt, out_dir=run, **TINY))
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((run / 'metrics.json').read_text())
    assert {'metrics', 'config', 'timings', 'grpo', 'device'} <= set(m)
    assert set(m['metrics']) == {'before', 'after_coldstart', 'after_grpo'}
    for v in m['metrics'].values():
        assert {'R1@0.3', 'R1@0.5', 'R1@0.7', 'mIoU', 'parsed'} <= set(v) and v['n'] == 4
    assert {'data_s', 'cold_start_s', 'curriculum_s', 'grpo_s', 'total_s'} <= set(m['timings'])
    assert m['config']['preset'] == 'cpu' and m['config']['num_generations'] == 2 and m['config']['think'] is False
    assert m['config']['reward_funcs'] == ['tiou', 'format_answer']        # reward_funcs='auto', no-think
    assert all('<think>' not in p['text'] for p in _read_jsonl(run / 'eval_after_coldstart.jsonl')[1:])
    # 4 items / 2 prompts per step, 2 epochs
    assert m['grpo']['epochs_done'] == 2 and m['grpo']['global_step'] == 4
    assert (run / 'model' / 'config.json').is_file() and list((run / 'model').glob('*.safetensors'))
    assert (run / 'coldstart' / 'cold_start.json').is_file() and (run / 'curves.png').stat().st_size > 1000
    assert len(json.loads((run / 'curriculum_selection.json').read_text())['ids']) == 4
    log = _read_jsonl(run / 'grpo' / 'metrics.jsonl')
    assert [r['step'] for r in log][:4] == [1, 2, 3, 4]
    assert all(r['nonfinite_grad_steps'] == 0 for r in log if 'loss' in r)       # NonFiniteGradGuard is installed
    rc = json.loads((run / 'grpo' / 'run_config.json').read_text())
    assert rc['gradient_checkpointing'] is False and rc['per_device_train_batch_size'] == 4   # tiny: no recompute
    nb = json.loads(out.read_text())
    assert sum('image/png' in o.get('data', {}) for c in nb['cells'] for o in c.get('outputs', [])) >= 1
    # a bad parameter stops in the config cell, before any model is loaded, with one line naming it
    res = run_papermill(ROOT / 'nbs' / 'train.ipynb', tmp_path / 'bad.ipynb', dict(sample_sigma=-1))
    assert res.returncode != 0
    from nbrun import error_cell
    idx, ename, evalue = error_cell(tmp_path / 'bad.ipynb')
    assert idx <= 2 and ename == 'ValueError' and evalue == 'sample_sigma=-1: must be a finite number > 0', \
        (idx, evalue)


def test_sft_only_run(tmp_path, tiny_ckpt):
    "grpo=False: cold start and evaluations only (the 'more SFT' arm of a comparison); the SFT model is the result."
    run = tmp_path / 'run'
    res = run_training(TrainConfig(model_path=str(tiny_ckpt), out_dir=str(run), grpo=False, eval_before=False, **TINY))
    m = res.record   # eval_before=False: the loaded model is not evaluated
    assert set(m['metrics']) == {'after_coldstart'} and 'grpo' not in m and m['config']['grpo'] is False
    assert json.loads((run / 'metrics.json').read_text())['metrics'] == json.loads(json.dumps(m['metrics']))
    assert not (run / 'eval_before.jsonl').exists() and m['config']['eval_before'] is False
    assert res.model_dir.joinpath('config.json').is_file() and not (run / 'grpo').exists() and res.curves is None


def test_interrupted_run_resumes_with_the_curriculum_state(tmp_path, tiny_ckpt, capsys):
    "Also the think=True path: CoT cold start from SynthTVG captions and Time-R1's format reward."
    run = tmp_path / 'run'
    kw = dict(TINY, model_path=str(tiny_ckpt), out_dir=str(run), think=True)
    first = run_training(TrainConfig(stop_after_epochs=1, **kw)).record
    assert first['config']['think'] is True and first['config']['reward_funcs'] == ['tiou', 'format']
    assert first['grpo']['epochs_done'] == 1 and first['grpo']['global_step'] == 2
    assert first['grpo']['stopped'] == 'stop_after_epochs=1'
    sel = run / 'curriculum_selection.json'             # difficulty_model='base': scored before the cold start
    assert json.loads(sel.read_text())['scored_by'] == 'base'
    assert sel.stat().st_mtime < (run / 'coldstart' / 'cold_start.json').stat().st_mtime
    ckpt = run / 'grpo' / 'checkpoint-2'
    st1 = json.loads((ckpt / 'curriculum_state.json').read_text())
    assert st1['epoch'] == 1
    cs_mtime = (run / 'coldstart' / 'cold_start.json').stat().st_mtime
    capsys.readouterr()
    m = run_training(TrainConfig(resume_from_checkpoint='latest', **kw)).record
    logs = capsys.readouterr().out
    assert m['grpo']['resumed_from'] == str(ckpt) and m['grpo']['epochs_done'] == 2 and m['grpo']['global_step'] == 4
    assert m['metrics']['before'] == first['metrics']['before'] and 'recorded in' in logs   # not re-evaluated
    # cold start reused
    assert (run / 'coldstart' / 'cold_start.json').stat().st_mtime == cs_mtime and 'reusing' in logs
    st2 = json.loads((run / 'grpo' / 'curriculum_state.json').read_text())
    assert st2['history'][0] == st1['history'][0] and st2['epoch'] == 2
    assert st2['remaining'] == [i for i in st1['remaining'] if i not in st2['dropped'][1]]
    steps = [r['step'] for r in _read_jsonl(run / 'grpo' / 'metrics.jsonl')]
    assert steps[:2] == [1, 2] and 3 in steps and 4 in steps and 1 not in steps[2:]   # the step count continues


def test_real_data_path(tmp_path, tiny_ckpt):
    ("The real-data parameters: a TimeRFT-format training file and a TVGBench-format test file whose videos live in\n"
     "    `video_root` (here the bundled Charades video OHOFG.mp4 under Time-R1's relative paths), and a user CoT "
     "file for the\n    think=True cold start.")
    from timer1_lib.data import asset_path
    vids = tmp_path / 'videos'; vids.mkdir()
    shutil.copy(asset_path('OHOFG.mp4'), vids / 'OHOFG.mp4')
    rel = './dataset/timer1/videos/timerft_data/OHOFG.mp4'
    queries = [('person sitting down in a chair.', [1.0, 7.5]), ('a person opens a door.', [12.0, 18.0]),
               ('person takes a book from the shelf.', [20.0, 26.5]), ('a person stands up.', [28.0, 33.0])]
    train = [dict(video=rel, duration=35.04, timestamp=seg, sentence=q, qid=f'real|{i}', video_start=None,
                  video_end=None, difficulty=30.0 + 10 * i) for i, (q, seg) in enumerate(queries)]
    (tmp_path / 'train.json').write_text(json.dumps(train))
    cot = [r | dict(cot=f'<{r["timestamp"][0]:g} to {r["timestamp"][1]:g}: {r["sentence"]}>') for r in train]
    (tmp_path / 'cot.json').write_text(json.dumps(cot))
    test = [dict(path='./dataset/timer1/videos/tvgbench_data/OHOFG.mp4', question=q, answer=f'{s}-{e}', start=None,
                 end=None, duration=35.04, question_type='video temporal grounding', dataset_name='charades',
                 qsemtype='Human Pose') for q, (s, e) in queries[:2]]
    (tmp_path / 'test.json').write_text(json.dumps(test))
    kw = dict(TINY, model_path=str(tiny_ckpt), think=True, num_train_epochs=1, eval_limit=0,
              train_annotations=str(tmp_path / 'train.json'), test_annotations=str(tmp_path / 'test.json'),
              video_root=str(vids), cot_file=str(tmp_path / 'cot.json'))
    run = tmp_path / 'run'
    m = run_training(TrainConfig(out_dir=str(run), **kw)).record
    assert m['metrics']['after_grpo']['n'] == 2 and m['config']['reward_funcs'] == ['tiou', 'format']
    assert json.loads((run / 'coldstart' / 'cold_start.json').read_text())['steps'] == 2
    preds = _read_jsonl(run / 'eval_after_grpo.jsonl')[1:]
    assert sorted(p['query'] for p in preds) == sorted(q for q, _ in queries[:2])
    assert all(Path(p['video']).name == 'OHOFG.mp4' and p['duration'] == 35.04 for p in preds)
    sel = json.loads((run / 'curriculum_selection.json').read_text())
    assert sorted(sel['ids']) == sorted(r['qid'] for r in train)
    # the file's difficulty
    assert sel['scored_by'] == 'stored' and sel['pool_difficulty'] == [30.0, 40.0, 50.0, 60.0]
    # a video that is not under video_root stops before any model is loaded, naming the parameter and the record
    (vids / 'OHOFG.mp4').unlink()
    with pytest.raises(MissingVideosError) as e:
        run_training(TrainConfig(out_dir=str(tmp_path / 'run2'), **kw))
    msg = str(e.value)
    assert msg.startswith(f"train_annotations={str(tmp_path / 'train.json')!r}: "
                          "train: 1 video(s) missing (4 of 4 items)")
    assert 'OHOFG.mp4' in msg and 'exclude_missing' not in msg, msg
    assert (tmp_path / 'run2' / 'missing_videos_train.txt').read_text() == rel + '\n'
    assert not (tmp_path / 'run2' / 'metrics.json').exists()


def _cli(*args, **popen):
    env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'} | {'MPLBACKEND': 'Agg'}
    return subprocess.Popen([sys.executable, '-m', 'timer1_lib.train', *map(str, args)], env=env, **popen)


def test_killed_cli_run_resumes_from_its_last_checkpoint(tmp_path, tiny_ckpt):
    ("SIGKILL `python -m timer1_lib.train` right after the first epoch's checkpoint, "
     "then resume 'latest': same curriculum.")
    run = tmp_path / 'run'
    params = dict(TINY, num_train_epochs=3, sample_k=8, sample_pool=8)   # 4 steps an epoch, checkpoints 4, 8, 12
    flags = [x for k, v in params.items() for x in (f'--{k}', v)] + ['--model_path', tiny_ckpt, '--out_dir', run]
    proc = _cli(*flags, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = run / 'grpo' / 'checkpoint-4'
    try:
        t0 = time.monotonic()
        while not (first / 'curriculum_state.json').is_file():
            assert proc.poll() is None, 'the run ended before its first checkpoint'
            assert time.monotonic() - t0 < 240, 'no first checkpoint after 240 s'
            time.sleep(0.05)
        time.sleep(0.2)                                                          # let the checkpoint's files land
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert (not (run / 'metrics.json').is_file()
            or 'after_grpo' not in json.loads((run / 'metrics.json').read_text())['metrics'])
    st1 = json.loads((first / 'curriculum_state.json').read_text())
    assert st1['epoch'] == 1
    done = _cli(*flags, '--resume_from_checkpoint', 'latest', stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True)
    out, _ = done.communicate(timeout=400)
    assert done.returncode == 0, out[-3000:]
    m = json.loads((run / 'metrics.json').read_text())
    resumed = Path(m['grpo']['resumed_from'])
    assert resumed.parent == run / 'grpo' and resumed.name.startswith('checkpoint-')   # the last complete checkpoint
    assert m['grpo']['epochs_done'] == 3 and m['grpo']['global_step'] == 12
    st = json.loads((run / 'grpo' / 'curriculum_state.json').read_text())
    assert st['history'][0] == st1['history'][0] and st['epoch'] == 3
    assert set(st['remaining']) <= set(st1['remaining'])
    assert 'after GRPO' in out and '[grpo] step 12' in out                       # the summary table and step lines
