"""Headless tests of timer1_lib.viewer (nbs/30_viewer.ipynb): scrubber, timeline and case browser logic, bad inputs."""
import io, json, os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from plotly.callbacks import InputDeviceState, Points

from timer1_lib.data import ASSETS
from timer1_lib.video import FrameCache, synthetic_frame_index, write_synthetic_video
from timer1_lib.viewer import (MENTIONS_TRACE, PLAYHEAD_TRACE, Case, CaseBrowser, Scrubber, browse, load_examples,
                               make_cases, score_prediction, time_mentions)

ROOT = Path(__file__).resolve().parents[1]
NB_EXPLORE = ROOT / 'nbs' / 'explore.ipynb'


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    return FrameCache(tmp_path_factory.mktemp('frames'))


@pytest.fixture(scope='module')
def v12(tmp_path_factory):
    "12 s at 4 fps; frame i shows the number i (read back with synthetic_frame_index)."
    return write_synthetic_video(tmp_path_factory.mktemp('v') / 'v12.mp4', 12, fps=4)


def frame_number(jpeg: bytes) -> int:
    return synthetic_frame_index(np.asarray(Image.open(io.BytesIO(jpeg)).convert('RGB')))


def case(video, cid='c1', gt=(3.0, 6.0),
         texts=('<think>it starts at 0:03 and lasts from 3 to 6 s</think><answer>3 to 6</answer>',), **kw):
    preds = [score_prediction(f'run{k}', t, gt, 12.0) for k, t in enumerate(texts)]
    return Case(cid, f'query {cid}', str(video), 12.0, gt, preds, **kw)


def test_slider_changes_image_bytes_and_playhead(v12, cache):
    sc = Scrubber(case(v12), cache=cache)
    assert sc.error is None and len(sc.source) == 48 and sc.slider.step == 0.25
    assert frame_number(sc.image.value) == 0 and sc.playhead == 0.0
    seen = []
    for t, want in ((2.0, 8), (2.6, 10), (11.9, 47), (0.4, 2)):
        before = sc.image.value
        sc.slider.value = t
        assert sc.image.value != before
        assert frame_number(sc.image.value) == want, t
        assert sc.playhead == t and tuple(sc.timeline.data[PLAYHEAD_TRACE].x) == (t, t)
        seen.append(sc.image.value)
    assert len(set(seen)) == 4
    assert 'frame 3/48' in sc.frame_label.value


def test_play_button_and_timeline_click_seek(v12, cache):
    sc = Scrubber(case(v12), cache=cache)
    assert sc.play.max == 47 and sc.play.interval == 250      # real time: one frame per 0.25 s
    sc.play.value = 20
    assert sc.slider.value == 5.0 and frame_number(sc.image.value) == 20 and sc.playhead == 5.0
    sc.slider.value = 7.0
    assert sc.play.value == 28                                 # the play button follows the slider
    sc._on_click(sc.timeline.data[0], Points([3], [9.1], [0], 'seek', 0), InputDeviceState())
    assert sc.slider.value == 9.1 and frame_number(sc.image.value) == 36 and sc.playhead == 9.1
    sc.seek(100)                                               # clamped
    assert sc.slider.value == sc.slider.max == 12.0


def test_timeline_tracks_segments_and_thinking_marks(v12, cache):
    c = case(v12, texts=('<think>at 0:02, then from 3 to 6 s</think><answer>3 to 6</answer>',
                         '<answer>8 to 10</answer>', 'I cannot tell.'))
    sc = Scrubber(c, cache=cache)
    fig = sc.timeline
    assert list(fig.layout.yaxis.ticktext) == ['ground truth', 'run0', 'run0 · thinking', 'run1', 'run2']
    rects = {(s.x0, s.x1) for s in fig.layout.shapes}
    assert {(3.0, 6.0), (8.0, 10.0)} <= rects
    assert sorted(fig.data[MENTIONS_TRACE].x) == [2.0, 4.5]
    assert any('unparsable' in a.text for a in fig.layout.annotations)
    assert fig.layout.xaxis.range == (0, 12.0)
    assert '<mark' in sc.info.value and '0:02' in sc.info.value


