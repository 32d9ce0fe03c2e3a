"""End-to-end GRPO runs of the tiny Qwen2.5-VL on toy videos (CPU, about a minute): the video reaches every forward,
vision tokens are never sampled, the logs are written. The fast checks live in nbs/11_grpo.ipynb."""
import json

import pytest
import torch
from transformers import TrainerCallback

from timer1_lib.data import GroundingItem
from timer1_lib.grpo import TimeR1Config, TimeR1Trainer, grounding_dataset, toy_grounding_items
from timer1_lib.model import make_tiny_model, vision_token_ids

@pytest.fixture(scope='module')
def setup(tmp_path_factory, toy_reward):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp('grpo')
    ckpt = make_tiny_model(root / 'tiny', size='test')
    items = toy_grounding_items(root / 'videos', n=3)
    # a clipped item: source seconds 1..5 of a 6 s video, ground truth relative to the clip start
    items.append(GroundingItem(id='clipped', video=items[2].video, duration=4.0, query='the red ball moves',
                               segment=(0.5, 2.0), clip=(1.0, 5.0)))
    return root, ckpt, items, toy_reward


def _args(root, name, reward, **kw):
    base = dict(output_dir=str(root / name), report_to='none', per_device_train_batch_size=4, num_generations=2,
                max_completion_length=16, learning_rate=3e-4, logging_steps=1, save_strategy='no',
                gradient_checkpointing=False, video_fps=2.0, video_frame_size=[56, 56], video_cache='none',
                reward_funcs=['tiou', 'format', reward], seed=0)
    return TimeR1Config(**{**base, **kw})


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _moved(before, model):
    return [k for k, v in model.named_parameters() if not torch.equal(before[k], v)]


def _jsonl(path):
    return [json.loads(line) for line in open(path)]


def test_kl_dapo_grad_accum_checkpointing(setup):
    "beta > 0 (reference model), token-level loss, G=4, 2 micro-steps per generation, gradient checkpointing on."
    root, ckpt, items, toy = setup
    args = _args(root, 'kl', toy, beta=0.04, loss_type='dapo', num_generations=4, gradient_accumulation_steps=2,
                 gradient_checkpointing=True, max_steps=2, log_samples=4)
    tr = TimeR1Trainer(str(ckpt), args, train_dataset=grounding_dataset(items))
    assert tr.ref_model is not None and args.steps_per_generation == 2
    before = _snapshot(tr.model)
    tr.train()
    moved = _moved(before, tr.model)
    assert any('language_model' in k for k in moved)
    assert not any('visual' in k and 'merger' not in k for k in moved), 'frozen ViT changed'
    m = [r for r in _jsonl(root / 'kl' / 'metrics.jsonl') if 'loss' in r]
    assert [r['step'] for r in m] == [1, 2]
    for key in ('kl', 'rewards/tiou/mean', 'rewards/tiou/std', 'rewards/format/mean', 'rewards/format/std',
                'completions/mean_length', 'frac_reward_zero_std', 'reward', 'reward_std', 'entropy'):
        assert all(r.get(key) is not None for r in m), key
    assert all(r['completions/mean_length'] <= 16 for r in m)
    c = _jsonl(root / 'kl' / 'completions.jsonl')
    assert 0 < len(c) <= 2 * 4 and all(len({r['id'] for r in c if r['group'] == g and r['step'] == s}) == 1
                                      for s in (1, 2) for g in {r['group'] for r in c})
    cfg = json.loads((root / 'kl' / 'run_config.json').read_text())
    assert cfg['reward_func_names'] == ['tiou', 'format', 'toy_length_reward'] and cfg['beta'] == 0.04
    vis = set(vision_token_ids(tr.processing_class))
    for b in tr._buffered_inputs:
        ids = b['completion_ids'][b['completion_mask'].bool()]
        assert not vis & set(ids.tolist())


