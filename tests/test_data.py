"""Integration tests of the bundled annotations against the rewards and metrics modules."""
import json, math, warnings
import pytest
from timer1_lib.data import load_timerft, load_tvgbench, asset_path, write_timerft, load_annotations
from timer1_lib.rewards import iou
from timer1_lib.metrics import grounding_metrics


@pytest.fixture(scope='module')
def timerft():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return load_timerft()


def test_difficulty_is_100_iou_of_pred_for_all_items(timerft):
    "TimeRFT's `difficulty` is 100·IoU(pred, timestamp) on the released ground truth, for all 2,500 items."
    assert len(timerft) == 2500
    for it in timerft:
        # the loader clipped 34 overshooting ends; difficulty used the raw ones
        gt = it.orig_segment or it.segment
        assert math.isclose(it.difficulty, 100 * iou(it.pred, gt), abs_tol=1e-6), it.id


def test_difficulty_matches_raw_json():
    raw = json.loads(asset_path('train_2k5.json').read_text())
    assert all(math.isclose(r['difficulty'], 100 * iou(r['pred'], r['timestamp']), abs_tol=1e-6) for r in raw)


def test_base_model_metrics_on_timerft(timerft):
    "grounding_metrics on the stored base-model predictions: mIoU equals the mean difficulty on the raw ground truth."
    preds = [it.pred for it in timerft]
    gts = [it.orig_segment or it.segment for it in timerft]
    m = grounding_metrics(preds, gts)
    assert math.isclose(m['mIoU'], sum(it.difficulty for it in timerft) / len(timerft), abs_tol=1e-6)
    assert m['R1@0.3'] >= m['R1@0.5'] >= m['R1@0.7']
    assert math.isclose(m['R1@0.5'], 100 * sum(it.difficulty > 50 for it in timerft) / len(timerft), abs_tol=1e-9)


