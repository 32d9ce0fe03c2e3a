"""Multiple-choice VideoQA (timer1_lib.videoqa, nbs/21_videoqa.ipynb): letter parsing on adversarial outputs, the
MVBench / Video-MME loaders on small hand-written files, accuracy hand-computed on a fixture, the SynthTVG-QA split of
the embedded default (exact answers checked against the pixels), a real tiny-model `evaluate_qa` run (resume,
records), and `python -m timer1_lib.evaluate --datasets synth-qa` end to end. The fast checks live in the notebook."""
import json, subprocess, sys, time, warnings
from collections import Counter

import pytest

from timer1_lib.data import AnnotationError
from timer1_lib.videoqa import (QA_HELDOUT, QA_QTYPES, QAItem, check_qa_item, evaluate_qa, load_mvbench,
                                load_qa, load_videomme, parse_choice, qa_accuracy, qa_answer, synth_qa, synth_qa_items)

OPTS = ['red square', 'blue circle', 'green cross', 'white triangle']


# ---------------------------------------------------------------- parse_choice
@pytest.mark.parametrize('text, want', [
    ('C', 2), ('c', 2), ('(c)', 2), ('( C )', 2), ('C)', 2), ('[b]', 1), ('**B**', 1), ('"D"', 3), ('B.', 1),
    ('Answer: B', 1), ('ANSWER: b', 1), ('answer=c', 2), ('The answer is (D).', 3), ('Final answer: A', 0),
    ('The correct choice is c.', 2), ('Best option: (B)', 1), ('option d', 3),
    ('<answer>B</answer>', 1), ('<answer>\n  (d)\n</answer>', 3), ('<Answer>b</ANSWER>', 1),
    ('<think>It is not (A); maybe (B)?</think>\n<answer>C</answer>', 2),
    ('<answer>A</answer><answer>B</answer><answer>D</answer>', 3),          # the last block wins
    ('Answer: A\nWait, that is wrong.\nAnswer: D', 3),                      # the last marked letter wins
    ('(A) red square or (C) green cross... I pick (C)', 2),
    ('the answer is c, not b', 2),                                          # marked letters beat bare ones
    ('A or B? B', 1), ('I choose D.', 3),
    ('C. green cross', 2), ('B: blue circle', 1), ('<answer>B) blue circle</answer>', 1),
    ('<answer>Green Cross</answer>', 2), ('it is the  WHITE   triangle', 3), ('a blue circle, then a red square', 0),
    ('the answer is a white triangle', 3),                                  # `a` is the article here
    ('<answer>E</answer>', None), ('(F)', None), ('Answer: Z', None), ('option e', None),    # beyond 4 options
    ('', None), ('   ', None), ('no idea', None), ('<answer></answer>', None), ('<answer>maybe</answer>', None),
    ('I think so.', None), ('A cat sat on the mat.', None), ('<answer>B</answer> <answer>???</answer>', None),
    ('Ｃ', 2), ('（ｂ）', 1), ('Ａｎｓｗｅｒ：Ｄ', 3),                                      # full width
    ('Β', None), ('С', None),                                               # Greek Beta, Cyrillic Es
    ('🙂 <answer>🅱</answer>', None), ('Ⓑ', 1), ('𝐃', 3), ('\x00B\x00', 1), ('é B é', 1),
])
def test_parse_choice_adversarial(text, want):
    assert parse_choice(text, OPTS) == want


def test_parse_choice_odd_inputs_and_options():
    assert [parse_choice(x, OPTS) for x in (None, 1, 2.5, b'B', ['B'], {'B': 1})] == [None] * 6
    assert [parse_choice('B', o) for o in ([], None, 'ab', 5, [object()] * 27)] == [None] * 5
    assert parse_choice('B', ['x', 'y']) == 1 and parse_choice('C', ['x', 'y']) is None
    many = [f'option {i}' for i in range(26)]
    assert parse_choice('<answer>Z</answer>', many) == 25
    nums = ['0', '1', '2', '3']
    assert [parse_choice(t, nums) for t in ('3', '<answer>2</answer>', 'I count 1 object', 'there are 12',
                                            '1.5 maybe', '2 or 3? 3')] == [3, 2, 1, None, None, 3]
    assert [parse_choice(t, ['yes', 'no']) for t in ('Yes', 'no.', 'YES!', 'A', 'B', 'C', 'maybe')] == \
        [0, 1, 0, 0, 1, None, None]


