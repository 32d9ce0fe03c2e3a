"""Model / inference checks outside the notebooks: the `gpu_predict` benchmark (CPU smoke run here through the bench
CLI, the real 3B run under `-m gpu` on a CUDA machine)."""
import json, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_predict_bench_cpu_smoke(tmp_path):
    "`python -m timer1_lib.bench gpu_predict --cpu_smoke true` runs end to end (scaled-down model, real OHOFG decode)."
    r = subprocess.run([sys.executable, '-m', 'timer1_lib.bench', 'gpu_predict', '--cpu_smoke', 'true', '--out_dir', str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / 'cpu_smoke.json').read_text())
    assert res['command'].startswith('python -m timer1_lib.bench gpu_predict --cpu_smoke true'), res['command']
    assert res['video_tokens'] > 3000 and res['prompt_tokens'] > res['video_tokens'], res   # 3584-token budget
    assert res['new_tokens'] == 4


@pytest.mark.gpu
def test_gpu_predict_bench_3b(tmp_path):
    "Qwen2.5-VL-3B-shaped random model, bf16 + SDPA, on OHOFG.mp4: fits comfortably and writes the JSON."
    from timer1_lib.bench import gpu_predict
    res = gpu_predict(max_new_tokens=64, out_dir=str(tmp_path))
    assert json.loads((tmp_path / 'gpu_predict.json').read_text())['prompt_tokens'] == res['prompt_tokens'] > 3000
    assert 3.6e9 < res['model']['params'] < 3.9e9
    assert res['peak_memory_gib'] < 40, res['peak_memory_gib']
