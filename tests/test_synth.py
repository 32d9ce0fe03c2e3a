"""SynthTVG: determinism across processes (hash randomisation) and ground truth re-derived from decoded pixels."""
import json, os, subprocess, sys

import pytest

from timer1_lib.synth import (QTYPES, SynthConfig, SynthSplits, answer_intervals, detect_facts, generate, read_frames)

_PLAN = ("from timer1_lib.synth import SynthConfig, plan; import json; "
         "print(json.dumps([[q['sentence'], list(q['frames'])] for p in plan(SynthConfig.tiny(n_videos=25)) "
         "for q in p.queries]))")


def test_plan_is_identical_across_processes():
    "Set iteration order depends on PYTHONHASHSEED: the plan must not."
    outs = []
    for seed in ('1', '2'):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outs.append(subprocess.run([sys.executable, '-c', _PLAN], env=env, capture_output=True, text=True,
                                   check=True).stdout)
    assert outs[0] == outs[1] and len(json.loads(outs[0])) == 50


def test_generated_answers_match_pixels(tmp_path):
    cfg = SynthConfig.tiny(n_videos=16, seed=3, test_frac=0.25)
    sp = generate(cfg, tmp_path / 'synth', workers=2)
    seen = set()
    for split in ('train', 'test'):
        for r in sp.records(split):
            f = detect_facts(read_frames(sp.root / r['video']), cfg.geom, cfg.fps)
            assert answer_intervals(r['program'], f) == [tuple(r['timestamp'])], r['qid']
            seen.add(r['qtype'])
    assert seen == set(QTYPES)
    assert SynthSplits.open(sp.root).config == cfg and generate(cfg, sp.root).reused


def test_bad_config_is_explained():
    with pytest.raises(ValueError, match='time_step'):
        SynthConfig(fps=3, time_step=0.5)
