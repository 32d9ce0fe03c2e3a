#!/usr/bin/env python
"""Paired analysis of the GRPO-vs-SFT runs (driver.py): per-item IoU of each run's evaluations, R1@0.5 / mIoU by
split part (in-distribution query types vs the held-out type), and paired differences with bootstrap 95% CIs.
Usage (repo root): python artifacts/bench/grpo_vs_sft/analyze.py > artifacts/bench/grpo_vs_sft/results.md"""
import json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from timer1_lib.rewards import iou

HERE = Path(__file__).resolve().parent
QT = {}
for root in ('artifacts/data/synthtvg-learn', 'artifacts/data/synthtvg-learn-heldout'):
    f = HERE.parents[2] / root / 'test.json'
    if f.is_file(): QT[root] = {r['qid']: r['qtype'] for r in json.loads(f.read_text())}
HELD = 'Object Existence (Complex)'

def per_item(recs):
    return {r['id']: iou(r['pred'], r['gt']) if r['pred'] is not None else 0.0 for r in recs}

def part(ids, held, which):
    q = QT['artifacts/data/synthtvg-learn-heldout' if held else 'artifacts/data/synthtvg-learn']
    if which == 'all': return ids
    return [i for i in ids if (q[i] == HELD) == (which == 'held-out type')]

def stats(v): return f"{100 * np.mean(np.asarray(v) > 0.5):5.1f} / {100 * np.mean(v):5.1f}"

def diff(a, b, rng=np.random.default_rng(0), n=2000):
    "mean paired difference of IoU (b - a), in points, with a bootstrap 95% CI; and of R1@0.5."
    a, b = np.asarray(a), np.asarray(b); d = b - a; r = (b > 0.5).astype(float) - (a > 0.5)
    idx = rng.integers(0, len(d), (n, len(d)))
    lo, hi = np.percentile(d[idx].mean(1), [2.5, 97.5]) * 100
    rlo, rhi = np.percentile(r[idx].mean(1), [2.5, 97.5]) * 100
    return f"{100 * r.mean():+5.1f} [{rlo:+.1f}, {rhi:+.1f}] / {100 * d.mean():+5.1f} [{lo:+.1f}, {hi:+.1f}]"

def main():
    runs = {}
    for sweep in ('sweep1', 'sweep2'):
        f = HERE / sweep / 'results.json'
        if f.is_file():
            for n, r in json.loads(f.read_text()).items(): runs[f'{sweep}/{n}'] = r
    print('# GRPO vs SFT: paired results\n')
    print('R1@0.5 / mIoU (%) of every evaluation; Δ = paired difference to the reference, mean over the same items, '
          'with a bootstrap 95% CI (2,000 resamples).\n')
    print('| run | phase | items | part | R1@0.5 / mIoU |\n|---|---|---:|---|---|')
    iou_of = {}
    for n, r in runs.items():
        held = 'ho' in n.split('/')[1][:3]
        for ph, recs in r.get('eval', {}).items():
            if not recs: continue
            it = per_item(recs); iou_of[(n, ph)] = it
            for which in ('all', 'in-distribution', 'held-out type') if held else ('all',):
                ids = part(sorted(it), held, which)
                print(f"| {n} | {ph.replace('eval_', '')} | {len(ids)} | {which} | {stats([it[i] for i in ids])} |")
    print('\n## Paired differences\n')
    print('| comparison | items | part | Δ R1@0.5 [95% CI] / Δ mIoU [95% CI] |\n|---|---:|---|---|')
    def cmp(label, a, b, held):
        if a not in iou_of or b not in iou_of: return
        A, B = iou_of[a], iou_of[b]; common = sorted(set(A) & set(B))
        for which in ('all', 'in-distribution', 'held-out type') if held else ('all',):
            ids = part(common, held, which)
            print(f"| {label} | {len(ids)} | {which} | {diff([A[i] for i in ids], [B[i] for i in ids])} |")
    s1, s2 = 'sweep1/', 'sweep2/'
    for n in runs:
        if n.startswith(s1) and n != s1 + 'cs_main' and 'eval_after_grpo' in runs[n].get('eval', {}):
            cmp(f"{n} GRPO vs its start", (s1 + 'cs_main', 'eval_after_coldstart'), (n, 'eval_after_grpo'), False)
    cmp('sweep1 SFT +400 steps vs its start', (s1 + 'cs_main', 'eval_after_coldstart'), (s1 + 'main_sft_400', 'eval_after_coldstart'), False)
    for s in range(3):
        m = f'{s2}main_s{s}'
        cmp(f'seed {s}: GRPO vs its cold start', (m, 'eval_after_coldstart'), (m, 'eval_after_grpo'), False)
        cmp(f'seed {s}: SFT 1300 steps vs SFT 1000 + GRPO', (m, 'eval_after_grpo'), (f'{s2}main_sft1300_s{s}', 'eval_after_coldstart'), False)
    for g in ('ho_grpo_s0', 'ho_grpo_s1'):
        cmp(f'held-out split: {g} vs its cold start', (s2 + 'cs_ho', 'eval_after_coldstart'), (s2 + g, 'eval_after_grpo'), True)
        cmp(f'held-out split: SFT +300 steps vs {g}', (s2 + g, 'eval_after_grpo'), (s2 + 'ho_sft_more300', 'eval_after_coldstart'), True)
    cmp('held-out split: SFT +300 steps vs the cold start', (s2 + 'cs_ho', 'eval_after_coldstart'), (s2 + 'ho_sft_more300', 'eval_after_coldstart'), True)
    cmp('held-out split: SFT 1300 (from scratch) vs SFT 1000', (s2 + 'cs_ho', 'eval_after_coldstart'), (s2 + 'ho_sft1300', 'eval_after_coldstart'), True)

if __name__ == '__main__':
    main()
