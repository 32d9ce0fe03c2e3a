"""Property/fuzz tests for timer1_lib.rewards (nbs/00_rewards.ipynb): parse_answer and every registered reward
must never raise, and must return finite floats inside REWARD_RANGES, whatever the completion, duration or
ground truth. Budget: well under 30 s."""
import math
import re
import time

from hypothesis import HealthCheck, given, settings, strategies as st

from timer1_lib.rewards import (FORMAT_PATTERN, REWARD_RANGES, REWARDS, completion_text, has_format, iou,
                                parse_answer)

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FRAGMENTS = ['<answer>', '</answer>', '<ANSWER>', '</Answer>', '<think>', '</think>', '0', '1', '7', '12', '59',
             '3.5', '.', ':', '-', '--', '–', '—', '+', ',', '~', ' to ', ' and ', 'from ', 'between ', ' ', '\n',
             '\t', 'e', 'e999', '1e999', 'E-5', 'nan', 'NaN', 'inf', 'Infinity', 's', ' sec', ' seconds', '[', ']',
             '(', ')', '١٢', '٣', '²', '\u00a0', '\u2028', '\x00', 'İ', 'ſ', '9' * 400, '\ud7ff', '🎬',
             '\u202e', '\u200b', '\ufeff', '\udc80', '\ud800', str(10 ** 400), '1e308', '<answer><answer>']

adversarial = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=60).map(''.join)
long_strings = st.one_of(
    st.tuples(st.sampled_from(FRAGMENTS), st.integers(1_000, 20_000)).map(lambda t: t[0] * t[1]),
    st.tuples(adversarial, st.integers(100, 2_000)).map(lambda t: t[0] * t[1]))
texts = st.one_of(st.text(), adversarial, long_strings)

finite = st.floats(allow_nan=False, allow_infinity=False)
number = st.one_of(st.floats(), st.integers(-10**30, 10**30), st.just(10**400), st.sampled_from([0, -0.0, 1e-320]))
durations = st.one_of(number, st.none(), st.text(max_size=5), st.booleans())
segments = st.one_of(st.tuples(number, number), st.lists(number, max_size=3), st.none(), st.text(max_size=10),
                     number, st.tuples(st.text(max_size=3), number))


def as_completion(text, kind):
    if kind == 'str': return text
    if kind == 'chat': return [{'role': 'assistant', 'content': text}]
    return [{'role': 'assistant', 'content': [{'type': 'text', 'text': text}]}]


# Only the rewards timer1 ships: other test modules register toy rewards (e.g. completion length) in the same
# process, and those are not part of the contract checked here.
BUILTIN = {name: f for name, f in REWARDS.items() if f.__module__ == 'timer1_lib.rewards'}


def test_builtin_rewards_are_the_documented_ones():
    assert {'iou', 'tiou', 'tiou_center', 'em', 'abs', 'rmse', 'center', 'format'} <= set(BUILTIN)


def check_rewards(completions, segs, durs):
    for name, f in BUILTIN.items():
        lo, hi = REWARD_RANGES[name]
        out = f(completions, segment=segs, duration=durs, prompts=['p'] * len(completions), trainer_state=None)
        assert isinstance(out, list) and len(out) == len(completions), name
        for r in out:
            assert type(r) is float and math.isfinite(r) and lo <= r <= hi, (name, r)


def check_parse(text):
    p = parse_answer(text)
    if p is not None:
        assert isinstance(p, tuple) and len(p) == 2 and all(type(v) is float for v in p)
        assert all(math.isfinite(v) and v >= 0 for v in p) and p[0] <= p[1]
    return p


@settings(max_examples=300, **SETTINGS)
@given(texts)
def test_parse_answer_never_raises(text):
    check_parse(text)


@settings(max_examples=200, **SETTINGS)
@given(st.lists(st.tuples(texts, segments, durations, st.sampled_from(['str', 'chat', 'parts'])),
                min_size=1, max_size=4))
def test_rewards_finite_and_in_range(rows):
    check_rewards([as_completion(t, k) for t, _, _, k in rows], [g for _, g, _, _ in rows], [d for _, _, d, _ in rows])


@settings(max_examples=300, **SETTINGS)
@given(st.tuples(finite, finite), st.tuples(finite, finite), finite, st.sampled_from(['str', 'chat', 'parts']))
def test_rewards_in_range_on_valid_answers(pred, gt, duration, kind):
    """Well-formed answers with arbitrary finite numbers (incl. outside [0, D] and huge): in range, and the
    string round-trips through parse_answer."""
    s, e = abs(pred[0]), abs(pred[1])
    text = f"<think>x</think><answer>{s!r} to {e!r}</answer>"
    p = check_parse(text)
    assert p == (min(s, e), max(s, e))
    check_rewards([as_completion(text, kind)], [gt], [duration])