def test_roundtrip_bundled_tvgbench(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        tvg = load_tvgbench()
        back = load_annotations(write_timerft(tvg, tmp_path / 'tvg.json'), allow_zero_length=True)
    assert [(a.id, a.segment, a.clip, a.duration, a.qtype, a.source) for a in back] == \
           [(a.id, a.segment, a.clip, a.duration, a.qtype, a.source) for a in tvg]


# ---- several ground-truth windows (issue #12, item 5) and point ground truths (item 10)

def test_qvhighlights_second_window_counts_loader_metrics_reward(tmp_path):
    ("A QVHighlights record with two windows: a prediction of the second window is a hit in the loader's item, "
     "the metrics, the GRPO row and the rewards.")
    from timer1_lib.grpo import grounding_rows
    from timer1_lib.metrics import item_iou, grounding_metrics as gm
    from timer1_lib.rewards import iou_reward, tiou_reward, recall_reward
    p = tmp_path / 'qvh.jsonl'
    p.write_text(json.dumps({'qid': 3, 'query': 'a man waves', 'vid': 'v', 'duration': 150,
                             'relevant_windows': [[10, 20], [60, 80]]}) + '\n')
    it, = load_annotations(p)
    assert it.segment == (10.0, 20.0) and it.windows == ((10.0, 20.0), (60.0, 80.0))
    assert item_iou((60, 80), it.gt_windows) == 1.0 and iou((60, 80), it.segment) == 0.0
    m = gm([(60, 80), (10, 20), (0, 5)], [it.gt_windows] * 3)
    assert (m['R1@0.7'], m['mIoU']) == (100 * 2 / 3, 100 * 2 / 3)
    (tmp_path / 'v.mp4').write_bytes(b'')
    row, = grounding_rows([it], video_root=tmp_path)
    assert row['windows'] == [[10.0, 20.0], [60.0, 80.0]] and row['segment'] == [10.0, 20.0]
    cols = {k: [row[k]] for k in ('segment', 'duration', 'windows')}
    for f in (iou_reward, tiou_reward, recall_reward):
        assert f(['<think>x</think><answer>60 to 80</answer>'], **cols) == [1.0], f.__name__
        assert f(['<answer>60 to 80</answer>'], segment=cols['segment'], duration=cols['duration']) == [0.0]


def test_tvgbench_point_ground_truths():
    ("The 11 zero-length TVGBench items: a short prediction holding the point counts under the default rule, "
     "never under 'strict'; other items are unaffected.")
    from timer1_lib.metrics import grounding_metrics as gm, pred_ious, point_gt_count
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        tvg = load_tvgbench()
    pts = [it for it in tvg if it.segment[0] == it.segment[1]]
    assert len(pts) == 11 == len(tvg.kept) == point_gt_count([it.segment for it in tvg])
    gts = [it.segment for it in pts]
    near = [(it.segment[0] - 0.25, it.segment[0] + 0.25) for it in pts]           # 0.5 s around the point
    assert gm(near, gts)['R1@0.7'] == 100.0 and gm(near, gts, point_gt='strict')['R1@0.3'] == 0.0
    assert gm([(it.segment[0] - 5, it.segment[0] + 5) for it in pts], gts)['mIoU'] == 0.0          # 10 s: too long
    assert gm([(0, it.duration) for it in pts], gts)['mIoU'] == 0.0                               # the whole video
    assert gm([(it.segment[0] + 0.5, it.segment[0] + 1) for it in pts], gts)['mIoU'] == 0.0       # short but beside it
    full = [(0, it.duration) for it in tvg]
    assert (pred_ious(full, [it.segment for it in tvg])
            == pred_ious(full, [it.segment for it in tvg], point_gt='strict'))


def test_base_model_table_unchanged_by_the_point_rule():
    "The pinned base-model table of train_2k5.json (56.60 / 16.92 / 2.88 / 34.37) under both point rules."
    from timer1_lib.metrics import point_gt_count
    raw = json.loads(asset_path('train_2k5.json').read_text())
    preds, gts = [r['pred'] for r in raw], [r['timestamp'] for r in raw]
    assert point_gt_count(gts) == 0
    for rule in ('inside', 'strict'):
        m = grounding_metrics(preds, gts, point_gt=rule)
        assert [round(m[k], 2) for k in ('R1@0.3', 'R1@0.5', 'R1@0.7', 'mIoU')] == [56.6, 16.92, 2.88, 34.37], rule


def test_evaluate_scores_the_best_window_and_reports_points(tmp_path):
    ("evaluate.RunResult: a multi-window item scores its best window; metrics.json and results.md record "
     "the point rule and n_point_gt.")
    from timer1_lib.data import GroundingItem
    from timer1_lib.evaluate import RunResult, released_gt, write_report
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        tvg = load_tvgbench()
    multi = GroundingItem('m', 'v.mp4', 150, 'q', (10, 20), windows=[(10, 20), (60, 80)])
    assert released_gt(multi) == ((10.0, 20.0), (60.0, 80.0))
    assert released_gt(tvg[0]) == (tvg[0].orig_segment or tvg[0].segment)
    run = RunResult('m', 'qvh', [multi], [(60, 80)])
    assert run.ious == [1.0] and run.metrics()['R1@0.7'] == 100.0
    pts = [it for it in tvg if it.segment[0] == it.segment[1]]
    near = [(it.segment[0] - 0.25, it.segment[0] + 0.25) for it in pts]
    runs = [RunResult('near', 'TVGBench', pts, near),
            RunResult('near strict', 'TVGBench', pts, near, point_gt='strict')]
    assert [r.metrics()['mIoU'] for r in runs] == [100.0, 0.0]
    files = write_report(runs, tmp_path)
    rep = json.loads(files['metrics.json'].read_text())
    assert ([(r['scoring']['point_gt'], r['scoring']['n_point_gt']) for r in rep['runs']]
            == [('inside', 11), ('strict', 11)])
    md = files['results.md'].read_text()
    assert "TVGBench: 11 zero-length ground truth(s); point_gt='inside'" in md and "point_gt='strict'" in md


# ---- dense captions (issue #13)

def test_bundled_files_have_no_captions_and_load_as_released(timerft):
    "The bundled files carry no captions: items keep the released ids and segments, and `captions` stays empty."
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        tvg = load_tvgbench()
    raw = json.loads(asset_path('train_2k5.json').read_text())
    assert [it.id for it in timerft] == [r['qid'] for r in raw]
    assert [list(it.orig_segment or it.segment) for it in timerft] == [[float(x) for x in r['timestamp']] for r in raw]
    assert [it.id for it in tvg] == [f'tvgbench-{i:03d}' for i in range(800)]
    assert all(it.captions == () and 'captions' not in it.meta for it in timerft + tvg)


def test_captions_roundtrip_tvgbench_format_through_write_timerft(tmp_path):
    "Captions of a cropped TVGBench record stay relative to the window through write_timerft and back."
    rec = {'path': 'v.mp4', 'question': 'a man waves', 'answer': '2-5', 'start': 10, 'end': 40, 'duration': 30,
           'captions': [[6, 30, 'he leaves'], [0, 6, 'a man waves']]}
    (tmp_path / 'tvg.json').write_text(json.dumps([rec]))
    it, = load_annotations(tmp_path / 'tvg.json')
    assert it.captions == ((6.0, 30.0, 'he leaves'), (0.0, 6.0, 'a man waves')) and it.clip == (10.0, 40.0)
    back, = load_annotations(write_timerft([it], tmp_path / 'a.json'))
    assert back == it
