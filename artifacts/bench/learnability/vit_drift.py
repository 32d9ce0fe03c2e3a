#!/usr/bin/env python
"""Why a trained random ViT stalls learning: track how well the merger output separates square / no-square temporal
patches (Fisher ratio of per-patch mean features) while SFT trains the square task, with the ViT trained vs frozen."""
import json, random, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent)); sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import torch
import learnability as L

def fisher(model, proc, rows):
    from timer1_lib.model import processor_inputs
    inp = processor_inputs(proc, ['<|vision_start|><|video_pad|><|vision_end|>'] * len(rows), [r['frames'] for r in rows], [2.0] * len(rows))
    with torch.no_grad():
        f = model.model.visual(inp['pixel_values_videos'], grid_thw=inp['video_grid_thw'])
        f = getattr(f, 'pooler_output', f)           # merged tokens: (sum T*4, hidden)
    feats, labs, i = [], [], 0
    for r, (t, h, w) in zip(rows, inp['video_grid_thw'].tolist()):
        n = t * h * w // 4
        x = f[i:i + n].view(t, -1, f.shape[-1]).mean(1); i += n
        vis = (r['frames'].float().amax(dim=(1, 2, 3)) > 0).view(t, 2).any(1)
        feats.append(x); labs.append(vis)
    x, y = torch.cat(feats), torch.cat(labs)
    mu1, mu0 = x[y].mean(0), x[~y].mean(0)
    within = 0.5 * (x[y].var(0).sum() + x[~y].var(0).sum())
    return dict(fisher=round(float((mu1 - mu0).pow(2).sum() / within.clamp_min(1e-12)), 3),
                feat_norm=round(float(x.norm(dim=-1).mean()), 3), sep=round(float((mu1 - mu0).norm()), 4))

def run(freeze, steps, lr=1e-3, seed=0):
    args = L.parse_args(['--lr', str(lr)] + (['--freeze_vit'] if freeze else []))
    model, proc, _, _ = L.build(args); model.train()
    rng, probe = random.Random(seed), [L.square_sample(random.Random(10_000 + i)) for i in range(24)]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    out = []
    for step in range(steps + 1):
        if step % 25 == 0:
            out.append(dict(step=step, **fisher(model, proc, probe)))
            print(('frozen' if freeze else 'trained'), out[-1], flush=True)
        if step == steps: break
        for g in opt.param_groups: g['lr'] = lr * min(1.0, (step + 1) / 30)
        inp, labels = L.train_batch(proc, [L.square_sample(rng) for _ in range(8)], args)
        loss = model(**inp, labels=labels).loss; loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step(); opt.zero_grad()
    return out

if __name__ == '__main__':
    torch.set_num_threads(1)
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    res = {'trained_vit': run(False, steps), 'frozen_vit': run(True, steps)}
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    if out: out.write_text(json.dumps(res, indent=1))
