"""Fuzz the whole path from model output text to display (issue #15): reward, metric, predictions JSONL and explorer.

Random and adversarial completions (unicode incl. RTL / zero-width / lone surrogates, NUL bytes, huge numbers such as
10**400 and 1e308, `inf` / `nan`, nested and unclosed tags, 1 MB strings) go through

* `rewards.parse_answer` and every built-in reward, called as TRL calls them (`f(completions, prompts=..., segment=...,
  duration=..., windows=..., trainer_state=..., <other dataset columns>)`), as plain strings and as chat messages;
* `metrics` (`item_iou`, `pred_ious`, `grounding_metrics`) on the parsed predictions and on the raw texts;
* the predictions JSONL exactly as `infer.predict` writes it (`_batch_records` on a stub tokenizer,
  `_open_predictions`, one `json.dumps` line per record), read back by `infer.read_predictions`,
  `evaluate.load_external_predictions`, an `evaluate.RunResult` (its metrics.json record) and `viewer.load_run`;
* the explorer: `viewer.case_html` / `timeline_figure` of the cases, and a GRPO / TaRO completions log written as
  `GroundingLogCallback` writes it (`core.append_jsonl`), read by `viewer.load_completions`, shown by
  `rollout_html`, `rollout_summary`, `d_figure` and `RolloutExplorer`.

Asserted: no exception; rewards finite and inside `REWARD_RANGES`; IoUs in [0, 1] and R1@m / mIoU in [0, 100]; the raw
text and its parse score alike; the JSONL round-trips record for record; every HTML is a str whose only tags are the
viewer's own (a completion's `<script>` / `<img>` shows escaped).
"""
import html
import json
import math
import random
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from timer1_lib.core import append_jsonl
from timer1_lib.data import GroundingItem
from timer1_lib.evaluate import RunResult, load_external_predictions
from timer1_lib.infer import _batch_records, _open_predictions, generation_params, read_predictions, run_config
from timer1_lib.metrics import grounding_metrics, item_iou, pred_ious
from timer1_lib.rewards import REWARD_RANGES, REWARDS, iou as iou_of, parse_answer
from timer1_lib.video import VideoSamplingConfig
from timer1_lib.viewer import (COMPLETION_COLUMNS, TARO_COLUMNS, RolloutExplorer, case_html, d_figure,
                               load_completions, load_run, make_cases, rollout_groups, rollout_html, rollout_summary,
                               split_output, timeline_figure)

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BUILTIN = {name: f for name, f in REWARDS.items() if f.__module__ == 'timer1_lib.rewards'}

SCRIPT = '<script>alert("pwned")</script>'
IMG = '<img src=x onerror=alert(1)>'
CORPUS = [
    '', ' ', '\n', 'plain words, no numbers',
    '<answer>1e308 to inf</answer>', '<answer>-0 to nan</answer>', '<answer>inf to 3</answer>',
    '<answer><answer>1 to 2</answer></answer>', '<answer>3 to 4', '<think>unclosed thinking 0:03',
    '</answer>1 to 2<answer>', '<think><think>a</think></think><answer>0:01 to 0:03</answer>',
    '<think>' * 50 + '<answer>' * 50 + '1 to 2' + '</answer>' * 50,
    '\u202e<answer>2 to 3</answer>\u202c \u2067rtl\u2069', 'zero\u200bwidth\u200d <answer>1\u200b to 2\ufeff</answer>',
    '\udc80\ud800<answer>3 to 4</answer>\udfff', 'NUL\x00<answer>1\x00 to 2</answer>\x00',
    '<answer>' + str(10 ** 400) + ' to ' + str(10 ** 400 + 1) + '</answer>',
    '<answer>1' + '0' * 400 + '.5 to 2e-400</answer>', '<answer>1.7976931348623157e308 to 1.8e308</answer>',
    '<answer>99:99:99.99 to 100:00</answer>', '<answer>1:2:3:4 to 5</answer>', '<answer>-5 to -1</answer>',
    '<answer>+3 to +4</answer>', '<answer>1e5 to 1e6 seconds</answer>', '<answer>.5 to 3.</answer>',
    SCRIPT + '<answer>1 to 2</answer>', '<answer>' + SCRIPT + '</answer>', '<think>' + IMG + ' at 0:01</think>'
    '<answer>0 to 1</answer>', '"quotes" & \'apos\' <b>bold</b> &amp; &lt;', '\r\n\u2028\u2029\x85\x1c\x1d\x1e'
    '<answer>1 to 2</answer>', '٣ to ٤', '１ to ２ (fullwidth)', '🎬' * 100 + '<answer>5 to 6</answer>',
    'İ' * 50 + '<ANSWER>5 to 6</Answer>', '{"type": "config"}\n{"id": "x"}', 'between 1 and 2, from 3 to 4 s, at 5',
    '<think>from 1' + '9' * 400 + ' to 2 s, around 0:' + '9' * 300 + '</think><answer>1 to 2</answer>',
]
FRAGMENTS = ['<answer>', '</answer>', '<think>', '</think>', '<ANSWER>', ' to ', ' and ', '-', '–', ':', '.', 'e',
             'e999', 'e-400', 'inf', 'nan', '0', '1', '12', '59', '3.5', str(10 ** 400), ' s', ' seconds', 'at ',
             'between ', '\x00', '\u202e', '\u200b', '\ufeff', '\ud800', '\udfff', 'İ', '١', '🎬', '\n', '&', '"',
             SCRIPT, IMG, '<b>', '</div>', '-->', '<!--']