def test_selecting_a_case_updates_every_part(v12, cache, tmp_path):
    other = write_synthetic_video(tmp_path / 'v6.mp4', 6, fps=4)
    a = case(v12, 'a', texts=('<answer>3 to 6</answer>',), dataset='d1', qtype='x')
    b = Case('b', 'the second query', str(other), 6.0, (1.0, 2.0),
             [score_prediction('run0', '<think>early, from 0.5 to 2 s</think><answer>0.5 to 2</answer>',
                               (1.0, 2.0), 6.0)],
             dataset='d2', qtype='y')
    br = CaseBrowser([a, b], cache=cache, sort='-iou')
    assert [c.id for c in br.cases] == ['a', 'b'] and br.current.id == 'a'
    br.scrubber.slider.value = 10.0
    parts = lambda: (br.scrubber.image.value, br.scrubber.info.value,
                     tuple(br.scrubber.timeline.layout.yaxis.ticktext), br.scrubber.timeline.layout.xaxis.range,
                     br.scrubber.slider.max, br.status.value, br.case_menu.value)
    before = parts()
    br.step(1)
    after = parts()
    assert br.current.id == 'b' and br.index == 1
    assert all(x != y for x, y in zip(before, after)), (before, after)
    assert frame_number(br.scrubber.image.value) == 0
    assert br.scrubber.slider.value == 0.0 and br.scrubber.playhead == 0.0
    assert 'the second query' in br.scrubber.info.value and br.scrubber.slider.max == 6.0
    assert 'case 2 / 2' in br.status.value and br.next_btn.disabled and not br.prev_btn.disabled
    br.case_menu.value = 0                                     # the case menu selects too
    assert br.current.id == 'a'
    br.dataset.value = 'd2'
    assert [c.id for c in br.cases] == ['b'] and br.current.id == 'b'


def test_missing_video_renders_a_message(tmp_path, cache):
    c = case(tmp_path / 'not_here.mp4')
    sc = Scrubber(c, cache=cache)
    assert 'Video not found' in sc.message.value and 'not_here.mp4' in sc.message.value
    assert sc.image.layout.display == 'none' and sc.play.disabled
    sc.slider.value = 5.0                                      # the timeline still follows
    assert sc.playhead == 5.0 and 'query c1' in sc.info.value
    sc2 = Scrubber(c, cache=cache, video_root=tmp_path)
    assert 'video_root=' in sc2.message.value and str(tmp_path) in sc2.message.value


def test_undecodable_video_renders_a_message(tmp_path, cache):
    bad = tmp_path / 'broken.mp4'
    bad.write_bytes(os.urandom(4096))
    sc = Scrubber(case(bad), cache=cache)
    assert 'Cannot decode' in sc.message.value and 'broken.mp4' in sc.message.value and sc.source is None


def test_empty_predictions_render_a_message(tmp_path, cache, v12):
    p = tmp_path / 'empty.jsonl'
    p.write_text(json.dumps({'type': 'config', 'model': 'm'}) + '\n')
    br = browse(p, cache=cache)
    assert br.cases == [] and 'hold no records' in br.scrubber.message.value
    sc = Scrubber(Case('z', 'q', str(v12), 12.0, (1.0, 2.0)), cache=cache)     # a case nobody predicted
    assert 'No predictions' in sc.message.value and 'No predictions' in sc.info.value


def test_unparsable_output_renders_a_message(v12, cache):
    sc = Scrubber(case(v12, texts=('<think>somewhere early</think><answer>early on</answer>',)), cache=cache)
    p = sc.case.predictions[0]
    assert (p.pred, p.iou, p.tiou, p.format) == (None, 0.0, 0.0, 1.0)
    assert 'unparsable' in sc.info.value and 'no “s to e” pair found' in sc.info.value
    assert any('no segment (unparsable answer)' in a.text for a in sc.timeline.layout.annotations)


