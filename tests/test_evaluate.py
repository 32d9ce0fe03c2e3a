"""Evaluation runner: hand-computed metrics on synthetic prediction files (overall and grouped), TVGBench crop
windows on the real records, every annotation format through `load_dataset`, and the tiny model end to end
(missing videos, exclusion, resume after interruption, config mismatch)."""
import json, warnings

import pytest

from timer1_lib.data import GroundingItem
from timer1_lib.evaluate import (EvalConfig, MissingVideosError, baseline_run, compare_runs, comparison_summary,
                                 evaluate, evaluate_checkpoint, load_dataset, load_external_predictions, read_metrics,
                                 results_table, write_report)


# ---------------------------------------------------------------- hand-computed metrics on a synthetic file
def _items():
    # id, duration, segment, qtype, source
    spec = [('a', 20.0, (0, 10), 'HP', 'charades'), ('b', 20.0, (10, 20), 'HP', 'anet'),
            ('c', 100.0, (0, 50), 'OC', 'anet'), ('d', 100.0, (20, 30), 'OC', 'charades'),
            ('e', 400.0, (0, 100), 'EC', 'anet'), ('f', 40.0, (10, 14), None, 'charades')]
    return [GroundingItem(id=i, video=f'{i}.mp4', duration=d, query=f'query {i}', segment=s, qtype=q, source=src)
            for i, d, s, q, src in spec]

# predictions and their IoUs, by hand:
#   a [0, 10]  -> 1            b [15, 20] -> 5/10 = 0.5   c [0, 30] -> 30/50 = 0.6
#   d missing  -> 0            e text "<answer>50 to 150</answer>" -> 50/150 = 1/3
#   f [12, 16] -> 2/6 = 1/3
_LINES = [{'id': 'a', 'pred': [0, 10]}, {'id': 'b', 'segment': [20, 15]}, {'qid': 'c', 'pred': [0.0, 30.0]},
          {'id': 'e', 'text': '<think>late</think><answer>50 to 150</answer>'}, {'id': 'f', 'output': '12 to 16'}]
_IOUS = [1.0, 0.5, 0.6, 0.0, 1 / 3, 1 / 3]


@pytest.fixture
def ext_file(tmp_path):
    p = tmp_path / 'other_system.jsonl'
    p.write_text(''.join(json.dumps(r) + '\n' for r in _LINES))
    return p


def test_external_file_hand_computed(ext_file):
    items = _items()
    with pytest.warns(UserWarning, match=r"1 of 6 items of toy have no prediction.*\['d'\]"):
        run = load_external_predictions(ext_file, items, 'other', 'toy')
    assert run.missing == ['d']
    assert run.ious == pytest.approx(_IOUS)
    m = run.metrics()
    # IoU > 0.3: a b c e f (5/6); > 0.5: a c (2/6; b is exactly 0.5); > 0.7: a (1/6); mean = 2.7667/6
    assert m == pytest.approx({'R1@0.3': 500 / 6, 'R1@0.5': 200 / 6, 'R1@0.7': 100 / 6,
                               'mIoU': 100 * (1 + .5 + .6 + 1 / 3 + 1 / 3) / 6, 'n': 6})


def test_grouped_hand_computed(ext_file):
    run = load_external_predictions(ext_file, _items(), 'other', 'toy', warn=False)
    q = run.grouped('qtype')
    assert list(q.index) == ['EC', 'HP', 'OC', 'n/a', 'all']
    assert q.loc['HP', 'mIoU'] == pytest.approx(75.0) and q.loc['HP', 'R1@0.5'] == 50.0
    assert q.loc['OC', 'mIoU'] == pytest.approx(30.0) and q.loc['OC', 'R1@0.3'] == 50.0
    assert q.loc['EC', 'R1@0.3'] == 100.0 and q.loc['n/a', 'n'] == 1
    s = run.grouped('source')
    assert s.loc['charades', 'mIoU'] == pytest.approx(100 * (1 + 0 + 1 / 3) / 3)
    assert s.loc['anet', 'R1@0.5'] == pytest.approx(100 / 3)               # b = 0.5 is not > 0.5; c = 0.6 is
    ln = run.grouped('length')                                             # 20, 20, 100, 100, 400, 40 s
    assert list(ln.index) == ['0-30s', '30-60s', '60-120s', '300-600s', 'all']
    assert ln.loc['0-30s', 'mIoU'] == pytest.approx(75.0) and ln.loc['60-120s', 'mIoU'] == pytest.approx(30.0)
    rel = run.grouped('relative_length')                                   # .5 .5 .5 .1 .25 .1
    assert list(rel.index) == ['10-20%', '20-30%', '50-100%', 'all']
    assert rel.loc['10-20%', 'n'] == 2 and rel.loc['10-20%', 'mIoU'] == pytest.approx(100 / 6)
    assert rel.loc['50-100%', 'mIoU'] == pytest.approx(100 * 2.1 / 3)