def test_parse_choice_huge_strings_are_fast():
    t0 = time.perf_counter()
    assert parse_choice('blah ' * 2_000_000 + '<answer>(B)</answer>', OPTS) == 1
    assert parse_choice('<answer>' * 300_000 + 'D', OPTS) == 3
    assert parse_choice('</answer>' * 300_000, OPTS) is None
    assert parse_choice('answer' + ' ' * 1_000_000 + 'is' + ' ' * 1_000_000, OPTS) is None
    assert parse_choice(('(' + ' ' * 2000) * 1000, OPTS) is None
    assert parse_choice('A' * 3_000_000, OPTS) is None
    assert time.perf_counter() - t0 < 10


# ---------------------------------------------------------------- loaders
def _write(p, obj):
    p.write_text(json.dumps(obj)); return p


def test_mvbench_and_videomme_files(tmp_path):
    mvb = _write(tmp_path / 'object_shuffle.json', [
        {'video': 'clevrer/v1.mp4', 'question': 'Where is the ball?', 'candidates': ['left', 'middle', 'right'],
         'answer': 'right'},
        {'video': 'v2.mp4', 'question': 'What happened?', 'candidates': ['A cup fell.', 'Nothing.'],
         'answer': 'a cup fell', 'start': 2, 'end': 9.5, 'qtype': 'Action'}])
    a = load_mvbench(mvb)
    assert [(x.id, x.video, x.answer, x.qtype, x.clip) for x in a] == [
        ('object_shuffle-0', 'clevrer/v1.mp4', 2, 'object_shuffle', None),
        ('object_shuffle-1', 'v2.mp4', 0, 'Action', (2.0, 9.5))]
    flat = _write(tmp_path / 'vmme_flat.json', [
        {'video_id': '601', 'duration': 'long', 'domain': 'Sports', 'sub_category': 'Football', 'videoID': 'xyz',
         'question_id': '601-3', 'task_type': 'Temporal Reasoning', 'question': 'What happens first?',
         'options': ['A. a goal', 'B. a foul', 'C. a corner', 'D. a throw-in'], 'answer': 'D'}])
    b = load_videomme(flat)
    assert (b[0].id, b[0].video, b[0].options[3], b[0].answer, b[0].qtype, b[0].meta['duration_bin']) == \
        ('601-3', 'xyz.mp4', 'a throw-in', 3, 'Temporal Reasoning', 'long')
    assert load_qa(flat).format == 'videomme' and load_qa(mvb).format == 'mvbench'


@pytest.mark.parametrize('record, message', [
    ({'video': 'v.mp4', 'question': 'Q?', 'candidates': ['a', 'b'], 'answer': 'c'}, "answer 'c' is not one of the"),
    ({'video': 'v.mp4', 'question': 'Q?', 'candidates': ['a'], 'answer': 'a'}, '1 option(s); a question needs 2'),
    ({'video': 'v.mp4', 'question': 'Q?', 'candidates': 'ab', 'answer': 'a'}, "'candidates' must be a list"),
    ({'video': 'v.mp4', 'question': '', 'candidates': ['a', 'b'], 'answer': 'a'}, 'empty question'),
    ({'video': 'v.mp4', 'question': 'Q?', 'candidates': ['a', 'b'], 'answer': 0}, "'answer' must be the text"),
    ({'video': 'v.mp4', 'question': 'Q?', 'candidates': ['a', 'b'], 'answer': 'a', 'start': 5, 'end': 'x'},
     "'start' and 'end' must be numbers"),
    ({'video': 'v.mp4', 'question': 'Q?', 'candidates': ['a', 'b'], 'answer': 'a', 'start': 5, 'end': 2},
     'bad clip window (5.0, 2.0)'),
])
def test_bad_mvbench_record_names_file_and_record(tmp_path, record, message):
    good = {'video': 'v.mp4', 'question': 'Q?', 'candidates': ['a', 'b'], 'answer': 'a'}
    p = _write(tmp_path / 'task.json', [good, record])
    with pytest.raises(AnnotationError) as e:
        load_mvbench(p)
    assert f"{p}: record 1 (id 'task-1'):" in str(e.value) and message in str(e.value)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        s = load_mvbench(p, on_error='skip')
    assert [x.id for x in s] == ['task-0'] and s.report[0].index == 1 and message in s.report[0].reason
    assert 'skipped 1 bad QA record(s) of 2' in str(w[0].message)


