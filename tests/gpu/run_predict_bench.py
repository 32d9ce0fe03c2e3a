"""GPU proof: predict with a random Qwen2.5-VL-3B-shaped model (bf16, SDPA) on the bundled OHOFG.mp4 at Time-R1's
video budget; writes artifacts/bench/gpu_predict_3b.json (prompt tokens, peak memory, times).

Usage (repo root, on the GPU machine):  python tests/gpu/run_predict_bench.py [--max-new-tokens 1024] [--out PATH]
Smoke test anywhere (scaled-down model on CPU):  python tests/gpu/run_predict_bench.py --cpu-smoke
"""
import argparse, json, sys
from pathlib import Path

import torch
from timer1_lib.infer import gpu_predict_bench
from timer1_lib.video import VideoSamplingConfig

ROOT = Path(__file__).resolve().parents[2]

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', default=str(ROOT / 'artifacts/bench/gpu_predict_3b.json'))
    ap.add_argument('--max-new-tokens', type=int, default=1024)
    ap.add_argument('--attn', default='sdpa', help="attn_implementation: sdpa | flash_attention_2 | eager")
    ap.add_argument('--no-think', action='store_true', help='use the no-think prompt')
    ap.add_argument('--cpu-smoke', action='store_true', help='scaled-down model on CPU, real video budget, 4 tokens')
    a = ap.parse_args(argv)
    if a.cpu_smoke:
        res = gpu_predict_bench(None, device='cpu', dtype=torch.float32, max_new_tokens=4, attn_implementation=a.attn,
                                text=dict(num_hidden_layers=1, hidden_size=256, intermediate_size=512,
                                          num_attention_heads=2, num_key_value_heads=1),
                                vision=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2,
                                            out_hidden_size=256, fullatt_block_indexes=[1]))
    else:
        if not torch.cuda.is_available(): sys.exit('no CUDA device; use --cpu-smoke for a CPU dry run')
        res = gpu_predict_bench(a.out, max_new_tokens=a.max_new_tokens, attn_implementation=a.attn, think=not a.no_think)
    print(json.dumps({k: res[k] for k in ('device', 'prompt_tokens', 'video_tokens', 'new_tokens', 'peak_memory_gib',
                                          'model_memory_gib', 'times')}, indent=1))
    if not a.cpu_smoke: print(f'wrote {a.out}')

if __name__ == '__main__':
    main()
