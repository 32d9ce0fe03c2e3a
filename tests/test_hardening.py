"""Hardening (issue #15): each fault is made for real and the test asserts the message the user sees.

Annotation files with mixed bad records (missing fields, NaN, end < start, duplicate ids, wrong types, a large file);
corrupt, truncated, empty and missing videos in training (stopped before any model is loaded) and in evaluation;
an output folder that cannot be made or written, a disk without room for the run (`shutil.disk_usage` patched, and a
real small tmpfs where the sandbox allows `mount`); checkpoints cut short or damaged (the previous one is resumed);
papermill runs of nbs/train.ipynb and nbs/evaluate.ipynb whose cell fails. Slow (`-m slow`): a 100 MB annotation
file; `python -m timer1_lib.train` killed with SIGKILL mid-epoch and resumed, and a run whose disk fills up while it
writes a checkpoint, resumed after space is freed: both end with the weights and the curriculum state of an
uninterrupted run with the same seed."""
import json, os, re, shutil, signal, subprocess, sys, time
from pathlib import Path

import pytest
from nbrun import error_cell, run_papermill

from timer1_lib.data import AnnotationError, UnreadableVideosError, load_annotations
from timer1_lib.evaluate import MissingVideosError
from timer1_lib.video import write_synthetic_video

ROOT = Path(__file__).resolve().parents[1]
GOOD = {'video': 'v.mp4', 'duration': 30.0, 'timestamp': [1.0, 4.0], 'sentence': 'a dog barks', 'qid': 'g'}


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    from timer1_lib.model import make_tiny_model
    return make_tiny_model(tmp_path_factory.mktemp('hardening') / 'tiny', size='test')


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj)); return path


# ---------------------------------------------------------------- annotation files with mixed bad records

MIXED = [GOOD | {'qid': 'r0'},
         {k: v for k, v in GOOD.items() if k != 'timestamp'} | {'qid': 'missing'},
         GOOD | {'qid': 'nan', 'timestamp': [float('nan'), 4.0]},
         GOOD | {'qid': 'rev', 'timestamp': [5.0, 2.0]},
         GOOD | {'qid': 'r0'},                                             # duplicate id
         GOOD | {'qid': 'type', 'sentence': 42},                          # would become the query "42"
         GOOD | {'qid': 'str-ts', 'timestamp': '14'},                     # would unpack to (1, 4)
         GOOD | {'qid': 'r7'},
         GOOD | {'qid': 'nan-dur', 'duration': float('nan')},
         GOOD | {'qid': 'str-dur', 'duration': '30'},
         'just a string']
MIXED_REASONS = ["record 1 (id 'missing'): AnnotationError: missing field 'timestamp'",
                 "record 2 (id 'nan'): segment (nan, 4.0) is not finite",
                 "record 3 (id 'rev'): segment end 2.0 < start 5.0",
                 "record 4 (id 'r0'): duplicate id 'r0'",
                 "record 5 (id 'type'): AnnotationError: field 'sentence' is not a string: 42",
                 "record 6 (id 'str-ts'): AnnotationError: field 'timestamp' is not a [start, end] pair of numbers: "
                 "'14'",
                 "record 8 (id 'nan-dur'): duration nan is not a positive number",
                 "record 9 (id 'str-dur'): AnnotationError: field 'duration' is not a number: '30'",
                 "record 10: AnnotationError: expected an object, got str: 'just a string'"]


@pytest.mark.parametrize('fmt', [None, 'timerft'])
def test_timerft_mixed_bad_records(tmp_path, fmt):
    "Every bad record is named in one error (autodetected or forced format); 'skip' loads the rest and reports each."
    p = _write(tmp_path / 'train.json', MIXED)
    with pytest.raises(AnnotationError) as e:
        load_annotations(p, fmt)
    assert str(e.value) == (f"{p}: {MIXED_REASONS[0]} | and 8 more bad record(s) of 11 in the file: "
                            + ' | '.join(MIXED_REASONS[1:])
                            + " (pass on_error='skip' or 'clip' to load the rest and get a report)")
    for mode in ('skip', 'clip'):
        with pytest.warns(UserWarning, match=r"9 record\(s\) skipped, 0 clipped"):
            res = load_annotations(p, fmt, on_error=mode)
        assert [it.id for it in res] == ['r0', 'r7'] and res.format == 'timerft'
        assert [f"record {r.index}" + (f" (id {r.id!r})" if r.id is not None else '') + f": {r.reason}"
                for r in res.skipped] == MIXED_REASONS
        assert len(res) + len(res.report) == len(MIXED)                  # nothing dropped silently


