"""nbs/evaluate.ipynb headless with papermill: the embedded default (tiny model on SynthTVG test, CPU) plus an
external prediction file writes every report file and a readable metrics.json; bad parameters fail in the first
cells with a clear message."""
import json
from pathlib import Path

import pytest
from nbrun import error_cell, run_papermill

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / 'nbs' / 'evaluate.ipynb'


def _papermill(tmp_path, *params):
    out = tmp_path / 'out.ipynb'
    return run_papermill(NB, out, dict(params)), out


def test_default_run_writes_the_report(tmp_path):
    from timer1_lib.evaluate import load_dataset
    items = load_dataset('synth-test', limit=8)              # also generates the split if this is the first use
    oracle = tmp_path / 'oracle.jsonl'
    oracle.write_text(''.join(json.dumps({'id': it.id, 'pred': list(it.segment)}) + '\n' for it in items))
    out_dir = tmp_path / 'eval'
    res, out = _papermill(tmp_path, ('out_dir', out_dir), ('limit', 8), ('max_new_tokens', 16),
                          ('external', f'oracle={oracle}'))
    assert res.returncode == 0, res.stderr[-3000:]
    for f in ('results.csv', 'results.md', 'per_type.csv', 'per_type.md', 'per_type.png', 'iou_hist.png',
              'comparison.csv', 'comparison.md', 'metrics.json', 'per_source.csv', 'per_length.csv',
              'per_relative_length.csv', 'timerft_base_by_source.csv', 'tiny-learn/SynthTVG-test/predictions.jsonl',
              'tiny-learn/SynthTVG-test/metrics.json'):
        assert (out_dir / f).is_file(), f
    m = json.loads((out_dir / 'metrics.json').read_text())
    assert {'schema', 'created', 'config', 'runs', 'results', 'files'} <= set(m)
    assert [r['name'] for r in m['runs']] == ['oracle', 'tiny-learn', 'baseline: full']
    run = m['runs'][1]
    assert {'name', 'dataset', 'kind', 'source', 'predictions', 'n_items', 'overall', 'extras', 'groups',
            'missing_ids', 'config', 'ious'} <= set(run)
    assert set(run['overall']) == {'R1@0.3', 'R1@0.5', 'R1@0.7', 'mIoU', 'n'} and run['overall']['n'] == 8
    assert set(run['groups']) == {'qtype', 'source', 'length', 'relative_length'}
    assert run['config']['max_new_tokens'] == 16 and run['config']['prompt'] == 'nothink'   # 'auto'
    assert m['results']['oracle']['SynthTVG-test']['mIoU'] == 100.0
    assert m['config']['limit'] == 8 and m['config']['checkpoints'] == ['tiny']
    nb = json.loads(out.read_text())
    pngs = sum('image/png' in o.get('data', {}) for c in nb['cells'] for o in c.get('outputs', []))
    assert pngs >= 2                                          # per-type chart and IoU histogram shown inline


@pytest.mark.parametrize('params, ename, text', [
    ((('datasets', 'tvgbnch'),), 'ValueError', "unknown dataset 'tvgbnch': valid specs are tvgbench, synth-test"),
    ((('checkpoints', 'artifacts/runs/nope/model'),), 'FileNotFoundError', "checkpoint 'artifacts/runs/nope/model'"),
])
def test_bad_parameters_fail_early(tmp_path, params, ename, text):
    res, out = _papermill(tmp_path, ('out_dir', tmp_path / 'eval'), *params)
    assert res.returncode != 0
    idx, got_ename, evalue = error_cell(out)
    assert got_ename == ename and text in evalue, evalue
    assert idx <= 2, f'failed in code cell {idx}, expected the parameter check (cell 2)'   # params, injected, config
    assert not (tmp_path / 'eval').exists()                  # nothing was written