adversarial = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=40).map(''.join)
texts = st.one_of(st.sampled_from(CORPUS), st.text(max_size=200), adversarial)
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
gts = st.tuples(finite, finite).map(lambda t: tuple(sorted(t)))
durations = st.one_of(st.floats(min_value=1e-3, max_value=1e9), st.sampled_from([0.001, 1.0, 35.04, 1e9]))

# -- checks -----------------------------------------------------------------------------------------------------------

VIEWER_TAGS = {'div', 'span', 'b', 'i', 'mark', 'code', 'table', 'tr', 'th', 'td', 'details', 'summary'}


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.text = set(), []

    def handle_starttag(self, tag, attrs): self.tags.add(tag)

    def handle_data(self, data): self.text.append(data)


def check_html(h: str, shown: str = '') -> None:
    "A str whose tags are only the viewer's; `shown` (a completion's escaped text) is in it."
    assert isinstance(h, str)
    p = _Tags()
    p.feed(h)
    p.close()
    assert p.tags <= VIEWER_TAGS, p.tags - VIEWER_TAGS
    assert '<script' not in h.lower() and '<img' not in h.lower()
    if shown: assert html.escape(shown) in h, shown[:80]


def check_parse(text):
    p = parse_answer(text)
    if p is not None:
        assert isinstance(p, tuple) and len(p) == 2 and all(type(v) is float and math.isfinite(v) for v in p)
        assert 0 <= p[0] <= p[1]
    return p


def check_rewards(texts, gts, durations):
    "Every built-in reward called as TRL does (dataset columns as keyword arguments), as str and as chat completions."
    n = len(texts)
    kw = dict(prompts=[[{'role': 'user', 'content': 'q'}]] * n, completion_ids=[[1, 2, 3]] * n, segment=list(gts),
              duration=list(durations), windows=[None if k % 2 else [list(g)] for k, g in enumerate(gts)],
              trainer_state=None, id=[f'i{k}' for k in range(n)], query=['q'] * n, video=['v.mp4'] * n)
    out = {}
    for chat in (False, True):
        completions = [[{'role': 'assistant', 'content': t}] for t in texts] if chat else list(texts)
        for name, f in BUILTIN.items():
            lo, hi = REWARD_RANGES[name]
            rs = f(completions, **kw)
            assert isinstance(rs, list) and len(rs) == n, name
            for r in rs: assert type(r) is float and math.isfinite(r) and lo <= r <= hi, (name, r)
            assert rs == out.setdefault(name, rs), name          # a chat completion scores as its text
    return out


def check_metrics(m: dict, n: int) -> None:
    assert m['n'] == n
    for k, v in m.items():
        if k != 'n': assert isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= 100.0, (k, v)


class StubTokenizer:
    "`decode` of the one generated token of row i (id 10 + i) gives the i-th text."
    def __init__(self, texts): self.texts = texts

    def decode(self, ids, skip_special_tokens=True): return self.texts[int(ids[0]) - 10]


def predict_records(items, texts):
    "The records `infer.predict` builds for these generated texts (`_batch_records` on a stub generate output)."
    prompt = torch.ones(len(items), 3, dtype=torch.long)
    out = torch.cat([prompt, torch.tensor([[10 + i, 0] for i in range(len(items))])], 1)   # token, then eos (0)
    return _batch_records(items, {'input_ids': prompt, 'attention_mask': torch.ones_like(prompt)}, out,
                          StubTokenizer(texts), {0}, None, 0.01)