def test_browse_an_evaluation_folder(tmp_path, cache, v12):
    out = tmp_path / 'eval' / 'run1'
    runs = []
    for name, ans in (('ckA', '3 to 6'), ('ckB', '7 to 9')):
        f = out / name / 'Synth' / 'predictions.jsonl'
        f.parent.mkdir(parents=True)
        recs = [{'type': 'config', 'model': name},
                {'type': 'prediction', 'id': 'x1', 'query': 'q', 'video': str(v12), 'text': f'<answer>{ans}</answer>',
                 'pred': [float(v) for v in ans.split(' to ')], 'gt': [3.0, 6.0], 'duration': 12.0}]
        f.write_text('\n'.join(json.dumps(r) for r in recs) + '\n')
        runs.append({'name': name, 'dataset': 'Synth', 'predictions': str(f)})
    (out / 'metrics.json').write_text(json.dumps({'schema': 'timer1.eval/1', 'config': {'checkpoints': ['tiny']},
                                                  'runs': runs}))
    br = browse(out, cache=cache)
    assert [c.id for c in br.cases] == ['x1'] and br.current.runs == ['ckA', 'ckB']
    assert br.scrubber.source is not None and br.current.disagreement == 1.0
    br.outcome.value = 'mixed'
    assert [c.id for c in br.cases] == ['x1']
    br.run.value = 'ckB'; br.outcome.value = 'hit'
    assert br.cases == [] and 'No cases match' in br.scrubber.message.value


def test_ohofg_examples_on_the_real_video(cache):
    runs, items = load_examples()
    c = make_cases(runs, items)[0]
    assert (c.query, c.gt, c.duration) == ('person sitting down in a chair.', (1.0, 7.5), 35.04)
    assert [p.pred for p in c.predictions] == [(1.2, 7.0), (15.5, 22.0), None, (2.0, 6.0)]
    sc = Scrubber(c, cache=cache)
    assert sc.source.video.path == str(ASSETS / 'OHOFG.mp4') and 130 <= len(sc.source) <= 142
    assert sc.source.video.size == (252, 448)
    img0 = sc.image.value
    sc.seek(4.0)
    assert sc.image.value != img0 and Image.open(io.BytesIO(sc.image.value)).size == (448, 252)


@pytest.mark.parametrize('text,want', [
    ('from 1.2 to 7.0 seconds', [(1.2, 7.0)]),
    ('between 15.5 and 22 s', [(15.5, 22.0)]),
    ('<2.0 to 5.5: stands up>', [(2.0, 5.5)]),
    ('at 0:01, then 0:03-0:07', [(1.0, 1.0), (3.0, 7.0)]),
    ('after 8 s and around 14.', [(8.0, 8.0), (14.0, 14.0)]),
    ('2 people take 3 steps', []),
])
def test_time_mentions(text, want):
    assert [(m.start, m.end) for m in time_mentions(text)] == want


def test_reader_agrees_with_infer_read_predictions(tmp_path):
    "The viewer reads prediction files without importing transformers; it must read them as infer does."
    from timer1_lib.infer import read_predictions
    from timer1_lib.viewer import load_run
    recs = [{'type': 'config', 'model': 'm', 'prompt': 'think'},
            {'type': 'prediction', 'id': 'a', 'text': '<answer>1 to 2</answer>', 'pred': [1.0, 2.0], 'gt': [1.0, 2.0],
             'duration': 5.0},
            {'type': 'prediction', 'id': 'b', 'text': 'x', 'pred': None, 'gt': [0.0, 1.0], 'duration': 5.0}]
    p = tmp_path / 'p.jsonl'
    # interrupted last line
    p.write_text('\n'.join(json.dumps(r) for r in recs) + '\n{"type": "prediction", "id": "c", "te')
    with pytest.warns(UserWarning):
        cfg, got = read_predictions(p)
    run = load_run(p)
    assert run.config == cfg and list(run.records.values()) == got and list(run.records) == ['a', 'b']
    p.write_text(json.dumps(recs[1]) + '\n')
    with pytest.raises(ValueError, match='config'): read_predictions(p)
    with pytest.raises(ValueError, match='config'): load_run(p)


# --- rollouts of a GRPO / TaRO run (completions.jsonl) --------------------------------------------------------------

PREFIX_A = 'I need to find the specific moment a person opens a door.\nFrom 0.5 to 2, a person walks in.'
PREFIX_B = PREFIX_A + '\nFrom 2 to 4.5, the person opens a door.'