def test_table_comparison_and_report(ext_file, tmp_path):
    items = _items()
    run = load_external_predictions(ext_file, items, 'other', 'toy', warn=False)
    full = baseline_run(items, 'full', 'toy')      # IoUs .5 .5 .5 .1 .25 .1
    assert full.ious == pytest.approx([.5, .5, .5, .1, .25, .1])
    t = results_table([run, full])
    assert list(t.index) == ['other', 'baseline: full'] and t.columns.names == ['dataset', 'metric']
    assert list(t.columns) == [('toy', 'R1@0.3'), ('toy', 'R1@0.5'), ('toy', 'R1@0.7'), ('toy', 'mIoU')]
    assert t.loc['baseline: full', ('toy', 'R1@0.3')] == pytest.approx(50.0)
    assert t.loc['baseline: full', ('toy', 'mIoU')] == pytest.approx(100 * 1.95 / 6)
    cmp = compare_runs([run, full], threshold=0.3)
    assert list(cmp['outcome']) == ['both', 'both', 'both', 'neither', 'only other', 'only other']
    assert comparison_summary(cmp).loc['toy'].to_dict() == {'both': 3, 'neither': 1, 'only other': 2}
    write_report([run, full], tmp_path / 'rep')
    for f in ('results.csv', 'results.md', 'per_type.csv', 'per_type.md', 'per_type.png', 'iou_hist.png',
              'comparison.csv', 'metrics.json'):
        assert (tmp_path / 'rep' / f).is_file(), f
    recs = read_metrics(tmp_path / 'rep')
    assert [r['name'] for r in recs] == ['other', 'baseline: full']
    assert recs[0]['missing_ids'] == ['d'] and recs[0]['groups']['qtype']['HP']['mIoU'] == pytest.approx(75.0)
    assert results_table(recs).equals(t)


def test_external_errors(tmp_path):
    items = _items()
    p = tmp_path / 'x.jsonl'
    p.write_text(''.join(json.dumps({'id': i, 'pred': [0, 1]}) + '\n' for i in ['a', 'zz1', 'zz2']))
    with pytest.raises(ValueError, match=r"2 of 3 prediction ids are not items of toy: first 2: \['zz1', 'zz2'\]"):
        load_external_predictions(p, items, dataset='toy')
    p.write_text('{"id": "a", "pred": [0, 1]}\n{"id": "b", "pred": [0, 1\n')
    with pytest.raises(ValueError, match='line 2 is not valid JSON'):
        load_external_predictions(p, items)


