"""`python -m timer1_lib.train` with fixed rollouts, for the multi-process equality checks of `tests/test_scale.py`.

Usage (one process, or under `accelerate launch`; the arguments after `--` go to `timer1_lib.train`):

    python tests/scale_harness.py --dump DIR [--pause_at_step K] -- --preset smoke --model_path ... --out_dir ...

Sampled rollouts differ with the number of processes (each process has its own random stream), so a loss computed by
two processes could never be compared with one. Here every completion is a fixed function of its prompt and its
index in the prompt's group (`fixed_completions`), the same whichever process rolls it out; everything after the
rollout is the real code: rewards, group advantages (TRL gathers the rewards of all processes), KL, the loss and its
normalisation, DDP's gradient all-reduce, the optimizer, the curriculum's sharded re-scoring and its broadcast
decision, checkpoints and the evaluations. Each rank then writes `DIR/rank<r>.json` (its curriculum state, log
history, TaRO schedule state), `DIR/rank<r>.pt` (its trained weights) and `DIR/rank<r>_start.pt` (GRPO's
starting weights). `--pause_at_step K` makes every rank write its pid to `DIR/paused<rank>` and sleep after
optimizer step K, so that a test can kill the run at a known place."""
import argparse, json, os, random, sys, time, zlib
from pathlib import Path


def fixed_completions(self, prompt_ids, images, multimodal_fields, num_generations, *a, **kw):
    "Stands in for TRL's `_generate_single_turn`: completion = f(prompt tokens, index within the group)."
    tok = self.processing_class.tokenizer
    eos = self.eos_token_ids[0] if getattr(self, 'eos_token_ids', None) else tok.eos_token_id
    out = []
    for i, ids in enumerate(prompt_ids):
        r = random.Random(zlib.crc32(json.dumps([int(t) for t in ids]).encode()) * 131 + i % num_generations)
        s = round(r.uniform(0, 8), 1)
        e = round(s + r.uniform(0.5, 6), 1)
        text = f"<answer>{s} to {e}</answer>" if r.random() < 0.75 else f"from {s} to {e}"
        out.append(tok.encode(text, add_special_tokens=False) + [eos])
    return out, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--dump', required=True)
    ap.add_argument('--pause_at_step', type=int, default=0)
    ap.add_argument('--sampled', action='store_true', help='keep real sampling (no fixed completions)')
    args, rest = ap.parse_known_args()
    train_argv = rest[1:] if rest[:1] == ['--'] else rest
    import timer1_lib.train as T          # first: it pins the CPU kernels before torch loads
    import torch
    from trl import GRPOTrainer
    from transformers import TrainerCallback
    from timer1_lib.core import rank_world
    from timer1_lib.grpo import TimeR1Trainer
    if not args.sampled:   # TRL's and timer1's own generation entry points (TaroTrainer's prefix path calls them)
        GRPOTrainer._generate_single_turn = TimeR1Trainer._generate_single_turn = fixed_completions
    dump = Path(args.dump); dump.mkdir(parents=True, exist_ok=True)

    class Pause(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            if args.pause_at_step and state.global_step == args.pause_at_step:   # paused<rank> holds this pid
                (dump / f'paused{rank_world()[0]}').write_text(str(os.getpid())); time.sleep(600)

    seen = {}
    orig_grpo = T.TrainingRun.grpo

    def grpo(self, items):
        from timer1_lib.curriculum import CurriculumTrainer
        init = CurriculumTrainer.__init__

        def init_with_pause(tr, *a, **kw):
            init(tr, *a, **kw); tr.add_callback(Pause()); seen['trainer'] = tr
            seen['start'] = {k: v.detach().cpu().clone() for k, v in tr.model.state_dict().items()}
        CurriculumTrainer.__init__ = init_with_pause
        try: return orig_grpo(self, items)
        finally: CurriculumTrainer.__init__ = init
    T.TrainingRun.grpo = grpo
    res = T.main(train_argv)
    rank, world = rank_world()
    tr = seen.get('trainer')
    rec = dict(rank=rank, world=world, metrics=res.record.get('metrics'), grpo=res.record.get('grpo'))
    if tr is not None:
        from dataclasses import asdict
        rec.update(curriculum=asdict(tr.curriculum.state), log_history=tr.state.log_history,
                   taro_state=tr.taro_state() if hasattr(tr, 'taro_state') else None)
        model = tr.accelerator.unwrap_model(tr.model)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, dump / f'rank{rank}.pt')
        torch.save(seen['start'], dump / f'rank{rank}_start.pt')          # GRPO's starting weights
    (dump / f'rank{rank}.json').write_text(json.dumps(rec, default=str, indent=1))


if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
