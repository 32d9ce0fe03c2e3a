"""FSDP check of timer1's accelerate config: a Qwen2.5-VL model trains a few steps under `fsdp2.yaml`, and its whole
weights come back from the shards. Needs torch, transformers and accelerate only (no trl, datasets or videos).

    accelerate launch --config_file timer1_lib/assets/accelerate/fsdp2.yaml --num_processes 1 scripts/fsdp_check.py
    accelerate launch --config_file timer1_lib/assets/accelerate/fsdp2.yaml --num_processes 8 scripts/fsdp_check.py

`--model 3b` (default on a GPU): the random Qwen2.5-VL-3B-shaped model of `timer1_lib.model.qwen_3b_config`, bf16;
`--model tiny`: the tiny `test` model (fp32). On a CPU accelerate runs DDP whatever the config says (FSDP is a GPU
feature there): the script then checks only its own logic. A few
AdamW steps on random token sequences (text only, so the vision side is frozen), then the full state
dict is gathered and compared with the sharded parameters. Prints one JSON line (loss per step, peak GPU memory,
seconds a step, parameters that moved); `--out FILE` also writes it. Exit status 1 when a check fails."""
import argparse, json, os, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--model', choices=['3b', 'tiny'], default=None)
    ap.add_argument('--steps', type=int, default=3)
    ap.add_argument('--seq', type=int, default=512)
    ap.add_argument('--batch', type=int, default=1)
    ap.add_argument('--out', default='')
    a = ap.parse_args()
    import torch
    from accelerate import Accelerator
    from timer1_lib.model import make_random_model, make_tiny_model, qwen_3b_config, load_model
    acc = Accelerator(cpu=not torch.cuda.is_available())   # a CPU-only machine: gloo
    kind = a.model or ('3b' if torch.cuda.is_available() else 'tiny')
    scratch = Path(os.environ.get('SCRATCH', '/tmp/timer1_fsdp_check')) / kind
    if acc.is_main_process and not (scratch / 'config.json').is_file():
        if kind == '3b': make_random_model(qwen_3b_config(), scratch)
        else: make_tiny_model(scratch, size='test')
    acc.wait_for_everyone()
    dtype = torch.bfloat16 if kind == '3b' else torch.float32
    model = load_model(scratch, dtype=dtype)
    for n, p in model.named_parameters():
        if '.visual.' in f'.{n}': p.requires_grad_(False)          # text-only batches: the whole vision side frozen
    before = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.gradient_checkpointing_enable() if kind == '3b' else None
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model, opt = acc.prepare(model, opt)
    vocab = acc.unwrap_model(model).config.get_text_config().vocab_size
    g = torch.Generator().manual_seed(acc.process_index)
    losses, t0 = [], time.perf_counter()
    for _ in range(a.steps):
        ids = torch.randint(0, min(vocab, 32000), (a.batch, a.seq), generator=g).to(acc.device)
        out = model(input_ids=ids, labels=ids)
        acc.backward(out.loss); opt.step(); opt.zero_grad()
        losses.append(float(acc.reduce(out.loss.detach(), 'mean')))
    secs = (time.perf_counter() - t0) / a.steps
    full = acc.get_state_dict(model)                       # FULL_STATE_DICT: gathered from the shards
    ok, moved = True, 0
    if acc.is_main_process:
        unwrapped = acc.unwrap_model(model)
        names = [n for n, p in unwrapped.named_parameters() if p.requires_grad]
        missing = [n for n in names if n not in full]
        moved = sum(int(not torch.equal(full[n].float().cpu(), before[n])) for n in names if n in full and n in before)
        frozen_same = all(torch.equal(full[n].float().cpu(), p.detach().float().cpu()) for n, p in
                          [(n, p) for n, p in load_model(scratch, dtype=dtype).named_parameters() if '.visual.' in
                           f'.{n}' and 'merger' not in n][:3])
        ok = not missing and moved > 0 and frozen_same and all(map(lambda x: x == x, losses))
        rec = dict(ok=ok, model=kind, processes=acc.num_processes, distributed_type=str(acc.distributed_type),
                   fsdp_version=getattr(getattr(acc.state, '__dict__', {}).get('fsdp_plugin'), 'fsdp_version', None),
                   dtype=str(dtype), steps=a.steps, seq=a.seq, batch=a.batch, losses=losses, seconds_per_step=secs,
                   trainable_tensors=len(names), moved_tensors=moved, missing_in_full_state_dict=missing[:5],
                   frozen_vision_unchanged=frozen_same,
                   peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
                   device=torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu',
                   torch=torch.__version__, transformers=__import__('transformers').__version__,
                   accelerate=__import__('accelerate').__version__)
        print(json.dumps(rec), flush=True)
        if a.out: Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(json.dumps(rec) + '\n')
    acc.wait_for_everyone()
    acc.end_training()
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