def test_tvgbench_bad_records(tmp_path):
    good = {'path': 'v.mp4', 'question': 'q', 'answer': '1-4', 'start': None, 'end': None, 'duration': 30.0}
    recs = [good, {k: v for k, v in good.items() if k != 'answer'}, good | {'answer': 'a-b'},
            good | {'duration': float('nan')}, good | {'question': ['q']}, good | {'answer': '5-2'}]
    p = _write(tmp_path / 'test.json', recs)
    with pytest.raises(AnnotationError) as e:
        load_annotations(p)
    assert str(e.value) == (
        f"{p}: record 1 (id 'tvgbench-001'): AnnotationError: missing field 'answer' | and 4 more bad record(s) of 6 "
        "in the file: record 2 (id 'tvgbench-002'): AnnotationError: answer 'a-b' is not 's-e' | "
        "record 3 (id 'tvgbench-003'): duration nan is not a positive number | "
        "record 4 (id 'tvgbench-004'): AnnotationError: field 'question' is not a string: ['q'] | "
        "record 5 (id 'tvgbench-005'): segment end 2.0 < start 5.0 "
        "(pass on_error='skip' or 'clip' to load the rest and get a report)")


def _big_file(path: Path, n: int, bad_at: dict) -> Path:
    "A TimeRFT file of `n` records (~250 bytes each), written as text (fast); `bad_at`: index -> replacement record."
    head = ('{"video": "./dataset/timer1/videos/timerft_data/V%07d.mp4", "duration": 35.04, '
            '"timestamp": [1.5, 7.25], "sentence": "a person sits down in a chair and opens a book on the table.", '
            '"qid": "big|charades|V%07d|%d", "video_start": null, "video_end": null, "difficulty": 12.5}')
    with open(path, 'w') as f:
        f.write('[')
        for i in range(n):
            if i: f.write(',\n')
            f.write(json.dumps(bad_at[i]) if i in bad_at else head % (i, i, i))
        f.write(']')
    return path


def _large_file_check(tmp_path, n: int, budget_s: float):
    bad_at = {7: GOOD | {'qid': 'bad-nan', 'timestamp': [float('nan'), 1]}, n // 2: GOOD | {'qid': 'bad-type',
              'duration': 'long'}, n - 1: GOOD | {'qid': 'bad-rev', 'timestamp': [9, 3]}}
    p = _big_file(tmp_path / 'big.json', n, bad_at)
    t0 = time.perf_counter()
    with pytest.raises(AnnotationError) as e:
        load_annotations(p)
    raise_s = time.perf_counter() - t0
    assert str(e.value) == (f"{p}: record 7 (id 'bad-nan'): segment (nan, 1.0) is not finite | and 2 more bad "
                            f"record(s) of {n} in the file: record {n // 2} (id 'bad-type'): AnnotationError: field "
                            f"'duration' is not a number: 'long' | record {n - 1} (id 'bad-rev'): segment end 3.0 < "
                            "start 9.0 (pass on_error='skip' or 'clip' to load the rest and get a report)")
    with pytest.warns(UserWarning, match=r"3 record\(s\) skipped"):
        res = load_annotations(p, on_error='skip')
    assert len(res) == n - 3 and [(r.index, r.id) for r in res.skipped] == [(i, r['qid']) for i, r in bad_at.items()]
    assert raise_s < budget_s, f'{p.stat().st_size / 2**20:.0f} MB loaded in {raise_s:.1f} s'
    return p.stat().st_size


def test_large_annotation_file_small(tmp_path):
    "~5 MB (20k records, 3 bad): the error names the three, the skip report lists exactly them."
    assert _large_file_check(tmp_path, 20_000, budget_s=30) > 4 << 20


@pytest.mark.slow
def test_large_annotation_file_100mb(tmp_path):
    "~100 MB (400k records, 3 bad): same, in reasonable time on a 2-core CPU."
    assert _large_file_check(tmp_path, 400_000, budget_s=240) > 95 << 20


# ---------------------------------------------------------------- videos: training, before any model is loaded

def _faststart(src: Path, dst: Path) -> Path:
    "`src` remuxed with the index (moov) before the frames, as `ffmpeg -movflags +faststart` writes web videos."
    import av
    with av.open(str(src)) as i, av.open(str(dst), 'w', options={'movflags': 'faststart'}) as o:
        s = i.streams.video[0]; out = o.add_stream_from_template(s)
        for pkt in i.demux(s):
            if pkt.dts is None: continue
            pkt.stream = out; o.mux(pkt)
    return dst


