"""Model / inference checks outside the notebooks: the GPU benchmark script (CPU smoke run here, the real 3B run
under `-m gpu` on a CUDA machine)."""
import json, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_predict_bench_script_cpu_smoke():
    "tests/gpu/run_predict_bench.py runs end to end (scaled-down random model, real OHOFG decode at Time-R1's budget)."
    r = subprocess.run([sys.executable, str(ROOT / 'tests/gpu/run_predict_bench.py'), '--cpu-smoke'], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout[r.stdout.index('{'):r.stdout.rindex('}') + 1])
    assert res['video_tokens'] > 3000 and res['prompt_tokens'] > res['video_tokens'], res   # 3584-token budget
    assert res['new_tokens'] == 4


@pytest.mark.gpu
def test_gpu_predict_bench_3b(tmp_path):
    "Qwen2.5-VL-3B-shaped random model, bf16 + SDPA, on OHOFG.mp4: fits comfortably and writes the JSON."
    from timer1_lib.infer import gpu_predict_bench
    out = tmp_path / 'gpu_predict_3b.json'
    res = gpu_predict_bench(out, max_new_tokens=64, work_dir=tmp_path / 'work')
    assert json.loads(out.read_text())['prompt_tokens'] == res['prompt_tokens'] > 3000
    assert 3.6e9 < res['model']['params'] < 3.9e9
    assert res['peak_memory_gib'] < 40, res['peak_memory_gib']