# Hand-written log: gen_step 0 is one group of 2 rows written before TaRO (no TaRO keys at all), gen_step 1 one TaRO
# group of 4 (two constructed: k=1 and k=2; two free: one with p and q but no d key, one without reasoning tokens),
# then a row of an eval pass and an interrupted last line.
COMPLETIONS_LOG = '\n'.join([
    '{"gen_step": 0, "mode": "train", "group": 0, "id": "x-0", "video": "VIDEO", "clip": null, "duration": 12.0, '
    '"query": "a person opens a door", "segment": [2.0, 4.5], "completion": "<think>at 0:03</think><answer>2 to 4'
    '</answer>", "pred": [2.0, 4.0], "rewards": {"tiou": 0.6, "format": 1.0}, "reward": 1.6, "advantage": 0.9, '
    '"step": 1}',
    '{"gen_step": 0, "mode": "train", "group": 0, "id": "x-0", "video": "VIDEO", "clip": null, "duration": 12.0, '
    '"query": "a person opens a door", "segment": [2.0, 4.5], "completion": "no idea", "pred": null, '
    '"rewards": {"tiou": 0.0, "format": 0.0}, "reward": 0.0, "advantage": -0.9, "step": 1}',
    '{"gen_step": 1, "mode": "train", "group": 0, "id": "x-1", "video": "VIDEO", "clip": [1.0, 13.0], '
    '"duration": 12.0, "query": "a person opens a door", "segment": [2.0, 4.5], '
    '"completion": "<think>' + json.dumps(PREFIX_A)[1:-1] + ' Next the door.</think><answer>0.5 to 4</answer>", '
    '"pred": [0.5, 4.0], "rewards": {"tiou": 0.5, "format": 1.0, "temporal_sensitivity": 0.0}, "reward": 1.5, '
    '"advantage": 0.1, "step": 2, "constructed": true, "prefix_k": 1, "prefix": ' + json.dumps(PREFIX_A) + ', '
    '"taro_p": -0.8, "taro_q": -0.7, "taro_d": -0.1}',
    '{"gen_step": 1, "mode": "train", "group": 0, "id": "x-1", "video": "VIDEO", "clip": [1.0, 13.0], '
    '"duration": 12.0, "query": "a person opens a door", "segment": [2.0, 4.5], '
    '"completion": "<think>\\n' + json.dumps(PREFIX_B)[1:-1] + ' <img src=x onerror=alert(1)></think>'
    '<answer>2 to 4.5</answer>", "pred": [2.0, 4.5], "rewards": {"tiou": 1.0, "format": 1.0, '
    '"temporal_sensitivity": 0.3}, "reward": 2.3, "advantage": 1.1, "step": 2, "constructed": true, "prefix_k": 2, '
    '"prefix": ' + json.dumps(PREFIX_B) + ', "taro_p": -0.25, "taro_q": -0.75, "taro_d": 0.5}',
    '{"gen_step": 1, "mode": "train", "group": 0, "id": "x-1", "video": "VIDEO", "clip": [1.0, 13.0], '
    '"duration": 12.0, "query": "a person opens a door", "segment": [2.0, 4.5], '
    '"completion": "<think>from 3 to 5 s</think><answer>3 to 5</answer>", "pred": [3.0, 5.0], '
    '"rewards": {"tiou": 0.4, "format": 1.0, "temporal_sensitivity": 0.3}, "reward": 1.7, "advantage": -0.2, '
    '"step": 2, "constructed": false, "prefix_k": null, "prefix": null, "taro_p": -1.5, "taro_q": -1.75}',
    '{"gen_step": 1, "mode": "train", "group": 0, "id": "x-1", "video": "VIDEO", "clip": [1.0, 13.0], '
    '"duration": 12.0, "query": "a person opens a door", "segment": [2.0, 4.5], '
    '"completion": "<answer>9 to 10</answer>", "pred": [9.0, 10.0], '
    '"rewards": {"tiou": 0.0, "format": 0.0, "temporal_sensitivity": 0.0}, "reward": 0.0, "advantage": -1.0, '
    '"step": 2, "constructed": false, "prefix_k": null, "prefix": null, "taro_p": null, "taro_q": null, '
    '"taro_d": null}',
    '{"gen_step": 1, "mode": "eval", "group": 0, "id": "x-9", "video": "VIDEO", "clip": null, "duration": 12.0, '
    '"query": "q", "segment": [1.0, 2.0], "completion": "<answer>1 to 2</answer>", "pred": [1.0, 2.0], '
    '"rewards": {"tiou": 1.0}, "reward": 1.0, "advantage": 0.0, "step": 2}',
    '{"gen_step": 2, "mode": "tra'])


