"""The sweep runner (`timer1_lib.sweep`) end to end on the `test`-size tiny model (preset smoke, 3 test items): a
two-row, two-seed sweep started as `python -m timer1_lib.sweep spec.yaml` shares one cold start per seed, is killed
with its runs (SIGKILL of its process group) once the first row has finished, and resumes without re-running what
finished; its table equals one computed by hand from the run folders (metrics.json and the eval jsonl), also after the
predictions of one row are replaced by random ones. And the shipped specs load, validate and plan."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest

from timer1_lib.metrics import grounding_metrics, item_iou, paired_bootstrap
from timer1_lib.sweep import METRICS, load_spec, plan_runs, run_state, run_sweep, shipped_specs, sweep_table

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    from timer1_lib.model import make_tiny_model
    return make_tiny_model(tmp_path_factory.mktemp('sweep') / 'tiny', size='test')


def _write_spec(tmp: Path, ckpt) -> Path:
    f = tmp / 'two_by_two.yaml'
    f.write_text(f"""name: two_by_two
preset: smoke
base: {{model_path: '{ckpt}', eval_limit: 3}}
rows:
  lr 1e-4: {{}}
  lr 3e-4: {{learning_rate: 3e-4}}
seeds: [0, 1]
reference: lr 1e-4
start_row: cold start
parallel: 2
out_dir: '{tmp / "sweep"}'
""")
    return f


def _jsonl(f: Path) -> list[dict]:
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip() and json.loads(x).get('type') != 'config']


def _hand_table(out: Path, plan: dict) -> tuple[dict, dict]:
    "Mean and population SD of metrics.json per row; the paired delta vs 'lr 1e-4' from the eval jsonl, by hand."
    where = {}   # row -> [(run, phase) per seed]
    for n, r in plan.items():
        if r.row is None: continue
        where.setdefault(r.row, []).append((n, 'after_grpo'))
        if r.row == 'lr 1e-4': where.setdefault('cold start', []).append((n, 'before'))
    tab, deltas = {}, {}
    for row, rs in where.items():
        ms = [json.loads((out / 'runs' / n / 'metrics.json').read_text())['metrics'][ph] for n, ph in rs]
        tab[row] = {m: (np.mean([x[m] for x in ms]), np.std([x[m] for x in ms])) for m in METRICS}
    def cols(n, ph):
        recs = sorted(_jsonl(out / 'runs' / n / f'eval_{ph}.jsonl'), key=lambda r: str(r['id']))
        v = [item_iou(r['pred'], r['gt']) for r in recs]
        return np.array([[x > 0.3, x > 0.5, x > 0.7, x, r['pred'] is not None] for x, r in zip(v, recs)], float)
    ref = [cols(*x) for x in where['lr 1e-4']]
    for row in ('cold start', 'lr 3e-4'):
        t = paired_bootstrap(ref, [cols(*x) for x in where[row]], n_boot=2000, seed=0)
        deltas[row] = {m: (100 * t['mean'][j], 100 * t['lo'][j], 100 * t['hi'][j]) for j, m in enumerate(METRICS)}
    return tab, deltas


def _check_table(out: Path, plan: dict):
    md, tab = sweep_table(out)
    hand_tab, hand_deltas = _hand_table(out, plan)
    assert list(tab.index) == ['cold start', 'lr 1e-4', 'lr 3e-4'] and set(tab['seeds']) == {2}
    for row, ms in hand_tab.items():
        for m, (mean, sd) in ms.items():
            assert (tab.loc[row, m], tab.loc[row, f'{m} sd']) == pytest.approx((mean, sd), abs=1e-9), (row, m)
    d = tab.attrs['deltas']
    assert list(d.index) == ['cold start', 'lr 3e-4'] and set(d['items']) == {6} and set(d['seeds']) == {2}
    for row, ms in hand_deltas.items():
        for m, v in ms.items():
            assert (d.loc[row, m], d.loc[row, f'{m} lo'], d.loc[row, f'{m} hi']) == pytest.approx(v, abs=1e-9)
    for f in ('table.md', 'table.csv', 'deltas.csv', 'table.png', 'sweep.json'): assert (out / f).is_file(), f
    assert (out / 'table.md').read_text() == md and '| lr 3e-4 | 2 | 3 |' in md
    return md, tab


def test_sweep_shares_cold_starts_resumes_after_a_kill_and_tables(tmp_path, tiny_ckpt):
    spec_file = _write_spec(tmp_path, tiny_ckpt)
    spec = load_spec(spec_file)
    plan, out = plan_runs(spec), spec.output_dir()
    rows = [n for n, r in plan.items() if r.row is not None]
    cs = [n for n, r in plan.items() if r.row is None]
    assert len(rows) == 4 and len(cs) == 2 and {plan[n].start for n in rows} == set(cs)    # one cold start a seed

    # 1. the CLI, killed together with its runs once the first row has finished
    log = tmp_path / 'cli.log'
    p = subprocess.Popen([sys.executable, '-m', 'timer1_lib.sweep', str(spec_file)], cwd=ROOT, start_new_session=True,
                         stdout=open(log, 'w'), stderr=subprocess.STDOUT)
    t0, done = time.time(), []
    while time.time() - t0 < 300 and p.poll() is None and not done:
        time.sleep(0.2)
        done = [n for n in rows if run_state(out / 'runs' / n, plan[n]) == 'done']
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    assert done, log.read_text()[-3000:]
    unfinished = [n for n in rows if run_state(out / 'runs' / n, plan[n]) != 'done']
    assert unfinished, 'the sweep finished before it could be killed'
    stamp = {n: (out / 'runs' / n / 'metrics.json').stat().st_mtime_ns for n in done}

    # 2. the same sweep again: what finished is not re-run, the rest completes
    res = run_sweep(spec_file)
    assert res['complete'], res
    assert {res['runs'][n] for n in done} == {'done earlier'} and {res['runs'][n] for n in unfinished} == {'done'}
    assert {n: (out / 'runs' / n / 'metrics.json').stat().st_mtime_ns for n in done} == stamp
    assert not any((out / 'logs' / f'{n}.log.1').exists() for n in done)     # never launched again
    assert all(res['runs'][n] in ('done', 'done earlier') for n in cs)
    moved = [q.name.rsplit('.', 1)[0] for q in (out / 'partial').iterdir()] if (out / 'partial').is_dir() else []
    assert set(moved) <= set(unfinished) | set(cs), moved                  # partial runs set aside, not deleted
    for n in rows:
        c = json.loads((out / 'runs' / n / 'metrics.json').read_text())['config']
        assert (c['model_path'], c['cold_start']) == (str(out / 'runs' / plan[n].start / 'coldstart'), False)
    inv = json.loads((out / 'sweep.json').read_text())['invocations']
    assert len(inv) == 2 and inv[-1]['complete'] and {'torch', 'transformers', 'trl', 'timer1_lib'} <= set(
        inv[-1]['machine']['versions'])

    # 3. the table equals the one made by hand from the run folders
    _check_table(out, plan)
    # ... also with numbers that are not all zeros: one row's final predictions replaced by random ones
    rng = np.random.default_rng(0)
    for n in rows:
        if plan[n].row != 'lr 3e-4': continue
        f = out / 'runs' / n / 'eval_after_grpo.jsonl'
        lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        for r in lines[1:]:
            s = rng.uniform(0, r['duration'] / 2)
            r['pred'] = [s, min(r['duration'], s + rng.uniform(1, r['duration']))]
        f.write_text(''.join(json.dumps(r) + '\n' for r in lines))
        m = json.loads((out / 'runs' / n / 'metrics.json').read_text())
        m['metrics']['after_grpo'].update(grounding_metrics([r['pred'] for r in lines[1:]],
                                                            [r['gt'] for r in lines[1:]]), parsed=100.0)
        (out / 'runs' / n / 'metrics.json').write_text(json.dumps(m))
    md, tab = _check_table(out, plan)
    assert tab.loc['lr 3e-4', 'mIoU'] > 0 and tab.attrs['deltas'].loc['lr 3e-4', 'mIoU'] > 0

    # 4. once more: nothing to run
    t = time.time(); res = run_sweep(spec_file, table=False)
    assert set(res['runs'].values()) == {'done earlier'} and time.time() - t < 60


def test_shipped_specs_load_validate_and_plan():
    "Every spec in artifacts/sweeps/ validates (data paths aside) and plans one cold start per seed and key."
    assert {'grpo_vs_sft', 'taro'} <= set(shipped_specs())
    for name in shipped_specs():
        spec = load_spec(name)
        plan = spec.validate(check_paths=False)
        assert {r.row for r in plan.values() if r.row} == set(spec.rows)
        assert all(plan[r.start].row is None and plan[r.start].seed == r.seed for r in plan.values() if r.start)
    taro = plan_runs(load_spec('taro'))
    assert len(taro) == 3 + 18 and len({r.start for r in taro.values() if r.start}) == 3
    from timer1_lib.bench import taro_plan
    bench = taro_plan()
    assert {n for n in taro if not n.startswith('cs_')} == {n for n in bench if not n.startswith('cs_')}

