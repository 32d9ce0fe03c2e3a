"""Where a cold-start SFT step of the CPU default goes (issue #14): the embedded tiny Qwen2.5-VL (artifacts/models/
tiny-learn), its SynthTVG learn training split, the default's ColdStartConfig (batch 8, frames as trained).
Times the collator (video decode + processor; cold, then with the frame cache warm) and the optimizer step
(forward, backward, AdamW), profiles 4 steps, and measures this CPU's fp32 matmul rate for the FLOP estimate.

    python scripts/coldstart_step_profile.py            # 2 threads (both cores; the run itself uses 1)
    python scripts/coldstart_step_profile.py 1 32       # 1 thread (cpu_threads='auto' for tiny models), 32 rows
"""
import cProfile, pstats, sys, time
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(threads: int = 2, n: int = 64):
    torch.set_num_threads(threads)
    from timer1_lib.train import TrainConfig
    from timer1_lib.model import load_model, load_processor
    from timer1_lib.coldstart import VideoSFTCollator, cot_rows
    from timer1_lib.data import load_annotations
    root = Path('artifacts/data/synthtvg-learn')
    cfg = TrainConfig.preset('cpu', out_dir='/tmp/coldstart_profile'); p = cfg.plan(); args = cfg.coldstart_config(p)
    model, proc = load_model(p.checkpoint), load_processor(p.checkpoint)
    rows = cot_rows(list(load_annotations(str(root / 'train.json')))[:n], think=p.think, video_root=str(root))
    col = VideoSFTCollator.from_config(proc, args)
    for q in model.model.visual.parameters(): q.requires_grad_(False)          # the default: frozen ViT
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-3)
    def step(b):
        model(**b).loss.backward(); opt.step(); opt.zero_grad()
    for rep in ('cold cache', 'warm cache'):
        t0 = time.perf_counter(); bs = [col(rows[i:i + 8]) for i in range(0, n, 8)]; t1 = time.perf_counter()
        for b in bs: step(b)
        t2 = time.perf_counter()
        print(f"{rep}: collate {(t1 - t0) / len(bs):.3f} s/batch, forward+backward+AdamW {(t2 - t1) / len(bs):.3f} "
              f"s/batch; input_ids {tuple(bs[0]['input_ids'].shape)}, "
              f"video patches {bs[0]['pixel_values_videos'].shape[0]}")
    pr = cProfile.Profile(); pr.enable()
    for b in bs[:4]: step(b)
    pr.disable(); pstats.Stats(pr).sort_stats('cumulative').print_stats(12)
    a, w = torch.randn(1600, 192), torch.randn(192, 576)
    for _ in range(3): a @ w
    t = time.perf_counter()
    for _ in range(20): a @ w
    print(f"fp32 matmul 1600x192x576: {2 * 1600 * 192 * 576 * 20 / (time.perf_counter() - t) / 1e9:.0f} GFLOP/s")


if __name__ == '__main__':
    main(*(int(x) for x in sys.argv[1:]))
