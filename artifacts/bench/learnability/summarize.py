#!/usr/bin/env python
"Markdown table of every learnability run in this folder's *.jsonl files (python summarize.py > table.md)."
import json, sys
from pathlib import Path

def row(r):
    a, f, p = r['args'], r['final'], r['prior'][r['prior']['best']]
    recipe = ['ViT frozen' if a['freeze_vit'] else ('ViT lr x%g' % a['vit_lr_mult'] if a.get('vit_lr_mult', 1) != 1 else 'ViT trained')]
    if a.get('freeze_merger'): recipe.append('merger frozen')
    if a['lr'] != 1e-3: recipe.append(f"lr {a['lr']:g}")
    if a['batch'] != 8: recipe.append(f"batch {a['batch']}")
    if a['prompt'] != 'nothink': recipe.append(f"prompt {a['prompt']}")
    over = {k: v for k, v in json.loads(a['set']).items()}
    if over: recipe.append(json.dumps(over).replace('"', ''))
    data = a['data'] if a['data'] == 'synth' else f"square/{a['task']}"
    if a['data'] == 'square': data += f"/{a['grid']}" + (f"/qpad{a['query_pad']}" if a.get('query_pad') else '')
    else: data += ('/ts1' if 'ts1' in a['synth_root'] else '/ts0.5') + ('/easy' if a.get('qtypes') else '')
    dev = 'GPU' if a['device'] == 'cuda' else f"CPU1 (load {r['loadavg']})"
    return (f"| {r['name']} | {data} | {', '.join(recipe)} | {dev} | {r['steps']} | {r['train_s']:.0f} | "
            f"{f['R1@0.5']:.1f} | {f['mIoU']:.1f} | {p['R1@0.5']:.1f} | {p['mIoU']:.1f} | {f.get('mae_s', float('nan')):.2f} / {f.get('mae_e', float('nan')):.2f} |")

def main(folder='.'):
    print('| run | data | recipe | device | steps | train s | R1@0.5 | mIoU | prior R1@0.5 | prior mIoU | MAE s/e (s) |')
    print('|---|---|---|---|---:|---:|---:|---:|---:|---:|---|')
    for p in sorted(Path(folder).glob('*.jsonl')):
        print(f'| **{p.name}** |||||||||||')
        for line in p.read_text().splitlines():
            if line.strip(): print(row(json.loads(line)))

if __name__ == '__main__':
    main(*sys.argv[1:])