def test_bad_videomme_records(tmp_path):
    p = _write(tmp_path / 'vm.json', [{'videoID': 'v', 'questions': [
        {'question_id': 'ok', 'question': 'Q?', 'options': ['A. x', 'B. y'], 'answer': 'B'},
        {'question_id': 'bad', 'question': 'Q?', 'options': ['A. x', 'B. x'], 'answer': 'A'}]}])
    with pytest.raises(AnnotationError, match=r"vm.json: record 0.questions\[1\] \(id 'bad'\): options \['x'\] give"):
        load_videomme(p)
    _write(p, [{'question_id': 'q', 'videoID': 'v', 'question': 'Q?', 'options': ['A. x', 'B. y'], 'answer': 'AB'}])
    with pytest.raises(AnnotationError, match=r"record 0 \(id 'q'\): AnnotationError: answer 'AB' is not one of"):
        load_videomme(p)
    with pytest.raises(AnnotationError, match='must be a list of records'):
        load_videomme(_write(p, {'questions': []}))
    with pytest.raises(AnnotationError, match='not a multiple-choice QA file'):
        load_qa(_write(p, [{'video': 'v.mp4', 'sentence': 'x', 'timestamp': [0, 1], 'duration': 3}]))


# ---------------------------------------------------------------- accuracy
def test_accuracy_hand_computed():
    # 3 types; 8 items; right: i0 i3 i4 i7; wrong: i1 (letter), i2 (beyond options), i5 (garbage), i6 (missing)
    yn, four, three = ['yes', 'no'], OPTS, ['1', '2', '3']
    items = [QAItem('i0', 'v', 'q', four, 0, 'T1'), QAItem('i1', 'v', 'q', four, 1, 'T1'),
             QAItem('i2', 'v', 'q', four, 2, 'T1'), QAItem('i3', 'v', 'q', yn, 1, 'T2'),
             QAItem('i4', 'v', 'q', yn, 0, 'T2'), QAItem('i5', 'v', 'q', three, 2, 'T3'),
             QAItem('i6', 'v', 'q', three, 0, 'T3'), QAItem('i7', 'v', 'q', three, 1)]
    recs = [{'id': 'i0', 'text': '<answer>A</answer>'}, {'id': 'i1', 'text': '<answer>C</answer>'},
            {'id': 'i2', 'text': '<answer>E</answer>'}, {'id': 'i3', 'text': 'no'}, {'id': 'i4', 'choice': 0},
            {'id': 'i5', 'text': '%%%'}, {'id': 'i7', 'text': 'there are 2'}]
    with pytest.warns(UserWarning, match=r"1 of 8 items have no prediction and count as wrong: first \['i6'\]"):
        m = qa_accuracy(recs, items)
    assert (m['n'], m['n_correct'], m['n_parsed'], m['n_missing']) == (8, 4, 5, 1)
    assert m['accuracy'] == pytest.approx(50.0) and m['parsed'] == pytest.approx(62.5)
    assert m['chance'] == pytest.approx(100 * (3 / 4 + 2 / 2 + 3 / 3) / 8)
    bt = m['by_type']
    assert list(bt) == ['T1', 'T2', 'T3', 'n/a']
    assert bt['T1']['accuracy'] == pytest.approx(100 / 3) and bt['T1']['parsed'] == pytest.approx(200 / 3)
    assert bt['T2']['accuracy'] == 100.0 and bt['T3']['accuracy'] == 0.0 and bt['T3']['n_parsed'] == 0
    assert bt['n/a'] == {'accuracy': 100.0, 'parsed': 100.0, 'n': 1, 'n_correct': 1, 'n_parsed': 1,
                         'chance': pytest.approx(100 / 3)}


# ---------------------------------------------------------------- SynthTVG-QA of the embedded default
@pytest.fixture(scope='module')
def synth_qa_test():
    return synth_qa_items('test')


def test_synth_qa_split(synth_qa_test):
    from timer1_lib.synth import SynthSplits, plan
    te, tr = synth_qa_test, synth_qa_items('train')
    assert (len(te), len(tr)) == (400, 1600)
    assert Counter(it.qtype for it in te).keys() == set(QA_QTYPES)
    assert not {it.qtype for it in tr} & set(QA_HELDOUT)
    assert all(it.meta['heldout'] == (it.qtype in QA_HELDOUT) for it in te)
    assert all(check_qa_item(it) == [] for it in te + tr) and len({it.id for it in te + tr}) == 2000
    # the written files are the generator's output (deterministic)
    sp = SynthSplits.open(te.path.parent)
    recs = synth_qa(sp.config, plan(sp.config))
    assert [r['id'] for r in recs['test']] == [it.id for it in te]
    assert json.loads(te.path.read_text()) == recs['test']


_QA = ("from timer1_lib.synth import SynthConfig, plan; from timer1_lib.videoqa import synth_qa; import json; "
       "c = SynthConfig.learn(n_videos=40); print(json.dumps(synth_qa(c, plan(c))))")