@pytest.fixture
def run_dir(tmp_path, v12):
    f = tmp_path / 'run' / 'grpo' / 'completions.jsonl'
    f.parent.mkdir(parents=True)
    f.write_text(COMPLETIONS_LOG.replace('VIDEO', str(v12)))
    return tmp_path / 'run'


def load_log(run_dir):
    from timer1_lib.viewer import load_completions
    with pytest.warns(UserWarning, match='incomplete last line'):
        return load_completions(run_dir)


def test_load_completions_fills_old_rows(run_dir):
    import math
    df = load_log(run_dir)
    assert len(df) == 7 and df['line'].tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert df['constructed'].tolist() == [False, False, True, True, False, False, False]
    assert df['kind'].tolist() == ['free', 'free', 'constructed', 'constructed', 'free', 'free', 'free']
    assert df['prefix_k'].tolist() == [None, None, 1, 2, None, None, None]
    assert df['prefix'].tolist() == [None, None, PREFIX_A, PREFIX_B, None, None, None]
    assert df['rollout'].tolist() == [0, 1, 0, 1, 2, 3, 0]
    d = df['taro_d'].tolist()
    assert math.isnan(d[0]) and math.isnan(d[1]) and d[2:4] == [-0.1, 0.5] and math.isnan(d[5])
    assert d[4] == -1.5 - -1.75 == 0.25                                   # no taro_d key: d = p - q
    assert df['bonus'].isna().tolist() == [True, True, False, False, False, False, True]
    assert df['mode'].tolist()[-1] == 'eval' and df['rewards'][0] == {'tiou': 0.6, 'format': 1.0}


def test_rollout_summary_numbers(run_dir):
    import math
    from timer1_lib.viewer import rollout_summary
    s = rollout_summary(load_log(run_dir))
    assert list(s.columns) == ['gen_step', 'kind', 'n', 'mean_reward', 'mean_advantage', 'n_d', 'mean_d', 'bonus_frac']
    assert s[['gen_step', 'kind', 'n', 'n_d']].values.tolist() == [[0, 'free', 2, 0], [1, 'constructed', 2, 2],
                                                                  [1, 'free', 2, 1]]
    want = {'mean_reward': [0.8, 1.9, 0.85], 'mean_advantage': [0.0, 0.6, -0.6],
            'mean_d': [math.nan, 0.2, 0.25], 'bonus_frac': [math.nan, 0.5, 0.5]}
    for col, ws in want.items():
        for got, w in zip(s[col], ws):
            assert (math.isnan(got) and math.isnan(w)) or math.isclose(got, w, abs_tol=1e-12), (col, got, w)
    ev = rollout_summary(load_log(run_dir), mode='eval')
    assert ev[['gen_step', 'kind', 'n', 'mean_reward']].values.tolist() == [[1, 'free', 1, 1.0]]
    assert len(rollout_summary(load_log(run_dir), mode=None)) == 3


def test_rollout_panel_marks_prefix_and_d(run_dir):
    from timer1_lib.viewer import completion_html, rollout_groups, rollout_html
    df = load_log(run_dir)
    groups = rollout_groups(df)
    assert groups == [[0, 1], [2, 3, 4, 5], [6]]
    h = rollout_html(df.loc[groups[1]])
    assert h.count('<mark class="timer1-prefix"') == 2
    assert html_escape(PREFIX_A) in h and html_escape(PREFIX_B) in h
    assert 'constructed · k=1' in h and 'constructed · k=2' in h and h.count('class="timer1-free"') >= 2
    for s in ('<b>-0.100</b>', '<b>+0.500</b>', '<b>+0.250</b>', '<b>—</b>', '-0.250', '-0.750', '-1.750',
              'temporal_sensitivity 0.3', 'x-1', 'train step 1', '2 – 4.5 s'):
        assert s in h, s
    assert '<img' not in h and '&lt;img src=x onerror=alert(1)&gt;' in h         # the model's text is escaped
    # the prefix is marked exactly: after '<think>' (and the newline of the second one), before the free text
    c1 = completion_html(df.loc[3].to_dict())
    assert '&lt;think&gt;\n<mark class="timer1-prefix"' in c1
    assert f'{html_escape(PREFIX_B)}</mark> &lt;img' in c1
    old = rollout_html(df.loc[groups[0]])                                      # rows from before TaRO
    assert 'timer1-prefix' not in old and 'timer1-constructed' not in old and 'unparsable' in old
    assert 'tiou 0.6' in old and '<mark class="timer1-time"' in old


