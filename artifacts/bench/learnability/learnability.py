#!/usr/bin/env python
"""Learnability bench for the tiny Qwen2.5-VL: plain SFT of `<answer>s to e</answer>` on one-object 'square' clips or on
SynthTVG, then greedy generation on held-out items: R1@0.5 / mIoU against answer-free constant baselines.

One run = one process (`--threads 1` on CPU; `--device cuda` on a GPU); the summary line is appended to `--out` (JSONL).
Examples (from the repo root):
  OMP_NUM_THREADS=1 .venv/bin/python artifacts/bench/learnability/learnability.py --data square --budget_s 480
  python artifacts/bench/learnability/learnability.py --data synth --synth_root artifacts/data/synthtvg-tiny-1k --device cuda --steps 3000
"""
import argparse, datetime, json, math, os, platform, random, sys, time
from pathlib import Path

COLS = {'red': (230, 30, 30), 'green': (30, 200, 30), 'blue': (40, 60, 230), 'yellow': (230, 220, 30)}

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    a = p.add_argument
    a('--name', default='run'); a('--out', default=None, help='JSONL file the summary is appended to')
    a('--data', default='square', choices=['square', 'synth', 'synthgen'])
    a('--preset', default='tiny', help="synthgen: SynthConfig preset; scenes are generated on the fly (fresh every step)")
    a('--synth_set', default='{}', help='synthgen: JSON overrides of the preset (e.g. {"grid": 2, "time_step": 1.0})')
    a('--task', default='interval', choices=['interval', 'duration', 'start', 'end', 'bind'],
      help="square: 'interval' = [s, e); probes: 'duration' = (0, D) (counting video tokens only), "
           "'start' = square from s to the end, 'end' = square from 0 to e")
    a('--grid', default='half', choices=['half', 'int'], help="square: GT on the 0.5 s frame grid or on whole seconds")
    a('--query_pad', type=int, default=0, help='square: append 0..N random filler words to the query (varies its length)')
    a('--frames', default='12,24', help='square: min,max frames (2 fps; even numbers)')
    a('--synth_root', default='artifacts/data/synthtvg-tiny-1k')
    a('--qtypes', default=None, help='synth: comma-separated query types to keep (default all)')
    a('--prompt', default='nothink', choices=['nothink', 'think', 'short'])
    a('--decimals', type=int, default=2)
    a('--size', default='learn'); a('--set', default='{}', help='JSON overrides of the TINY_SIZES entry (incl. rope_theta)')
    a('--lr', type=float, default=1e-3); a('--warmup', type=int, default=30); a('--wd', type=float, default=0.0)
    a('--schedule', default='cosine', choices=['const', 'cosine'], help='decay over steps (or over the time budget)')
    a('--min_lr_frac', type=float, default=0.1)
    a('--batch', type=int, default=8); a('--steps', type=int, default=10**9); a('--budget_s', type=float, default=1e9)
    a('--freeze_vit', action='store_true', help='freeze the ViT (Time-R1 fix_vit); the patch merger stays trainable')
    a('--freeze_merger', action='store_true', help='with --freeze_vit: freeze the patch merger too')
    a('--vit_lr_mult', type=float, default=1.0, help='lr multiplier of the (trainable) ViT blocks, merger excluded')
    a('--clip', type=float, default=1.0)
    a('--eval_every', type=int, default=0, help='steps between small evals (0: none)'); a('--n_curve', type=int, default=64)
    a('--n_test', type=int, default=200); a('--eval_batch', type=int, default=50)
    a('--threads', type=int, default=1); a('--device', default='cpu'); a('--seed', type=int, default=0)
    a('--check_positions', action='store_true', help='also compare teacher-forced vs generate logits')
    return p.parse_args(argv)

# ---------------------------------------------------------------- data
FILLER = 'now here again then also still clearly somewhere in the small video at some point'.split()

