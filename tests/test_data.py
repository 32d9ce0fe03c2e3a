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
        gt = it.orig_segment or it.segment            # the loader clipped 34 overshooting ends; difficulty used the raw ones
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