def html_escape(s):
    import html
    return html.escape(s)


def test_rollout_explorer_widget(run_dir, cache):
    from plotly.callbacks import Points
    from timer1_lib.viewer import SELECTED_TRACE, latest_train_run, rollouts
    with pytest.warns(UserWarning):
        ex = rollouts(run_dir, cache=cache)
    assert len(ex.groups) == 2 and len(ex.df) == 6 and ex.index == 0    # the eval row is left out
    assert 'constructed' in ex.summary.value and '0.250' in ex.summary.value
    assert ex.scrubber.case.runs == ['#0 free', '#1 free'] and ex.scrubber.source is not None
    assert list(ex.figure.data[0].y) == [-0.1, 0.5] and list(ex.figure.data[1].y) == [0.25]
    assert list(ex.figure.data[SELECTED_TRACE].x) == []
    ex.step(1)
    assert ex.index == 1 and ex.menu.value == 1 and ex.next_btn.disabled
    sc = ex.scrubber
    assert sc.case.runs == ['#0 constructed k=1', '#1 constructed k=2', '#2 free', '#3 free']
    assert sc.case.clip == (1.0, 13.0) and len(sc.source) == 44          # the clip of the group's video
    assert sc.info.value.count('timer1-prefix') == 2 and '<b>+0.500</b>' in sc.info.value
    ticks = list(sc.timeline.layout.yaxis.ticktext)
    assert ticks[0] == 'ground truth' and '#3 free' in ticks
    assert sorted(ex.figure.data[SELECTED_TRACE].y) == [-0.1, 0.25, 0.5]
    assert '2/4 constructed · mean d +0.217' in ex.menu.options[1][0]
    ex.menu.value = 0
    assert ex.index == 0 and 'tiou 0.6' in sc.info.value
    fr = ex.figure.data[1]                                               # click the free point: its group
    ex._on_d_click(fr, Points([0], [fr.x[0]], [fr.y[0]], 'free', 1))
    assert ex.index == 1 and ex.rows.index.tolist() == [2, 3, 4, 5]
    assert latest_train_run(run_dir.parent) == run_dir


def test_rollouts_of_a_committed_grpo_log(root, cache):
    "A real GRPO log from before TaRO (the tiny GPU benchmark): every row a free rollout, no d, the explorer works."
    from timer1_lib.viewer import load_completions, rollout_summary, rollouts
    src = root / 'artifacts' / 'bench' / 'train_gpu' / 'tiny'
    df = load_completions(src)
    assert len(df) == 368 and set(df['kind']) == {'free'} and df['taro_d'].isna().all()
    s = rollout_summary(df)
    assert s['n'].sum() == 368 and set(s['kind']) == {'free'} and s['mean_d'].isna().all()
    ex = rollouts(src, cache=cache)
    assert 'no d values' in ex.figure.layout.annotations[0].text and len(ex.groups) == 92
    assert 'timer1-free' in ex.scrubber.info.value


def test_explore_notebook_shows_a_training_run(run_dir, tmp_path):
    "nbs/explore.ipynb headless (papermill) with `train_run` set: the rollout explorer of that run shows, no error."
    from nbrun import error_cell, run_papermill
    out = tmp_path / 'explore.ipynb'
    res = run_papermill(NB_EXPLORE, out, {'train_run': run_dir})
    assert res.returncode == 0 and error_cell(out) is None, res.stderr[-3000:]
    shown = [''.join(o['data']['text/plain']) for c in json.loads(out.read_text())['cells'] if c['cell_type'] == 'code'
             for o in c.get('outputs', []) if 'text/plain' in o.get('data', {})]
    assert any(s.startswith('RolloutExplorer(') and 'run: 7 completions in 3 groups' in s for s in shown), shown