def square_sample(rng, grid='half', frames=(12, 24), task='interval', query_pad=0):
    "One coloured 16x16 square visible in frames [s, e) of a 56x56 clip at 2 fps; GT (s/2, e/2) seconds."
    import torch
    T = rng.choice(range(frames[0], frames[1] + 1, 2))
    if grid == 'half':
        s = rng.randrange(0, T - 2); e = rng.randrange(s + 2, T + 1)
    else:                                   # whole seconds: s, e even frame indices
        s = 2 * rng.randrange(0, T // 2 - 1); e = 2 * rng.randrange(s // 2 + 1, T // 2 + 1)
    if task == 'bind':   # a second square of another colour in another place and interval: the query picks one
        c1, c2 = rng.sample(list(COLS), 2)
        fr = torch.zeros(T, 3, 56, 56, dtype=torch.uint8)
        segs = []
        for col, (y, x) in zip((c1, c2), rng.sample([(4, 4), (4, 36), (36, 4), (36, 36)], 2)):
            if grid == 'half': a = rng.randrange(0, T - 2); b = rng.randrange(a + 2, T + 1)
            else: a = 2 * rng.randrange(0, T // 2 - 1); b = 2 * rng.randrange(a // 2 + 1, T // 2 + 1)
            fr[a:b, :, y:y + 16, x:x + 16] = torch.tensor(COLS[col], dtype=torch.uint8)[None, :, None, None]; segs.append((a, b))
        return dict(frames=fr, fps=2.0, query=f'the {c1} square is visible', segment=(segs[0][0] / 2, segs[0][1] / 2), duration=T / 2)
    if task == 'start': e = T
    elif task == 'end': s = 0
    col = rng.choice(list(COLS))
    fr = torch.zeros(T, 3, 56, 56, dtype=torch.uint8)
    y, x = rng.randrange(0, 40), rng.randrange(0, 40)
    fr[s:e, :, y:y + 16, x:x + 16] = torch.tensor(COLS[col], dtype=torch.uint8)[None, :, None, None]
    seg = (0.0, T / 2) if task == 'duration' else (s / 2, e / 2)
    q = ' '.join([f'the {col} square is visible'] + [rng.choice(FILLER) for _ in range(rng.randint(0, query_pad))])
    return dict(frames=fr, fps=2.0, query=q, segment=seg, duration=T / 2)

def synth_rows(root, split, qtypes=None):
    "SynthTVG items of `split` with their clips decoded at 2 fps, 56x56 (one decode per video)."
    from timer1_lib.synth import SynthSplits
    from timer1_lib.video import load_video, VideoSamplingConfig
    items = list(SynthSplits.open(root).items(split))
    if qtypes: items = [it for it in items if it.qtype in qtypes]
    cfg, clips, rows = VideoSamplingConfig(size=(56, 56)), {}, []
    for it in items:
        if it.video not in clips: clips[it.video] = load_video(it.video, config=cfg, cache=False)
        c = clips[it.video]
        rows.append(dict(frames=c.frames, fps=float(c.fps), query=it.query, segment=tuple(it.segment),
                         duration=float(it.duration), qtype=it.qtype))
    return rows

def synthgen_sampler(preset, overrides, qtypes=None):
    "f(seed) -> one row: a fresh SynthTVG scene rendered at 2 fps (no mp4) and one of its queries, chosen by the seed."
    import dataclasses, torch
    import numpy as np
    from timer1_lib.synth import PRESETS, plan, render
    cfg = PRESETS[preset](**({'n_videos': 1, 'test_frac': 0.0, 'fps': 2.0} | overrides | ({'qtypes': tuple(qtypes)} if qtypes else {})))
    def sample(seed):
        p = plan(dataclasses.replace(cfg, seed=seed))[0]
        fr = render(p.scene); n = len(fr) - len(fr) % 2
        q = p.queries[seed % len(p.queries)]
        return dict(frames=torch.from_numpy(np.ascontiguousarray(fr[:n])).permute(0, 3, 1, 2), fps=2.0, query=q['sentence'],
                    segment=(q['frames'][0] / 2.0, min(q['frames'][1], n) / 2.0), duration=n / 2.0, qtype=q['qtype'])
    return sample

# ---------------------------------------------------------------- model
def build(args):
    import torch, timer1_lib.model as M
    from transformers import Qwen2_5_VLForConditionalGeneration
    over = json.loads(args.set)
    theta = float(over.pop('rope_theta', M.TINY_SIZES[args.size].get('rope_theta', 1e6)))
    M.TINY_SIZES['_bench'] = {**M.TINY_SIZES[args.size], **over, 'rope_theta': theta}
    tok = M.build_tokenizer()
    cfg = M.tiny_config(tok, '_bench')
    rp = cfg.text_config.rope_parameters
    if rp.get('rope_theta') != theta:     # tiny_config without rope_theta support (older notebook): patch it here
        rp['rope_theta'] = theta
    torch.manual_seed(args.seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    proc = M.make_processor(tok)
    proc.tokenizer.padding_side = 'left'
    if args.freeze_vit: M.freeze_vision_tower(model, train_merger=not args.freeze_merger, verbose=False)
    return model, proc, dict(M.TINY_SIZES['_bench']), cfg

def prompt_text(proc, q, kind):
    from timer1_lib.model import build_prompt
    if kind == 'short':
        return build_prompt(proc, q, think=False).split('<|vision_end|>')[0] + '<|vision_end|>' + q + \
            '<|im_end|>\n<|im_start|>assistant\n'
    return build_prompt(proc, q, think=(kind == 'think'))

def answer(seg, d): return f'<answer>{seg[0]:.{d}f} to {seg[1]:.{d}f}</answer>'

def train_batch(proc, rows, args):
    from timer1_lib.model import processor_inputs
    tok = proc.tokenizer
    prompts = [prompt_text(proc, r['query'], args.prompt) for r in rows]
    tok.padding_side = 'right'
    try:
        inp = processor_inputs(proc, [p + answer(r['segment'], args.decimals) + tok.eos_token for p, r in zip(prompts, rows)],
                               [r['frames'] for r in rows], [r['fps'] for r in rows])
    finally: tok.padding_side = 'left'
    # answer tokens: everything after the (per-row) prompt; prompt length = tokens of the prompt with the video expanded
    labels = inp['input_ids'].clone(); labels[inp['attention_mask'] == 0] = -100
    a_lens = [len(tok(answer(r['segment'], args.decimals) + tok.eos_token, add_special_tokens=False)['input_ids']) for r in rows]
    for i, n in enumerate(a_lens):
        L = int(inp['attention_mask'][i].sum()); labels[i, :L - n] = -100
    return inp, labels

# ---------------------------------------------------------------- eval
def generate(model, proc, rows, args, dev, max_new=24):
    import torch
    from timer1_lib.model import processor_inputs, vision_token_ids
    from timer1_lib.rewards import parse_answer
    tok, out = proc.tokenizer, []
    model.eval()
    with torch.no_grad():
        for k in range(0, len(rows), args.eval_batch):
            ch = rows[k:k + args.eval_batch]
            inp = processor_inputs(proc, [prompt_text(proc, r['query'], args.prompt) for r in ch], [r['frames'] for r in ch],
                                   [r['fps'] for r in ch]).to(dev)
            g = model.generate(**inp, max_new_tokens=max_new, do_sample=False, suppress_tokens=vision_token_ids(proc),
                               eos_token_id=[tok.eos_token_id, tok.pad_token_id], pad_token_id=tok.pad_token_id)
            for i in range(len(ch)):
                txt = tok.decode(g[i, inp['input_ids'].shape[1]:], skip_special_tokens=True)
                out.append((txt, parse_answer(txt)))
    model.train()
    return out

def metrics(rows, preds):
    from timer1_lib.metrics import grounding_metrics
    m = grounding_metrics([p for _, p in preds], [r['segment'] for r in rows])
    m = {k: round(float(v), 2) for k, v in m.items() if k != 'n'}
    m['parsed'] = round(sum(p is not None for _, p in preds) / len(preds), 3)
    ok = [(p, r['segment']) for r, (_, p) in zip(rows, preds) if p is not None]
    if ok:   # mean absolute start / end error (s) of the parsed answers: a finer learning signal than IoU
        m['mae_s'] = round(sum(abs(p[0] - g[0]) for p, g in ok) / len(ok), 3)
        m['mae_e'] = round(sum(abs(p[1] - g[1]) for p, g in ok) / len(ok), 3)
    return m

def prior_baselines(train_rows, test_rows):
    "Answer-free predictions: the whole video; the best constant (a*D, b*D) and best constant (a, b) seconds on train."
    from timer1_lib.rewards import iou
    def mean_iou(rows, f): return sum(iou(f(r), r['segment']) for r in rows) / len(rows)
    fr = [i / 20 for i in range(21)]
    best_frac = max(((a, b) for a in fr for b in fr if b > a), key=lambda ab: mean_iou(train_rows, lambda r: (ab[0] * r['duration'], ab[1] * r['duration'])))
    secs = [i / 2 for i in range(0, 49)]
    best_abs = max(((a, b) for a in secs for b in secs if b > a), key=lambda ab: mean_iou(train_rows[:400], lambda r: ab))
    out = {}
    for name, f in (('whole_video', lambda r: (0.0, r['duration'])),
                    ('const_frac', lambda r: (best_frac[0] * r['duration'], best_frac[1] * r['duration'])),
                    ('const_sec', lambda r: best_abs)):
        out[name] = metrics(test_rows, [('', f(r)) for r in test_rows])
    out['const_frac']['ab'] = best_frac; out['const_sec']['ab'] = best_abs
    out['best'] = max(('whole_video', 'const_frac', 'const_sec'), key=lambda k: out[k]['mIoU'])
    return out

def position_check(model, proc, rows, args, dev):
    "Max |teacher-forced logit - generate score| over the greedy answer tokens, and the text position after the video."
    import torch
    from timer1_lib.model import processor_inputs, vision_token_ids
    tok = proc.tokenizer
    model.eval()
    with torch.no_grad():
        inp = processor_inputs(proc, [prompt_text(proc, r['query'], args.prompt) for r in rows], [r['frames'] for r in rows],
                               [r['fps'] for r in rows]).to(dev)
        g = model.generate(**inp, max_new_tokens=12, do_sample=False, output_logits=True, return_dict_in_generate=True,
                           suppress_tokens=None, eos_token_id=None, pad_token_id=tok.pad_token_id)
        n = inp['input_ids'].shape[1]
        seq = g.sequences
        full = dict(inp); full['input_ids'] = seq
        full['attention_mask'] = torch.cat([inp['attention_mask'], torch.ones_like(seq[:, n:])], 1)
        full['mm_token_type_ids'] = torch.cat([inp['mm_token_type_ids'], torch.zeros_like(seq[:, n:])], 1)
        tf = model(**full).logits[:, n - 1:-1].float()
        gl = torch.stack(g.logits, 1).float()
        pos, _ = model.model.get_rope_index(full['input_ids'], full['mm_token_type_ids'], video_grid_thw=full['video_grid_thw'],
                                            second_per_grid_ts=full.get('second_per_grid_ts'), attention_mask=full['attention_mask'])
    model.train()
    ids = full['input_ids'][0][full['attention_mask'][0].bool()]; p = pos[:, 0, full['attention_mask'][0].bool()]
    vid = (ids == model.config.video_token_id).nonzero().flatten()
    return dict(max_abs_logit_diff=float((tf - gl).abs().max()), logit_scale=float(gl.abs().max()),
                video_t_ids=sorted(set(p[0, vid].tolist())), text_after_video=p[:, int(vid[-1]) + 1].tolist(),
                second_per_grid_ts=[float(x) for x in full.get('second_per_grid_ts', [])][:4])

# ---------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', str(args.threads))
    import torch, transformers
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    dev = torch.device(args.device)
    t_setup = time.time()
    model, proc, size, cfg = build(args)
    model.to(dev).train()
    nparams = sum(p.numel() for p in model.parameters())
    rng = random.Random(args.seed)
    if args.data == 'square':
        lo, hi = (int(x) for x in args.frames.split(','))
        test = [square_sample(random.Random(10_000 + i), args.grid, (lo, hi), args.task, args.query_pad) for i in range(args.n_test)]
        prior_train = [square_sample(random.Random(50_000 + i), args.grid, (lo, hi), args.task, args.query_pad) for i in range(2000)]
        next_rows = lambda: [square_sample(rng, args.grid, (lo, hi), args.task, args.query_pad) for _ in range(args.batch)]
        n_train = None
    elif args.data == 'synthgen':
        qt = args.qtypes.split(',') if args.qtypes else None
        sample = synthgen_sampler(args.preset, json.loads(args.synth_set), qt)
        test = [sample(10**6 + i) for i in range(args.n_test)]
        prior_train = [sample(5 * 10**6 + i) for i in range(2000)]
        next_rows = lambda: [sample(rng.randrange(10**6)) for _ in range(args.batch)]
        n_train = None
    else:
        qt = set(args.qtypes.split(',')) if args.qtypes else None
        train = synth_rows(args.synth_root, 'train', qt); test = synth_rows(args.synth_root, 'test', qt)[:args.n_test]
        prior_train, n_train = train, len(train)
        order = []
        def next_rows():
            nonlocal order
            if len(order) < args.batch: order += rng.sample(range(len(train)), len(train))
            idx, order[:] = order[:args.batch], order[args.batch:]
            return [train[i] for i in idx]
    curve_rows = test[:args.n_curve]
    base = prior_baselines(prior_train, test)
    params = [p for p in model.parameters() if p.requires_grad]
    vis = model.model.visual
    vit_ids = {id(p) for n, p in vis.named_parameters() if not n.startswith('merger.')}
    groups = []
    for mult, sel in ((1.0, lambda p: id(p) not in vit_ids), (args.vit_lr_mult, lambda p: id(p) in vit_ids)):
        for wd, nd in ((args.wd, lambda p: p.ndim >= 2), (0.0, lambda p: p.ndim < 2)):
            ps = [p for p in params if sel(p) and nd(p)]
            if ps: groups.append({'params': ps, 'weight_decay': wd, 'lr_mult': mult})
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98))
    t_setup = time.time() - t_setup
    print(f'[{args.name}] params {nparams:,}; setup {t_setup:.1f}s; prior {base[base["best"]]}', flush=True)
    log, curve, step, t_train, t_eval = [], [], 0, 0.0, 0.0
    ema = None
    while step < args.steps and t_train < args.budget_s:
        t0 = time.time()
        frac = min(1.0, max(step / args.steps if args.steps < 10**9 else 0.0, t_train / args.budget_s if args.budget_s < 1e9 else 0.0))
        sched = 1.0 if args.schedule == 'const' else args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups: g['lr'] = g['lr_mult'] * args.lr * min(1.0, (step + 1) / max(1, args.warmup)) * sched
        inp, labels = train_batch(proc, next_rows(), args)
        inp, labels = inp.to(dev), labels.to(dev)
        loss = model(**inp, labels=labels).loss
        loss.backward()
        if args.clip: torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step(); opt.zero_grad(set_to_none=True)
        step += 1
        if dev.type == 'cuda': torch.cuda.synchronize()
        t_train += time.time() - t0
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if args.eval_every and step % args.eval_every == 0:
            t0 = time.time()
            m = metrics(curve_rows, generate(model, proc, curve_rows, args, dev))
            t_eval += time.time() - t0
            curve.append(dict(step=step, t_train=round(t_train, 1), loss=round(ema, 4), **m))
            print(f'[{args.name}]', curve[-1], flush=True)
    t0 = time.time()
    preds = generate(model, proc, test, args, dev)
    final = metrics(test, preds)
    t_eval += time.time() - t0
    if args.data != 'square':
        by = {}
        for r, p in zip(test, preds): by.setdefault(r['qtype'], ([], []))[0].append(r); by[r['qtype']][1].append(p)
        final['by_qtype'] = {k: metrics(rs, ps) for k, (rs, ps) in by.items()}
    res = dict(name=args.name, date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               device=(torch.cuda.get_device_name(0) if dev.type == 'cuda' else (platform.processor() or platform.machine())),
               host_cpus=os.cpu_count(), loadavg=round(os.getloadavg()[0], 2), threads=torch.get_num_threads(),
               versions=dict(torch=torch.__version__, transformers=transformers.__version__),
               args=vars(args), size=size, params=nparams, n_train=n_train, n_test=len(test), steps=step,
               train_s=round(t_train, 1), eval_s=round(t_eval, 1), steps_per_s=round(step / max(t_train, 1e-9), 3),
               final_loss_ema=round(ema, 4) if ema is not None else None, final=final, prior=base, curve=curve,
               samples=[t for t, _ in preds[:3]])
    if args.check_positions:
        try: res['position_check'] = position_check(model, proc, test[:4], args, dev)
        except Exception as e: res['position_check'] = f'failed: {type(e).__name__}: {e}'
    print(f'[{args.name}] FINAL steps {step} train {t_train:.0f}s: {final if args.data == "square" else {k: v for k, v in final.items() if k != "by_qtype"}} '
          f'prior[{base["best"]}] {base[base["best"]]} samples {res["samples"]}', flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, 'a') as f: f.write(json.dumps(res) + '\n')
    return res

if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))   # repo root (timer1_lib) when run as a file
    main()