def test_synth_qa_is_identical_across_processes():
    "Set iteration order depends on PYTHONHASHSEED: the questions must not."
    import os
    outs = [subprocess.run([sys.executable, '-c', _QA], env=dict(os.environ, PYTHONHASHSEED=h), capture_output=True,
                           text=True, check=True).stdout for h in ('1', '2')]
    assert outs[0] == outs[1] and len(json.loads(outs[0])['test']) == 16


def test_synth_qa_answers_match_the_pixels(synth_qa_test):
    "Every 8th test video: the facts recovered from the decoded mp4 give the stored answer of each question."
    from timer1_lib.synth import SynthSplits, detect_facts, read_frames
    cfg = SynthSplits.open(synth_qa_test.path.parent).config
    videos = sorted({it.video for it in synth_qa_test})[::8]
    facts = {v: detect_facts(read_frames(v), cfg.geom, cfg.fps) for v in videos}
    checked = [it for it in synth_qa_test if it.video in facts]
    assert len(checked) >= 40
    for it in checked: assert qa_answer(it.meta['program'], facts[it.video]) == it.answer_text, it.id


# ---------------------------------------------------------------- a real tiny model
def test_evaluate_qa_tiny_model(tmp_path, synth_qa_test):
    from timer1_lib.evaluate import default_checkpoint, load_checkpoint, cpu_threads
    from timer1_lib.infer import read_predictions
    from timer1_lib.model import video_config_for
    ck = default_checkpoint()
    model, proc = load_checkpoint(ck, 'cpu')
    items = list(synth_qa_test)[:4]
    kw = dict(batch_size=2, max_new_tokens=16, think=False, video_config=video_config_for(ck), progress=False)
    out = tmp_path / 'qa.jsonl'
    with cpu_threads(1):
        m = evaluate_qa(model, proc, items, out, **kw)
    assert (m['n'], m['n_missing'], m['predictions']) == (4, 0, str(out))
    assert 0 <= m['accuracy'] <= m['parsed'] <= 100 and m['seconds_per_item'] > 0 and 1 <= m['mean_new_tokens'] <= 16
    cfg, recs = read_predictions(out)
    assert (cfg['task'], cfg['prompt'], cfg['video']['size']) == ('qa', 'qa-nothink', [56, 56])
    assert [r['id'] for r in recs] == [it.id for it in items]
    for r, it in zip(recs, items):
        assert r['choice'] == parse_choice(r['text'], it.options) and r['correct'] == (r['choice'] == it.answer)
        assert r['options'] == it.options and r['answer'] == it.answer and r['n_video_tokens'] > 0
    assert {k: v for k, v in qa_accuracy(recs, items).items()} == {k: m[k] for k in qa_accuracy(recs, items)}
    calls = []
    orig = model.generate
    model.generate = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        again = evaluate_qa(model, proc, items, out, **kw)                   # resumed: nothing generated
        more = evaluate_qa(model, proc, list(synth_qa_test)[:5], out, **kw)  # one new item: one batch
    finally:
        del model.generate
    assert again['accuracy'] == m['accuracy'] and len(calls) == 1 and more['n'] == 5
    spec = _write(tmp_path / 'two.json', [{'video': it.video, 'question': it.question, 'candidates': it.options,
                                           'answer': it.answer_text, 'qtype': it.qtype} for it in items[:2]])
    by_file = evaluate_qa(model, proc, spec, tmp_path / 'spec.jsonl', **kw)    # a QA file as the items
    assert by_file['n'] == 2 and list(by_file['by_type']) == sorted({it.qtype for it in items[:2]})


def test_evaluate_cli_synth_qa(tmp_path):
    out = tmp_path / 'eval'
    cmd = [sys.executable, '-m', 'timer1_lib.evaluate', '--checkpoints', 'tiny', '--datasets', 'synth-qa',
           '--limit', '3', '--max_new_tokens', '8', '--out_dir', str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    mj = json.loads((out / 'metrics.json').read_text())
    acc = mj['results']['tiny-learn']['SynthTVG-QA']
    assert set(acc) == {'accuracy', 'parsed', 'chance', 'n'} and acc['n'] == 3
    run = mj['runs'][0]
    assert run['task'] == 'qa' and set(run['groups']) == {'qtype', 'source'} and len(run['correct']) == 3
    lines = (out / 'tiny-learn' / 'SynthTVG-QA' / 'predictions.jsonl').read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])['task'] == 'qa'
    for f in ('results.md', 'qa_per_type.md', 'qa_per_type.png', 'qa_per_source.csv'): assert (out / f).is_file(), f
    assert '| tiny-learn |' in r.stdout and 'SynthTVG-QA accuracy' in (out / 'results.md').read_text()