def write_predictions(path: Path, recs):
    "As `infer.predict` writes its file: the config header by `_open_predictions`, then one JSON line per record."
    config = run_config('stub-model', True, VideoSamplingConfig(), 64, generation_params())
    done, f = _open_predictions(path, config, overwrite=True)
    assert done == {}
    try:
        for rec in recs: f.write(json.dumps(rec) + '\n'); f.flush()
    finally: f.close()
    return config


def jsonl_form(s: str) -> str:
    ("A str as it reads back from JSON: unchanged, except that a high surrogate code point followed by a low one "
     "(never in decoded model output, which is valid Unicode) reads back as the one character the pair encodes.")
    return json.loads(json.dumps(s))


# -- the whole path ---------------------------------------------------------------------------------------------------

def whole_path(texts, gt, duration, tmp: Path, figures: bool = False):
    n = len(texts)
    # text -> parse -> rewards
    preds = [check_parse(t) for t in texts]
    for t, p in zip(texts, preds):
        answer = split_output(t)[1]
        if answer is not None: assert parse_answer(answer) == p, t[:80]   # the viewer shows what the rewards read
    rewards = check_rewards(texts, [gt] * n, [duration] * n)
    # -> metrics (per item and overall), parsed or raw text alike
    ious = pred_ious(preds, [gt] * n)
    assert all(type(v) is float and 0.0 <= v <= 1.0 for v in ious)
    assert pred_ious(list(texts), [gt] * n) == ious
    assert [item_iou(p, gt) for p in preds] == ious
    check_metrics(grounding_metrics(preds, [gt] * n), n)
    # -> predictions JSONL, as infer writes it; read back by infer, evaluate and the viewer
    items = [GroundingItem(id=f'id-{k}-\u202e\u200b', video='v.mp4', duration=duration, query=t[:300], segment=gt)
             for k, t in enumerate(texts)]
    recs = predict_records(items, list(texts))
    assert [r['text'] for r in recs] == list(texts)
    assert [r['pred'] for r in recs] == [None if p is None else list(p) for p in preds]
    path = tmp / 'ck' / 'ds' / 'predictions.jsonl'
    config = write_predictions(path, recs)
    got_config, back = read_predictions(path)
    expect = [jsonl_form(t) for t in texts]
    assert got_config == config and [r['text'] for r in back] == expect     # the JSONL round-trips
    assert back == [dict(r, query=jsonl_form(r['query']), text=jsonl_form(r['text'])) for r in recs]
    res = RunResult('ck', 'ds', items, [r['pred'] for r in back], texts=[r['text'] for r in back], records=back,
                    config=got_config, pred_path=str(path))
    check_metrics(res.metrics(), n)
    assert res.ious == ious
    json.dumps(res.to_dict(), allow_nan=False, default=str)                  # metrics.json stays strict JSON
    ext = load_external_predictions(path, items, warn=False)                 # its stored pairs
    assert ext.preds == res.preds
    check_metrics(ext.metrics(), n)
    raw = tmp / 'text_only.jsonl'                                            # an external file of raw texts only
    raw.write_text(''.join(json.dumps({'id': it.id, 'text': t}) + '\n' for it, t in zip(items, texts)))
    ext = load_external_predictions(raw, items, warn=False)
    assert ext.preds == preds and ext.texts == expect and ext.ious == ious
    # -> the explorer: cases of the predictions file
    cases = make_cases([load_run(path)])
    assert [c.id for c in cases] == [it.id for it in items]
    for c, t, p in zip(cases, texts, preds):
        assert c.predictions[0].pred == p and c.gt == gt and c.predictions[0].iou == iou_of(p, gt)
        check_html(case_html(c), t[:300] if t.startswith(SCRIPT) else '')
        if figures: timeline_figure(c)
    # -> the explorer: a GRPO / TaRO completions log of the same texts, written as GroundingLogCallback does
    rows = [dict(gen_step=k // 4, mode='train', group=0, id=it.id, video=it.video, clip=None, duration=duration,
                 query=it.query, segment=list(gt), completion=t, pred=None if p is None else list(p),
                 rewards={name: v[k] for name, v in rewards.items()} | {'temporal_sensitivity': 0.3 * (k % 2)},
                 reward=rewards['iou'][k], advantage=0.0, step=k // 4 + 1, constructed=k % 2 == 0,
                 prefix_k=1 if k % 2 == 0 else None, prefix=(t[7:7 + 300] or None) if k % 2 == 0 else None,
                 taro_p=-1.0 - k, taro_q=None if k % 3 == 0 else -2.0, taro_d=None)
            for k, (it, t, p) in enumerate(zip(items, texts, preds))]
    log = tmp / 'run' / 'grpo' / 'completions.jsonl'
    append_jsonl(log, rows)
    df = load_completions(tmp / 'run')
    assert len(df) == n and df['completion'].tolist() == expect
    assert df['constructed'].tolist() == [k % 2 == 0 for k in range(n)]
    s = rollout_summary(df)
    assert s['n'].sum() == n and s['bonus_frac'].dropna().between(0, 1).all()
    for g in rollout_groups(df):
        h = rollout_html(df.loc[g])
        check_html(h)
        for t in df.loc[g, 'completion']:
            if t.startswith(SCRIPT): assert html.escape(SCRIPT) in h
    if figures:
        d_figure(df)
        ex = RolloutExplorer(df, cache=False)
        check_html(ex.scrubber.info.value)
        ex.step(len(ex.groups))
        check_html(ex.scrubber.info.value)
    log.unlink()