@settings(max_examples=300, **SETTINGS)
@given(st.one_of(st.text(max_size=40), st.lists(st.sampled_from(FRAGMENTS[:8] + [' ', '\n', 'x', '\x1c', '\u3000']),
                                                 max_size=12).map(''.join)))
def test_has_format_matches_reference_regex(text):
    assert has_format(text) == (re.match(FORMAT_PATTERN, text, re.DOTALL) is not None)


@settings(max_examples=200, **SETTINGS)
@given(st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=5),
                 st.lists(st.text(max_size=3), max_size=3),
                 st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
                 st.lists(st.dictionaries(st.sampled_from(['role', 'content', 'type', 'text']),
                                          st.one_of(st.text(max_size=5), st.none(), st.integers(),
                                                    st.lists(st.dictionaries(st.sampled_from(['type', 'text']),
                                                                             st.text(max_size=5)), max_size=2))),
                          max_size=3)))
def test_weird_completions(c):
    assert parse_answer(c) is None or isinstance(c, str)
    assert isinstance(completion_text(c), str)
    check_rewards([c], [(1.0, 2.0)], [10.0])


@settings(max_examples=200, **SETTINGS)
@given(st.tuples(number, number) | st.none(), st.tuples(number, number) | st.none())
def test_iou_in_unit_interval(a, b):
    r = iou(a, b)
    assert type(r) is float and 0.0 <= r <= 1.0


def test_linear_time_on_huge_inputs():
    """Megabyte completions parse in well under a second (no catastrophic regex backtracking)."""
    worst = 0.0
    for frag in ['1', '1 ', '1e', '-', ' to ', '<answer>', '</answer>', '<think></think><answer></answer>',
                 '1:', '9.']:
        s = frag * (1_000_000 // len(frag))
        t = time.perf_counter()
        check_parse(s)
        has_format(s)
        worst = max(worst, time.perf_counter() - t)
        check_rewards([s[:100_000]], [(1, 2)], [10])
    assert worst < 2.0, worst


SEGMENT_REWARDS = [n for n in BUILTIN if not n.startswith('format')]


@settings(max_examples=200, **SETTINGS)
@given(st.tuples(finite, finite), st.lists(st.tuples(finite, finite), min_size=1, max_size=4), finite)
def test_windows_pay_the_best_window(pred, wins, duration):
    """With a `windows` column every segment reward equals the best of its single-window scores, stays in range, and
    `windows == [segment]` scores exactly as no column."""
    text = f"<answer>{abs(pred[0])!r} to {abs(pred[1])!r}</answer>"
    for name in SEGMENT_REWARDS:
        f, (lo, hi) = BUILTIN[name], REWARD_RANGES[name]
        singles = [f([text], segment=[w], duration=[duration])[0] for w in wins]
        got = f([text], segment=[wins[0]], duration=[duration], windows=[[list(w) for w in wins]])[0]
        assert got == max(singles) and lo <= got <= hi, (name, got, singles)
        assert f([text], segment=[wins[0]], duration=[duration], windows=[[list(wins[0])]]) == singles[:1], name


@settings(max_examples=300, **SETTINGS)
@given(st.tuples(finite, finite), st.tuples(finite, finite), st.floats(min_value=1e-3, max_value=1e6))
def test_tiou_center_is_iou_plus_gt_normalised_centre(pred, gt, duration):
    """tiou_center = IoU + max(0, 1 - |c - c'| / (t'e - t's)) on the [0, D]-clamped segments (the ablation's r_center,
    normalised by the ground-truth length): in [0, 2], and never above IoU + 1."""
    s, e = sorted(abs(v) for v in pred)
    clamp = lambda a, b: (min(max(a, 0.0), duration), min(max(b, 0.0), duration))
    p, g = clamp(s, e), clamp(*sorted(gt))
    r = BUILTIN['tiou_center']([f"{s!r} to {e!r}"], segment=[gt], duration=[duration])[0]
    dist, length = abs((p[0] + p[1]) / 2 - (g[0] + g[1]) / 2), g[1] - g[0]
    centre = float(dist == 0) if length <= 0 else max(0.0, 1.0 - dist / length)
    want = min(2.0, iou(p, g) + centre)
    assert 0.0 <= r <= 2.0 and math.isclose(r, want, rel_tol=1e-9, abs_tol=1e-9), (r, want, p, g)
