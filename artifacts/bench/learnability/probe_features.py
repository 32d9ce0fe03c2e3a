#!/usr/bin/env python
"""Linear / MLP probes on the frozen random ViT + merger features of the tiny `learn` model: can each merged vision token
of a SynthTVG 2x2-grid scene be read as (shape, colour) of its object and the background colour? Usage: probe_features.py [grid]
Measured 2026-11-22 (400 scenes, 26,584 tokens, 80/20 split): shape 0.986 linear / 0.996 MLP (majority 0.706),
colour 0.990 / 0.998 (0.706), background 0.998 / 0.998 (0.211)."""
import dataclasses, sys, time, torch, numpy as np
torch.set_num_threads(1)
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[3]))
import timer1_lib.model as M
from timer1_lib.synth import SynthConfig, plan, render, SHAPES, OBJECT_COLOURS
from timer1_lib.model import processor_inputs, build_prompt
from transformers import Qwen2_5_VLForConditionalGeneration
grid = int(sys.argv[1]) if len(sys.argv) > 1 else 2
tok = M.build_tokenizer(); cfg = M.tiny_config(tok, 'learn'); torch.manual_seed(0)
model = Qwen2_5_VLForConditionalGeneration(cfg).eval(); proc = M.make_processor(tok)
sc = SynthConfig.tiny(n_videos=1, test_frac=0.0, fps=2.0, time_step=1.0, grid=grid, objects=(1, 2), distractors=(1, 2))
X, Y = [], []
t0 = time.time()
for seed in range(400):
    p = plan(dataclasses.replace(sc, seed=seed))[0]; fr = render(p.scene); n = len(fr) - len(fr) % 2
    frames = torch.from_numpy(np.ascontiguousarray(fr[:n])).permute(0, 3, 1, 2)
    inp = processor_inputs(proc, [build_prompt(proc, 'x', think=False)], [frames], [2.0])
    with torch.no_grad():
        out = model.model.visual(inp['pixel_values_videos'], grid_thw=inp['video_grid_thw'])
        feats = out.pooler_output if hasattr(out, 'pooler_output') and out.pooler_output is not None else (out[0] if isinstance(out, tuple) else out)
    T, H, W = inp['video_grid_thw'][0].tolist(); h, w = H // 2, W // 2
    feats = feats.reshape(T, h, w, -1)
    f = p.scene.facts; g = f.geom
    for t in range(T):
        i = 2 * t
        for r in range(h):
            for c in range(w):
                lab = (len(SHAPES), len(OBJECT_COLOURS))    # none
                for k in range(f.shape.shape[1]):
                    if f.shape[i, k] >= 0 and f.x[i, k] * w // g.size == c and f.y[i, k] * h // g.size == r and f.col[i, k] >= 0:
                        lab = (int(f.shape[i, k]), int(f.col[i, k]))
                X.append(feats[t, r, c].numpy()); Y.append(lab + (int(f.bg[i]),))
X = torch.tensor(np.array(X)); Y = torch.tensor(Y)
print('tokens', X.shape, 'feat time', round(time.time() - t0, 1), 'none frac', float((Y[:, 0] == len(SHAPES)).float().mean()))
ntr = int(0.8 * len(X)); mu, sd = X[:ntr].mean(0), X[:ntr].std(0) + 1e-6; Xn = (X - mu) / sd
for name, col, K in (('shape', 0, len(SHAPES) + 1), ('colour', 1, len(OBJECT_COLOURS) + 1), ('bg', 2, 6)):
    y = Y[:, col]; ok = y >= 0
    for kind in ('linear', 'mlp'):
        torch.manual_seed(0)
        net = torch.nn.Linear(X.shape[1], K) if kind == 'linear' else torch.nn.Sequential(torch.nn.Linear(X.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, K))
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        tr = torch.nonzero(ok[:ntr]).flatten(); te = ntr + torch.nonzero(ok[ntr:]).flatten()
        for it in range(1500):
            b = tr[torch.randint(len(tr), (512,))]
            loss = torch.nn.functional.cross_entropy(net(Xn[b]), y[b]); opt.zero_grad(); loss.backward(); opt.step()
        with torch.no_grad(): acc = (net(Xn[te]).argmax(1) == y[te]).float().mean()
        maj = torch.bincount(y[tr]).max() / len(tr)
        print(f'{name:7s} {kind:6s} acc {acc:.3f} (majority {maj:.3f})')