def test_unfrozen_vit_learns_and_eval(setup):
    "With the ViT trainable its weights move: the policy-loss forward carries the video, with gradient. Eval runs too."
    root, ckpt, items, toy = setup
    args = _args(root, 'vit', toy, beta=0.0, loss_type='grpo', freeze_vision=False, max_steps=1,
                 per_device_eval_batch_size=4, eval_strategy='no')
    tr = TimeR1Trainer(str(ckpt), args, train_dataset=grounding_dataset(items),
                       eval_dataset=grounding_dataset(items[:2]))
    clipped = next(r for r in tr.train_dataset if r['id'] == 'clipped')
    clip = tr._load_clips([clipped])[0]
    assert clip.nframes == 8 and clip.duration == pytest.approx(4.0)   # the 1..5 s window at 2 fps
    before = _snapshot(tr.model)
    tr.train()
    moved = _moved(before, tr.model)
    assert any('visual' in k and 'merger' not in k for k in moved), 'the ViT got no gradient'
    ev = tr.evaluate()
    assert 'eval_reward' in ev and 'eval_rewards/tiou/mean' in ev
    modes = {r['mode'] for r in _jsonl(root / 'vit' / 'metrics.jsonl')}
    assert modes == {'train', 'eval'}


def test_vision_tokens_are_never_sampled(setup):
    "A model that wants to emit <|video_pad|> still trains (the token is suppressed); unsuppressed, it fails clearly."
    root, ckpt, items, toy = setup
    tr = TimeR1Trainer(str(ckpt), _args(root, 'sup', toy, beta=0.0, max_steps=1),
                       train_dataset=grounding_dataset(items))
    vid = tr.processing_class.tokenizer.convert_tokens_to_ids('<|video_pad|>')

    def push(module, inputs, out):   # make <|video_pad|> the most likely next token at every sampling step
        out = out.clone()
        out[..., vid] += 1e4
        return out

    h = tr.model.lm_head.register_forward_hook(push)
    try:
        tr.train()
        for b in tr._buffered_inputs:
            assert vid not in b['completion_ids'][b['completion_mask'].bool()].tolist()
        # now let generation sample it: the loss forward must stop with a clear message, not deep inside the model
        tr.generation_config.suppress_tokens = None
        tr.generation_kwargs = {k: v for k, v in tr.generation_kwargs.items() if k != 'suppress_tokens'}
        tr.args.max_steps = 2
        with pytest.raises(RuntimeError, match=r'<\|video_pad\|> tokens but .* video features'):
            tr.train()
    finally:
        h.remove()


class AtTrainBegin(TrainerCallback):
    "Records the step and the weights the Trainer starts from (after it loaded a checkpoint)."
    def on_train_begin(self, args, state, control, model=None, **kw):
        self.step, self.weights = state.global_step, {k: v.detach().clone() for k, v in model.named_parameters()}


def test_resume_loads_checkpoint_weights(setup):
    "A plain TimeR1Trainer resumed from its step-2 checkpoint starts from the saved weights, not the initial ones."
    root, ckpt, items, toy = setup
    kw = dict(beta=0.0, max_steps=2, save_strategy='steps', save_steps=2)
    tr = TimeR1Trainer(str(ckpt), _args(root, 'resume', toy, **kw), train_dataset=grounding_dataset(items))
    tr.train()
    saved = _snapshot(tr.model)
    assert (root / 'resume' / 'checkpoint-2' / 'model.safetensors').is_file()
    begin = AtTrainBegin()   # max_steps = the saved step: the resumed run loads the checkpoint and trains nothing
    tr2 = TimeR1Trainer(str(ckpt), _args(root, 'resume', toy, **kw), train_dataset=grounding_dataset(items),
                        callbacks=[begin])
    initial = _snapshot(tr2.model)
    tr2.train(resume_from_checkpoint=str(root / 'resume' / 'checkpoint-2'))
    assert begin.step == 2
    assert all(torch.equal(begin.weights[k], v) for k, v in saved.items())      # the checkpoint's weights ...
    assert any(not torch.equal(initial[k], v) for k, v in saved.items())       # ... which are not the initial ones