@settings(max_examples=150, **SETTINGS)
@given(st.lists(texts, min_size=1, max_size=5), gts, durations)
def test_whole_path_never_raises(sample, gt, duration):
    with tempfile.TemporaryDirectory(prefix='timer1_fuzz_') as d:
        whole_path(sample, gt, duration, Path(d))


@pytest.mark.parametrize('gt,duration', [((1.0, 7.5), 35.04), ((0.0, 0.0), 1e-3), ((5.0, 5.0), 10.0),
                                         ((-1e12, 1e12), 1e9), ((0.0, 1e308), 1e300)])
def test_adversarial_corpus(gt, duration, tmp_path):
    whole_path(CORPUS, gt, duration, tmp_path, figures=gt == (1.0, 7.5))


def test_jsonl_keeps_every_decodable_text():
    "The one change the JSONL makes: adjacent surrogate code points become one character; any other str is kept."
    assert jsonl_form('\ud83c\udfac') == '🎬' and jsonl_form('\udc80\ud800x\udfff') == '\udc80\ud800x\udfff'
    assert jsonl_form('\x00\u202e\u2028\U0010ffff') == '\x00\u202e\u2028\U0010ffff'


def _random_unicode(rng: random.Random, n: int) -> str:
    "n characters from all planes, lone surrogates included (seeded)."
    return ''.join(chr(rng.choice([rng.randrange(0x20, 0x7f), rng.randrange(0, 0x110000), rng.randrange(0xd800,
                                                                                                         0xe000)]))
                   for _ in range(n))


def test_megabyte_outputs(tmp_path):
    "1 MB completions of the shapes that once made the viewer quadratic (many cited times, unclosed tags) stay fast."
    rng = random.Random(0)
    mb = 1_000_000
    big = ['1 to ' * (mb // 5), '<answer>' * (mb // 8), SCRIPT + 'at 0:01 ' * (mb // 8), '9' * mb,
           _random_unicode(rng, mb // 4) * 4]
    t0 = time.perf_counter()
    whole_path(big, (1.0, 2.0), 10.0, tmp_path, figures=True)
    assert time.perf_counter() - t0 < 240


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10 ** 30, 10 ** 30) | st.floats() |
                           st.text(max_size=20), lambda c: st.lists(c, max_size=3) | st.dictionaries(
                               st.text(max_size=5), c, max_size=3), max_leaves=6)
LOG_KEYS = list(COMPLETION_COLUMNS + TARO_COLUMNS)


@settings(max_examples=100, **SETTINGS)
@given(st.lists(st.dictionaries(st.sampled_from(LOG_KEYS), json_values, max_size=len(LOG_KEYS)), min_size=1,
                max_size=6))
def test_malformed_completions_log_still_shows(rows):
    "Any JSON object per line (wrong types, NaN, huge ints, missing keys): the log loads and every view renders."
    with tempfile.TemporaryDirectory(prefix='timer1_fuzz_') as d:
        log = Path(d) / 'completions.jsonl'
        log.write_text(''.join(json.dumps(r) + '\n' for r in rows))
        df = load_completions(log)
        assert len(df) == len(rows) and set(df['kind']) <= {'constructed', 'free'}
        s = rollout_summary(df, mode=None)
        assert s['n'].sum() == len(rows)
        for g in rollout_groups(df): check_html(rollout_html(df.loc[g]))
        d_figure(df)