def _bad_video(kind: str, d: Path) -> Path:
    "A broken `bad.mp4` in `d`: random bytes, the first half of a real mp4 (index at its end or first), empty, absent."
    p = d / 'bad.mp4'
    if kind == 'noise': p.write_bytes(os.urandom(20_000))
    elif kind == 'truncated':
        raw = write_synthetic_video(d / 'full.mp4', 20, fps=4).read_bytes(); p.write_bytes(raw[:len(raw) // 2])
    elif kind == 'truncated-faststart':
        raw = _faststart(write_synthetic_video(d / 'full.mp4', 20, fps=4), d / 'fs.mp4').read_bytes()
        p.write_bytes(raw[:len(raw) // 2])
    elif kind == 'empty': p.write_bytes(b'')
    (d / 'full.mp4').unlink(missing_ok=True); (d / 'fs.mp4').unlink(missing_ok=True)
    return p


VIDEO_FAULTS = {'noise': r"cannot open it: InvalidDataError: \[Errno \d+\] Invalid data found when processing input",
                'truncated': r"truncated: its 'mdat' box at byte 40 needs \d+ bytes but the file ends \d+ bytes later",
                'truncated-faststart': r"truncated: its 'mdat' box at byte \d+ needs \d+ bytes but the file ends",
                'empty': r"empty file \(0 bytes\)"}


def _real_data(tmp_path, kind: str):
    "A train file (3 records on good.mp4, one on bad.mp4) and a test file (good.mp4), videos in `videos/`."
    vids = tmp_path / 'videos'; vids.mkdir()
    write_synthetic_video(vids / 'good.mp4', 20, fps=4)
    if kind != 'missing': _bad_video(kind, vids)
    rec = lambda i, v: {'video': f'./dataset/{v}.mp4', 'duration': 20.0, 'timestamp': [2.0 + i, 6.0 + i],
                        'sentence': f'query {i}', 'qid': f'item{i}'}
    train = _write(tmp_path / 'train.json', [rec(0, 'good'), rec(1, 'bad'), rec(2, 'good'), rec(3, 'good')])
    test = _write(tmp_path / 'test.json', [rec(4, 'good'), rec(5, 'good')])
    return train, test, vids


def _run_cfg(tiny_ckpt, tmp_path, **kw):
    from timer1_lib.train import TrainConfig
    return TrainConfig.preset('smoke', model_path=str(tiny_ckpt), qa_annotations='', **kw)


@pytest.mark.parametrize('kind', [*VIDEO_FAULTS, 'missing'])
def test_training_stops_on_a_bad_video_before_the_model(tmp_path, tiny_ckpt, kind):
    from timer1_lib.train import TrainingRun
    train, test, vids = _real_data(tmp_path, kind)
    run = TrainingRun(_run_cfg(tiny_ckpt, tmp_path, train_annotations=str(train), test_annotations=str(test),
                               video_root=str(vids), out_dir=str(tmp_path / 'run')))
    err = MissingVideosError if kind == 'missing' else UnreadableVideosError
    with pytest.raises(err) as e:
        run.load_data()
    msg, out = str(e.value), tmp_path / 'run'
    if kind == 'missing':
        assert msg.startswith(f"train_annotations={str(train)!r}: train: 1 video(s) missing (1 of 4 items) with "
                              f"video_root={str(vids)!r}; first 1: ['./dataset/bad.mp4']"), msg
        assert (out / 'missing_videos_train.txt').read_text() == './dataset/bad.mp4\n'
    else:
        head = (f"train_annotations={str(train)!r}: train: 1 video file(s) cannot be decoded (1 of 4 items): "
                f"'{vids / 'bad.mp4'}' (record 'item1'): ")
        assert msg.startswith(head), msg
        assert re.match(VIDEO_FAULTS[kind], msg[len(head):]), msg
        assert msg.endswith(f"; full list in {out / 'unreadable_videos_train.txt'}. Re-download or re-encode them, "
                            "remove their records, or set skip_bad_videos=True to train on the rest"), msg
        assert (out / 'unreadable_videos_train.txt').read_text().startswith(f"{vids / 'bad.mp4'}\t")
        assert [(it.id, p.name) for it, p, _ in e.value.bad] == [('item1', 'bad.mp4')]
    assert run.model is None and not (out / 'metrics.json').exists()


@pytest.mark.parametrize('kind', ['truncated', 'missing'])
def test_skip_bad_videos_trains_on_the_rest(tmp_path, tiny_ckpt, kind, capsys):
    "skip_bad_videos=True: the item on the bad video is left out (logged, listed), the others are kept."
    from timer1_lib.train import TrainingRun
    train, test, vids = _real_data(tmp_path, kind)
    run = TrainingRun(_run_cfg(tiny_ckpt, tmp_path, train_annotations=str(train), test_annotations=str(test),
                               video_root=str(vids), out_dir=str(tmp_path / 'run'), skip_bad_videos=True))
    run.load_data()
    assert [it.id for it in run.train_items] == ['item0', 'item2', 'item3']
    assert [it.id for it in run.sft_items] == ['item0', 'item2', 'item3']       # the cold start trains on them too
    assert [it.id for it in run.test_items] == ['item4', 'item5']
    out, log = tmp_path / 'run', capsys.readouterr().out
    listing = out / ('missing_videos_train.txt' if kind == 'missing' else 'unreadable_videos_train.txt')
    assert listing.exists() and 'bad.mp4' in listing.read_text()
    assert 'skip_bad_videos=True' in log and str(listing) in log, log


def test_training_stops_on_bad_annotation_records_before_the_model(tmp_path, tiny_ckpt):
    "The loader would skip them (load_dataset's on_error='clip'): training refuses, naming file and records."
    from timer1_lib.train import TrainingRun
    train, test, vids = _real_data(tmp_path, 'missing')
    recs = json.loads(train.read_text())
    recs[1]['video'] = recs[0]['video']
    _write(train, recs + [recs[0] | {'qid': 'late', 'timestamp': [9.0, 3.0]}, recs[0] | {'qid': 'item2'}])
    run = TrainingRun(_run_cfg(tiny_ckpt, tmp_path, train_annotations=str(train), test_annotations=str(test),
                               video_root=str(vids), out_dir=str(tmp_path / 'run')))
    with pytest.raises(AnnotationError) as e:
        run.load_data()
    listing = tmp_path / 'run' / 'bad_records_train.txt'
    assert str(e.value) == (
        f"train_annotations={str(train)!r}: 2 bad record(s) in {train}: record 4 (id 'late'): segment end 3.0 < "
        f"start 9.0 | record 5 (id 'item2'): duplicate id 'item2'; all listed in {listing}. Training uses every "
        "record it is given: fix or remove them (data.load_annotations(path, on_error='skip') loads the rest, "
        "data.write_timerft writes them back)")
    assert listing.read_text() == "4\tlate\tsegment end 3.0 < start 9.0\n5\titem2\tduplicate id 'item2'\n"
    assert run.model is None


# ---------------------------------------------------------------- videos: evaluation

def _eval_cfg(tiny_ckpt, tmp_path, test, vids, **kw):
    from timer1_lib.evaluate import EvalConfig
    return EvalConfig(checkpoints=[str(tiny_ckpt)], datasets=str(test), video_root=str(vids), max_new_tokens=4,
                      batch_size=2, frame_cache=None, baselines='', out_dir=str(tmp_path / 'eval'), **kw)


@pytest.mark.parametrize('kind', ['noise', 'truncated', 'empty'])
def test_evaluation_names_the_record_of_an_undecodable_video(tmp_path, tiny_ckpt, kind):
    ("evaluate(): an undecodable video stops the run before any model is loaded, naming record, file and problem; "
     "with exclude_missing=True the other items are evaluated, with a warning.")
    from timer1_lib.evaluate import evaluate
    _, _, vids = _real_data(tmp_path, kind)
    test = _write(tmp_path / 'test.json', [{'video': f'./dataset/{v}.mp4', 'duration': 20.0, 'timestamp': [2.0, 6.0],
                                            'sentence': f'q{i}', 'qid': f'item{i}'}
                                           for i, v in enumerate(['good', 'good', 'bad'])])
    with pytest.raises(UnreadableVideosError) as e:
        evaluate(_eval_cfg(tiny_ckpt, tmp_path, test, vids), progress=False)
    bad = vids / 'bad.mp4'
    msg = str(e.value)
    assert f"1 of 3 items have a video that cannot be decoded: '{bad}' (record 'item2'): " in msg, msg
    assert 'exclude_missing=True' in msg and not list((tmp_path / 'eval').rglob('predictions.jsonl'))
    with pytest.warns(UserWarning, match="Excluded \\(exclude_missing=True\\): evaluating 2 items"):
        ev = evaluate(_eval_cfg(tiny_ckpt, tmp_path, test, vids, exclude_missing=True), progress=False)
    pred = next((tmp_path / 'eval').rglob('predictions.jsonl'))
    assert [json.loads(x).get('id') for x in pred.read_text().splitlines()[1:]] == ['item0', 'item1'], ev


def test_evaluation_reports_skipped_annotation_records(tmp_path, tiny_ckpt, capsys):
    "A bad record in an evaluation file is skipped with a log line and bad_records_<dataset>.txt, never silently."
    from timer1_lib.evaluate import prepare
    _, _, vids = _real_data(tmp_path, 'missing')
    rec = lambda i, ts: {'video': './dataset/good.mp4', 'duration': 20.0, 'timestamp': ts, 'sentence': f'q{i}',
                         'qid': f'item{i}'}
    test = _write(tmp_path / 'test.json', [rec(0, [2.0, 6.0]), rec(1, [8.0, 3.0]), rec(2, [1.0, 4.0])])
    cfg = _eval_cfg(tiny_ckpt, tmp_path, test, vids)
    data = prepare(cfg)
    (items,) = data.values()
    assert [it.id for it in items] == ['item0', 'item2']
    (listing,) = Path(cfg.output_dir()).glob('bad_records_*.txt')
    idx, rid, why = listing.read_text().splitlines()[0].split('\t')
    assert (idx, rid) == ('1', 'item1') and 'end' in why, why
    log = capsys.readouterr().out
    assert '1 annotation record(s)' in log and 'evaluating the other 2' in log and str(listing) in log, log


def test_evaluation_refuses_a_truncated_faststart_mp4(tmp_path, tiny_ckpt):
    from timer1_lib.evaluate import evaluate
    _, test, vids = _real_data(tmp_path, 'truncated-faststart')
    _write(test, [{'video': './dataset/bad.mp4', 'duration': 20.0, 'timestamp': [2.0, 6.0], 'sentence': 'q',
                   'qid': 'item0'}])
    with pytest.raises(UnreadableVideosError, match="record 'item0'"):
        evaluate(_eval_cfg(tiny_ckpt, tmp_path, test, vids), progress=False)


# ---------------------------------------------------------------- the output folder and the disk

def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which('mount'): return False
    d = Path(os.environ.get('TMPDIR', '/tmp')) / f'.timer1-mount-probe-{os.getpid()}'
    d.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(d)],
                            capture_output=True).returncode == 0
        if ok: subprocess.run(['umount', str(d)], check=True)
        return ok
    finally: d.rmdir()


CAN_MOUNT = _can_mount()


@pytest.fixture
def tmpfs(tmp_path):
    "mount(size, ro=False) -> a fresh tmpfs folder of `size` bytes (unmounted after the test); needs root + mount."
    mounted = []
    def mount(size: int, ro: bool = False) -> Path:
        if not CAN_MOUNT: pytest.skip('mounting a tmpfs needs root and a sandbox that allows mount(2)')
        d = tmp_path / f'tmpfs{len(mounted)}'; d.mkdir()
        opts = f'size={size}' + (',ro' if ro else '')
        subprocess.run(['mount', '-t', 'tmpfs', '-o', opts, 'tmpfs', str(d)], check=True); mounted.append(d)
        return d
    yield mount
    for d in mounted: subprocess.run(['umount', '-l', str(d)], check=False)


def test_out_dir_under_a_file_fails_in_the_config(tmp_path, tiny_ckpt):
    f = tmp_path / 'notes.txt'; f.write_text('x')
    with pytest.raises(NotADirectoryError) as e:
        _run_cfg(tiny_ckpt, tmp_path, out_dir=str(f / 'run'))
    assert str(e.value) == (f"out_dir={str(f / 'run')!r}: {f} is a file, not a folder: the run folder {f / 'run'} "
                            "cannot be made there; choose another out_dir")


def test_unwritable_out_dir_fails_before_the_model(tmp_path, tiny_ckpt, tmpfs):
    ("A folder the user cannot write in: chmod 0o500 (as root chmod does not stop writes, so a read-only tmpfs; "
     "skipped when neither is possible).")
    from timer1_lib.train import TrainingRun
    if os.geteuid() != 0:
        parent = tmp_path / 'locked'; parent.mkdir(); parent.chmod(0o500)
        why = 'Permission denied'
    else: parent, why = tmpfs(1 << 20, ro=True), 'Read-only file system'
    try:
        run = TrainingRun(_run_cfg(tiny_ckpt, tmp_path, out_dir=str(parent / 'run')))
        with pytest.raises(PermissionError) as e:
            run.load_data()
    finally:
        if os.geteuid() != 0: parent.chmod(0o700)
    assert str(e.value) == (f"out_dir={str(parent / 'run')!r}: cannot write in {parent} ({why}): the run folder "
                            f"{parent / 'run'} needs a folder you can write to; choose another out_dir")
    assert run.model is None


def _disk_message(cfg, out: Path, base: Path, free: int, tiny_ckpt) -> str:
    from timer1_lib.train import DISK_SLACK, _fmt_bytes
    w = (Path(tiny_ckpt) / 'model.safetensors').stat().st_size
    need = 3 * w + DISK_SLACK                         # smoke: the final model, the cold-start model, 1 checkpoint
    return (f"out_dir={str(out)!r}: not enough free disk space: {_fmt_bytes(free)} ({free} bytes) free on the disk "
            f"of {base}, at least {_fmt_bytes(need)} ({need} bytes) needed (3 x the {_fmt_bytes(w)} of weights in "
            f"{tiny_ckpt}: the final model, the cold-start model, 1 GRPO checkpoint(s), one an epoch; + 8.0 MiB of "
            "logs); free some space or choose an out_dir on another disk")


def test_disk_full_fails_before_the_model(tmp_path, tiny_ckpt, monkeypatch):
    from timer1_lib.train import TrainingRun
    out = tmp_path / 'new' / 'run'
    cfg = _run_cfg(tiny_ckpt, tmp_path, out_dir=str(out))
    real, seen = shutil.disk_usage, []
    def usage(p):
        seen.append(Path(p)); u = real(p)
        return type(u)(u.total, u.total - (5 << 20), 5 << 20)          # 5 MiB free
    monkeypatch.setattr(shutil, 'disk_usage', usage)
    run = TrainingRun(cfg)
    with pytest.raises(OSError) as e:
        run.load_data()
    assert seen == [tmp_path]                       # the nearest existing folder of out_dir
    assert str(e.value) == _disk_message(cfg, out, tmp_path, 5 << 20, tiny_ckpt)
    assert not out.parent.exists() and run.model is None


def test_disk_full_on_a_real_small_tmpfs(tmp_path, tiny_ckpt, tmpfs):
    from timer1_lib.train import TrainingRun
    d = tmpfs(4 << 20)
    cfg = _run_cfg(tiny_ckpt, tmp_path, out_dir=str(d / 'run'))
    with pytest.raises(OSError) as e:
        TrainingRun(cfg).load_data()
    assert str(e.value) == _disk_message(cfg, d / 'run', d, shutil.disk_usage(d).free, tiny_ckpt)


# ---------------------------------------------------------------- checkpoints cut short

def _fake_run_with_checkpoints(out: Path, tiny_ckpt) -> Path:
    "out/grpo/checkpoint-{2,4}: the tiny model's real safetensors, a torch.save optimizer file and both states."
    import torch
    from timer1_lib.curriculum import STATE_FILE, CurriculumState
    for step in (2, 4):
        c = out / 'grpo' / f'checkpoint-{step}'; c.mkdir(parents=True)
        shutil.copy(Path(tiny_ckpt) / 'model.safetensors', c / 'model.safetensors')
        torch.save({'state': {0: {'exp_avg': torch.randn(256, 64)}}}, c / 'optimizer.pt')
        (c / 'trainer_state.json').write_text(json.dumps({'global_step': step}))
        CurriculumState(['a', 'b'], epoch=step // 2, epoch_start_step=step).save(c / STATE_FILE)
    return out / 'grpo'


@pytest.mark.parametrize('damage', ['weights cut', 'optimizer cut', 'no trainer_state', 'no curriculum state'])
def test_resume_latest_skips_a_checkpoint_cut_short(tmp_path, tiny_ckpt, damage):
    "A checkpoint whose write failed mid-way (or was damaged later) is skipped with a warning; the previous resumes."
    from timer1_lib.curriculum import STATE_FILE
    grpo = _fake_run_with_checkpoints(tmp_path / 'run', tiny_ckpt)
    c4 = grpo / 'checkpoint-4'
    f = {'weights cut': 'model.safetensors', 'optimizer cut': 'optimizer.pt', 'no trainer_state': 'trainer_state.json',
         'no curriculum state': STATE_FILE}[damage]
    raw = (c4 / f).read_bytes()
    if damage.endswith('cut'): (c4 / f).write_bytes(raw[:len(raw) // 2])
    else: (c4 / f).unlink()
    why = {'weights cut': f'model.safetensors: truncated ({len(raw) // 2} of {len(raw)} bytes)',
           'optimizer cut': 'optimizer.pt: unreadable (BadZipFile: File is not a zip file)',
           'no trainer_state': 'no trainer_state.json (the run stopped while writing this checkpoint)',
           'no curriculum state': f'no {STATE_FILE} (the run stopped while writing this checkpoint)'}[damage]
    with pytest.warns(UserWarning) as w:
        plan = _run_cfg(tiny_ckpt, tmp_path, out_dir=str(tmp_path / 'run'), resume_from_checkpoint='latest').plan()
    assert plan.resume == grpo / 'checkpoint-2'
    assert f'{c4}: incomplete checkpoint skipped: {why}' in [str(x.message) for x in w]


# ---------------------------------------------------------------- papermill: the failing cell is in the notebook

@pytest.mark.slow
def test_papermill_train_fails_in_the_run_cell_on_a_corrupt_video(tmp_path, tiny_ckpt):
    train, test, vids = _real_data(tmp_path, 'noise')
    out = tmp_path / 'out.ipynb'
    res = run_papermill(ROOT / 'nbs' / 'train.ipynb', out, dict(
        preset='smoke', model_path=tiny_ckpt, train_annotations=train, test_annotations=test, video_root=vids,
        out_dir=tmp_path / 'run', qa_annotations=''))
    assert res.returncode != 0 and out.is_file()
    idx, ename, evalue = error_cell(out)
    assert (idx, ename) == (3, 'UnreadableVideosError'), (idx, ename, evalue)    # run_training, after the config
    assert evalue.startswith(f"train_annotations={str(train)!r}: train: 1 video file(s) cannot be decoded (1 of 4 "
                             f"items): '{vids / 'bad.mp4'}' (record 'item1'): cannot open it: InvalidDataError")
    assert 'UnreadableVideosError' in res.stderr                       # papermill's own report of the failed cell


@pytest.mark.slow
def test_papermill_evaluate_fails_in_the_evaluate_cell_on_a_corrupt_video(tmp_path, tiny_ckpt):
    _, _, vids = _real_data(tmp_path, 'noise')
    test = _write(tmp_path / 'test.json', [{'video': './dataset/bad.mp4', 'duration': 20.0, 'timestamp': [2.0, 6.0],
                                            'sentence': 'q', 'qid': 'item0'}])
    out = tmp_path / 'out.ipynb'
    res = run_papermill(ROOT / 'nbs' / 'evaluate.ipynb', out, dict(
        checkpoints=tiny_ckpt, datasets=test, video_root=vids, out_dir=tmp_path / 'eval', max_new_tokens=4,
        limit=0, baselines=''))
    assert res.returncode != 0 and out.is_file()
    idx, ename, evalue = error_cell(out)
    assert ename == 'UnreadableVideosError' and idx < 4, (idx, ename, evalue)       # data = prepare(cfg), no model
    assert f"'{vids / 'bad.mp4'}' (record 'item0')" in evalue, evalue


# ---------------------------------------------------------------- SIGKILL mid-epoch / disk full mid-checkpoint (slow)

TOY_DRIVER = '''"`python -m timer1_lib.train` with a toy length reward registered (reward variance: the weights move)."
import sys
import timer1_lib.train as T          # first: it sets the reproducible-CPU environment before torch is imported
from timer1_lib.rewards import register_reward, completion_text

@register_reward('toy_length')
def toy_length(completions, **kw):
    return [len(t) / (len(t) + 100) for t in map(completion_text, completions)]

if __name__ == '__main__': T.main(sys.argv[1:])
'''
# 4 items, 2 prompts a step: 2 steps an epoch, checkpoints 2, 4, 6; no cold start (GRPO moves the weights itself)
FLAGS = ['--preset', 'smoke', '--num_train_epochs', '3', '--cold_start', 'False', '--eval_before', 'False',
         '--qa_annotations', '', '--eval_limit', '2', '--learning_rate', '3e-4',
         '--reward_funcs', 'tiou,format_answer,toy_length']


def _train(driver: Path, tiny_ckpt, out: Path, *extra, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'} | {'MPLBACKEND': 'Agg'}
    return subprocess.Popen([sys.executable, str(driver), *FLAGS, '--model_path', str(tiny_ckpt),
                             '--out_dir', str(out), *extra], env=env, cwd=str(ROOT), **popen)


@pytest.fixture(scope='module')
def driver(tmp_path_factory):
    p = tmp_path_factory.mktemp('driver') / 'toy_train.py'; p.write_text(TOY_DRIVER)
    return p


@pytest.fixture(scope='module')
def reference(tmp_path_factory, tiny_ckpt, driver):
    "An uninterrupted run, started at once in the background (the tests run their interrupted runs meanwhile)."
    out = tmp_path_factory.mktemp('reference') / 'run'
    proc = _train(driver, tiny_ckpt, out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    def done() -> Path:
        log, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, log[-3000:]
        return out
    yield done
    if proc.poll() is None: proc.kill(); proc.wait()


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(run / 'model' / 'model.safetensors')


def _same_result(run: Path, ref: Path):
    "Final weights within 1e-5 (CPU, one thread), the same curriculum state and the same per-step rewards."
    import torch
    a, b = _weights(run), _weights(ref)
    assert a.keys() == b.keys()
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert diff <= 1e-5, f'max |w - w_ref| = {diff}'
    st, st_ref = (json.loads((r / 'grpo' / 'curriculum_state.json').read_text()) for r in (run, ref))
    strip = lambda s: {k: v for k, v in s.items() if k != 'history'} | {
        'history': [{k: v for k, v in h.items() if 'second' not in k and 'time' not in k} for h in s['history']]}
    assert strip(st) == strip(st_ref)
    steps = lambda r: {x['step']: x['reward'] for x in map(json.loads, (r / 'grpo' / 'metrics.jsonl').read_text()
                                                           .splitlines()) if 'reward' in x}
    assert steps(run) == pytest.approx(steps(ref), abs=1e-6)
    moved = any(not torch.equal(v, w) for v, w in zip(a.values(), _weights_init(run).values()))
    assert moved, 'the weights did not move: the comparison would prove nothing'


def _weights_init(run: Path) -> dict:
    from safetensors.torch import load_file
    cfg = json.loads((run / 'metrics.json').read_text())['config']
    return load_file(Path(cfg['checkpoint']) / 'model.safetensors')


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path, tiny_ckpt, driver, reference):
    "SIGKILL after step 3 (mid epoch 2; last checkpoint: step 2), resume 'latest': the run ends as if never killed."
    run = tmp_path / 'run'
    proc = _train(driver, tiny_ckpt, run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = run / 'grpo' / 'metrics.jsonl'
    try:
        t0 = time.monotonic()
        while not (log.is_file() and any(json.loads(x).get('step') == 3 for x in log.read_text().splitlines()
                                         if x.strip().endswith('}'))):
            assert proc.poll() is None, 'the run ended before step 3'
            assert time.monotonic() - t0 < 300, 'no step 3 after 300 s'
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / 'grpo' / 'checkpoint-4').exists(), 'killed too late: not mid-epoch'
    from timer1_lib.curriculum import last_complete_checkpoint
    assert last_complete_checkpoint(run / 'grpo') == run / 'grpo' / 'checkpoint-2'
    st = json.loads((run / 'grpo' / 'checkpoint-2' / 'curriculum_state.json').read_text())
    res = _train(driver, tiny_ckpt, run, '--resume_from_checkpoint', 'latest', stdout=subprocess.PIPE,
                 stderr=subprocess.STDOUT, text=True)
    out, _ = res.communicate(timeout=600)
    assert res.returncode == 0, out[-3000:]
    m = json.loads((run / 'metrics.json').read_text())
    assert m['grpo']['resumed_from'] == str(run / 'grpo' / 'checkpoint-2') and m['grpo']['global_step'] == 6
    final = json.loads((run / 'grpo' / 'curriculum_state.json').read_text())
    assert final['history'][0] == st['history'][0] and set(final['remaining']) <= set(st['remaining'])
    _same_result(run, reference())


@pytest.mark.slow
def test_disk_full_while_writing_a_checkpoint_resumes_from_the_previous(tmp_path, tiny_ckpt, driver, reference,
                                                                        tmpfs):
    ("A real 26 MB tmpfs: the space check passes (it counts weights only), checkpoint-6's optimizer file does not "
     "fit; after the disk is enlarged, resume 'latest' skips the cut checkpoint and ends as the uninterrupted run.")
    d = tmpfs(26 << 20)
    run = d / 'run'
    proc = _train(driver, tiny_ckpt, run, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0, out[-3000:]
    # torch.save's own error (torch 2.14: "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected
    # pos ...") comes wrapped in one that names the checkpoint and what to do
    assert 'CheckpointWriteError: writing ' in out and 'checkpoint-6 failed (RuntimeError' in out, out[-3000:]
    assert "rerun with resume_from_checkpoint='latest' (it skips the incomplete checkpoint-6)" in out, out[-3000:]
    assert shutil.disk_usage(d).free < 8 << 20                      # the disk really is full
    c6 = run / 'grpo' / 'checkpoint-6'
    assert c6.is_dir() and not (c6 / 'trainer_state.json').exists()
    from timer1_lib.curriculum import last_complete_checkpoint
    with pytest.warns(UserWarning, match='checkpoint-6: incomplete checkpoint skipped: no trainer_state.json'):
        assert last_complete_checkpoint(run / 'grpo') == run / 'grpo' / 'checkpoint-4'
    subprocess.run(['mount', '-o', 'remount,size=96m', str(d)], check=True)
    res = _train(driver, tiny_ckpt, run, '--resume_from_checkpoint', 'latest', stdout=subprocess.PIPE,
                 stderr=subprocess.STDOUT, text=True)
    out2, _ = res.communicate(timeout=600)
    assert res.returncode == 0, out2[-3000:]
    assert json.loads((run / 'metrics.json').read_text())['grpo']['resumed_from'] == str(run / 'grpo' / 'checkpoint-4')
    _same_result(run, reference())
    (tmp_path / 'first_run.log').write_text(out)