# ---------------------------------------------------------------- TVGBench crop windows on the real records
def test_tvgbench_crop_windows_real_records(tmp_path):
    tvg = load_dataset('tvgbench')
    cropped = [it for it in tvg if it.clip is not None]
    assert len(cropped) == 252
    for it in cropped:      # the window is what the model sees: duration = window length, answer inside it
        assert it.duration == pytest.approx(it.clip[1] - it.clip[0], abs=0.02)
        assert 0 <= it.segment[0] <= it.segment[1] <= it.duration + 1e-6
    # a system answering with the exact released ground truth, but in source-video seconds
    p = tmp_path / 'video_time.jsonl'
    with p.open('w') as f:
        for it in tvg:
            s, e = it.orig_segment or it.segment
            o = it.clip[0] if it.clip else 0.0
            f.write(json.dumps({'id': it.id, 'pred': [s + o, e + o]}) + '\n')
    run = load_external_predictions(p, tvg, 'exact', 'TVGBench', timebase='video')
    points = [it.id for it in tvg if (it.orig_segment or it.segment)[0] == (it.orig_segment or it.segment)[1]]
    assert len(points) == 11                    # zero-length ground truths
    m = run.metrics()                           # point_gt='inside': an exact point answer hits its point
    assert m['R1@0.7'] == pytest.approx(100.0) and m['mIoU'] == pytest.approx(100.0, abs=1e-6)
    strict = load_external_predictions(p, tvg, 'exact', 'TVGBench', timebase='video', point_gt='strict')
    m = strict.metrics()                        # point_gt='strict' (TVGBench's own scorer): IoU 0 by definition
    assert m['R1@0.7'] == pytest.approx(100 * 789 / 800) and m['mIoU'] == pytest.approx(100 * 789 / 800, abs=1e-6)
    # read in window time, each cropped item's answer is off by its window start o: IoU of [s+o, e+o] with [s, e]
    wrong = load_external_predictions(p, tvg, 'exact', 'TVGBench', timebase='clip')
    for v, r, it in zip(wrong.ious, run.ious, tvg):
        if it.clip is None: assert v == r; continue
        (s, e), o = it.orig_segment or it.segment, it.clip[0]
        inter, union = max(0.0, e - (s + o)), (e + o) - s
        assert v == pytest.approx(inter / union if union > 0 else 0.0)
    crop = [k for k, it in enumerate(tvg) if it.clip is not None]
    assert sum(wrong.ious[k] for k in crop) / len(crop) < 0.5 * sum(run.ious[k] for k in crop) / len(crop)
    # the breakdown by TVGBench's 11 query types covers all 800 items
    q = run.grouped('qtype')
    assert len(q) == 12 and q.loc['all', 'n'] == 800 and q.loc['Human Action (Simple)', 'n'] == 306
    s = run.grouped('source')
    assert dict(s['n']) == {'anet': 168, 'charades': 138, 'egonlq': 168, 'hirest': 158, 'tacos': 168, 'all': 800}
    # item 154: window [53.06, 152.43] of its video; length bin from the 99.4 s window, not the source video
    i154 = [k for k, it in enumerate(tvg) if it.id == 'tvgbench-154'][0]
    assert run.groups('length')[i154] == '60-120s'


# ---------------------------------------------------------------- annotation formats
def test_formats_through_load_dataset(tmp_path):
    from timer1_lib.video import write_synthetic_video
    write_synthetic_video(tmp_path / 'v' / 'VID01.mp4', 5.0, fps=4)
    (tmp_path / 'cha.txt').write_text('VID01 0.5 2.0##a person opens the door.\n')
    (tmp_path / 'anet.json').write_text(json.dumps({'v_x': {'duration': 30.0, 'timestamps': [[1, 5], [10, 20]],
                                                            'sentences': ['one.', 'two.']}}))
    (tmp_path / 'qvh.jsonl').write_text(json.dumps({'qid': 7, 'vid': 'abc_60.0_210.0', 'query': 'a dog runs',
                                                    'duration': 150, 'relevant_windows': [[20, 40]]}) + '\n')
    cha = load_dataset(f'charades:{tmp_path / "cha.txt"}', video_root=tmp_path / 'v')
    assert cha.name == 'Charades-STA' and cha[0].duration == pytest.approx(5.0, abs=0.3)
    an = load_dataset(f'{tmp_path / "anet.json"}')
    assert [it.id for it in an] == ['v_x|0', 'v_x|1'] and an[1].segment == (10.0, 20.0)
    qv = load_dataset(f'QVH=qvhighlights:{tmp_path / "qvh.jsonl"}')
    assert qv.name == 'QVH' and qv[0].segment == (20.0, 40.0)
    assert EvalConfig(datasets=f'charades:{tmp_path / "cha.txt"}').specs[0].name == 'Charades-STA'


# ---------------------------------------------------------------- the tiny model end to end
@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    from timer1_lib.model import make_tiny_model, load_model, load_processor
    from timer1_lib.video import write_synthetic_video
    root = tmp_path_factory.mktemp('tiny')
    ck = make_tiny_model(root / 'ckpt', size='test')
    for k, d in enumerate([3.0, 4.0, 5.0, 6.0]): write_synthetic_video(root / 'videos' / f'v{k}.mp4', d, fps=4)
    items = [GroundingItem(id=f'q{k}', video=f'v{k % 4}.mp4', duration=3.0 + k % 4, query=f'the red ball moves {k}',
                           segment=(0.5, 2.0), qtype='OT' if k % 2 else 'HP', source='synth') for k in range(6)]
    return dict(ckpt=ck, root=root, items=items, model=load_model(ck), proc=load_processor(ck))


