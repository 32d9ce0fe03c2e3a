"""Model / inference checks outside the notebooks: the `gpu_predict` benchmark (CPU smoke run here through the bench
CLI, the real 3B run under `-m gpu` on a CUDA machine), and the rope-index fix under an old transformers copy."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_predict_bench_cpu_smoke(tmp_path):
    "`python -m timer1_lib.bench gpu_predict --cpu_smoke true` runs end to end (scaled-down model, real OHOFG decode)."
    r = subprocess.run([sys.executable, '-m', 'timer1_lib.bench', 'gpu_predict', '--cpu_smoke', 'true',
                        '--out_dir', str(tmp_path)],
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


def _rope_probe(out: str) -> None:
    """Temporal M-RoPE ids of a 500 s video (768-frame cap) and a 1.5 s clip in one batch, with the installed
    transformers: first from the plain transformers class ('raw'), then from `load_model` ('loaded'); JSON to `out`."""
    import tempfile, torch, transformers
    from transformers import Qwen2_5_VLForConditionalGeneration
    from timer1_lib.model import build_prompt, load_model, load_processor, make_tiny_model
    from timer1_lib.video import VideoClip, processor_video_kwargs, rope_time_error, video_temporal_ids
    transformers.logging.set_verbosity_error()
    def clip(secs, n, src=30.0):
        total = round(secs * src); idx = torch.linspace(0, total - 1, n).round().long().tolist()
        return VideoClip(frames=torch.zeros(n, 3, 56, 56, dtype=torch.uint8), timestamps=[i / src for i in idx],
                         fps=n / secs, duration=secs, source_fps=src, path='synthetic.mp4', frames_indices=idx,
                         total_num_frames=total, source_size=(56, 56))
    ckpt = make_tiny_model(Path(tempfile.mkdtemp()) / 'tiny'); proc = load_processor(ckpt)
    clips = [clip(500.0, 768), clip(1.5, 4)]
    ir = proc(text=[build_prompt(proc, 'a red square', think=False), build_prompt(proc, 'x', think=False)],
              padding=True, return_tensors='pt', **processor_video_kwargs(clips, proc))
    kw = {k: ir[k] for k in ('input_ids', 'mm_token_type_ids', 'video_grid_thw', 'second_per_grid_ts',
                             'attention_mask')}
    res = dict(version=transformers.__version__, fps=[c.fps for c in clips], spg=ir['second_per_grid_ts'].tolist())
    for name in ('raw', 'loaded'):   # 'raw' first: load_model patches the class for the whole process
        m = Qwen2_5_VLForConditionalGeneration.from_pretrained(ckpt) if name == 'raw' else load_model(ckpt)
        pos, deltas = m.model.get_rope_index(**kw)
        res[name] = dict(ids=[t.tolist() for t in video_temporal_ids(m, ir)], err=rope_time_error(m, ir, clips),
                         pos=pos.tolist(), deltas=deltas.tolist(), tps=m.config.vision_config.tokens_per_second)
    Path(out).write_text(json.dumps(res))


def _run_probe(tmp_path, name, pythonpath=None) -> dict:
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(p for p in (pythonpath, str(ROOT)) if p)}
    out = tmp_path / f'{name}.json'
    r = subprocess.run([sys.executable, __file__, str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(os.environ.get('TIMER1_OLD_TRANSFORMERS', '')),
                    reason=('set TIMER1_OLD_TRANSFORMERS to a folder holding transformers 5.3-5.17 '
                            '(+ huggingface_hub 1.x)'))
def test_rope_index_fix_on_old_transformers(tmp_path):
    """Under transformers 5.17 (the GPU machine's), the ids the plain model computes are truncated (116 s off at 500 s,
    one id for both patches of a 1.5 s clip) and `load_model`'s are the frame times, bit-identical to \
transformers 5.18+.
    Make the copy: `pip install --no-deps --target DIR transformers==5.17.0 huggingface_hub==1.33.0`."""
    old = _run_probe(tmp_path, 'old', os.environ['TIMER1_OLD_TRANSFORMERS'])
    from timer1_lib.model import rope_index_truncates
    assert rope_index_truncates(old['version']), old['version']
    raw, fixed = old['raw'], old['loaded']
    assert raw['ids'][1] == [0.0, 0.0] and raw['err'] > 100, (raw['ids'][1], raw['err'])      # the bug is there
    tps = fixed['tps']
    assert fixed['ids'][1] == [0.0, 1.0], fixed['ids'][1]                                    # floor(0.75 s * tps)
    assert fixed['ids'][0][-1] == int(383 * tps * 1000 / 768), fixed['ids'][0][-1]            # 498.7 s, not 383 s
    assert fixed['err'] < 1 / tps + 1 / old['fps'][0], fixed['err']
    new = _run_probe(tmp_path, 'new')
    if not rope_index_truncates(new['version']):                                              # installed = fixed code
        assert (fixed['pos'], fixed['deltas']) == (new['loaded']['pos'], new['loaded']['deltas'])
        assert new['raw']['pos'] == new['loaded']['pos']


if __name__ == '__main__':
    _rope_probe(sys.argv[1])