class _Count:
    def __init__(self, model): self.model, self.orig, self.n = model, model.generate, 0
    def __enter__(self):
        def gen(*a, **kw): self.n += 1; return self.orig(*a, **kw)
        self.model.generate = gen; return self
    def __exit__(self, *exc): del self.model.generate


def _cfg(tiny, out, **kw):
    kw = dict(datasets='synth-test', max_new_tokens=6, batch_size=2, frame_cache=None) | kw
    return EvalConfig(checkpoints=[str(tiny['ckpt'])], video_root=str(tiny['root'] / 'videos'), out_dir=str(out), **kw)


def test_tiny_resume_after_interruption(tiny, tmp_path):
    cfg = _cfg(tiny, tmp_path)
    kw = dict(name='tiny', items=tiny['items'], model=tiny['model'], processor=tiny['proc'], progress=False)
    with _Count(tiny['model']) as c: first = evaluate_checkpoint(tiny['ckpt'], 'synth-test', cfg, **kw)
    assert c.n == 3
    pf = tmp_path / 'tiny' / 'SynthTVG-test' / 'predictions.jsonl'
    head = json.loads(pf.read_text().splitlines()[0])
    assert (head['type'], head['model'], head['prompt'], head['max_new_tokens'], head['generation']['do_sample']) == \
        ('config', str(tiny['ckpt']), 'nothink', 6, False)            # prompt='auto': no-think for tiny models
    assert json.loads((pf.parent / 'metrics.json').read_text())['overall']['n'] == 6
    lines = pf.read_text().splitlines()                       # interrupted: 3 complete records and half a line
    pf.write_text('\n'.join(lines[:4]) + '\n' + lines[4][:30])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with _Count(tiny['model']) as c: again = evaluate_checkpoint(tiny['ckpt'], 'synth-test', cfg, **kw)
    assert c.n == 2                                          # items 4, 5, 6 in batches of 2
    assert again.texts == first.texts and again.metrics() == first.metrics()
    # two prediction files compared on their own ground truth (the `gt` field `predict` writes)
    import shutil
    shutil.copy(pf, tmp_path / 'copy.jsonl')
    cmp = compare_runs({'a': pf, 'b': tmp_path / 'copy.jsonl'})
    assert len(cmp) == 6 and set(cmp['outcome']) <= {'both', 'neither'}
    assert list(cmp['iou a']) == list(cmp['iou b']) == again.ious
    from timer1_lib.infer import PredictionConfigError
    with pytest.raises(PredictionConfigError, match='prompt'):
        evaluate_checkpoint(tiny['ckpt'], 'synth-test', _cfg(tiny, tmp_path, prompt='think'), **kw)


def test_missing_videos_fail_before_the_model(tiny, tmp_path, monkeypatch):
    import timer1_lib.evaluate as E
    items = tiny['items'] + [GroundingItem(id='lost', video='gone.mp4', duration=3, query='x', segment=(0, 1))]
    monkeypatch.setattr(E, 'load_checkpoint', lambda *a, **k: pytest.fail('model loaded despite missing videos'))
    with pytest.raises(MissingVideosError, match=r"1 video\(s\) missing \(1 of 7 items\).*\['gone.mp4'\]"):
        evaluate_checkpoint(tiny['ckpt'], 'synth-test', _cfg(tiny, tmp_path), items=items)
    assert (tmp_path / 'missing_videos_SynthTVG-test.txt').read_text() == 'gone.mp4\n'
    with pytest.warns(UserWarning, match='evaluating 6 items'):
        run = evaluate_checkpoint(tiny['ckpt'], 'synth-test', _cfg(tiny, tmp_path, exclude_missing=True), items=items,
                                  model=tiny['model'], processor=tiny['proc'], progress=False)
    assert run.ids == [f'q{k}' for k in range(6)]
    # the whole-evaluation entry point stops in `prepare`, before any model, for a dataset without its videos
    with pytest.raises(MissingVideosError, match=r'TVGBench: \d+ video\(s\) missing \(800 of 800 items\)'):
        evaluate(_cfg(tiny, tmp_path, datasets='tvgbench'))
