"""TimeRFT curriculum end to end on the tiny Qwen2.5-VL and toy clips (CPU, ~1 min): items dropped per epoch inside
one run, a run killed after a checkpoint and resumed (at an epoch boundary, mid-epoch, and at an epoch's last step),
all items dropped. The fast checks live in nbs/10_curriculum.ipynb."""
import json

import pytest
import torch
from transformers import TrainerCallback

from timer1_lib.curriculum import STATE_FILE, CurriculumCallback, CurriculumState, CurriculumTrainer
from timer1_lib.grpo import TimeR1Config, toy_grounding_items
from timer1_lib.model import load_model, make_tiny_model
EASY = ('toy0', 'toy1')   # the stub scorer calls these solved (IoU 1.0) at the end of epoch 1


class Kill(Exception):
    "Stands for the process dying: raised inside on_save, so no later callback or cleanup runs."


class KillAfterSave(TrainerCallback):
    def __init__(self, step):
        self.step, self.weights = step, None

    def on_save(self, args, state, control, model=None, **kw):
        if state.global_step == self.step:
            self.weights = {k: v.detach().clone() for k, v in model.named_parameters()}
            raise Kill(state.global_step)


class AtTrainBegin(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kw):
        self.step = state.global_step
        self.weights = {k: v.detach().clone() for k, v in model.named_parameters()}


def stub_score(model, processor, items, **kw):
    return [100.0 if it.id in EASY else 10.0 for it in items]


@pytest.fixture(scope='module')
def setup(tmp_path_factory, toy_reward):
    torch.set_num_threads(1)   # 2 OpenMP threads on the shared 2-core box are ~25x slower for this tiny model
    root = tmp_path_factory.mktemp('curriculum')
    ckpt = make_tiny_model(root / 'tiny', size='test')
    return root, ckpt, toy_grounding_items(root / 'videos', n=6), toy_reward


def _args(root, name, reward, **kw):
    base = dict(output_dir=str(root / name), report_to='none', per_device_train_batch_size=4, num_generations=2,
                max_completion_length=8, learning_rate=3e-4, logging_steps=1, save_strategy='epoch', beta=0.0,
                video_fps=2.0, video_frame_size=[56, 56], video_cache='none', num_train_epochs=2, seed=0,
                reward_funcs=['tiou', 'format', reward], log_samples=16)
    return TimeR1Config(**{**base, **kw})


def _trainer(setup, name, callbacks=(), score_fn=stub_score, **kw):
    root, ckpt, items, toy = setup
    cb = CurriculumCallback(items, drop_iou=0.7, score_fn=score_fn, verbose=False)
    return CurriculumTrainer(str(ckpt), _args(root, name, toy, **kw), items, curriculum=cb, callbacks=list(callbacks))


def _trained_ids(root, name):
    "step -> the prompt ids of that step's generation batch, from completions.jsonl (G copies collapsed)."
    out = {}
    for line in open(root / name / 'completions.jsonl'):
        r = json.loads(line)
        out.setdefault(r['step'], [])
        if r['id'] not in out[r['step']]: out[r['step']].append(r['id'])
    return out


def _kill_and_resume(setup, name, kill_step, **kw):
    killer = KillAfterSave(kill_step)
    with pytest.raises(Kill):
        _trainer(setup, name, callbacks=[killer], **kw).train()
    begin = AtTrainBegin()
    tr = _trainer(setup, name, callbacks=[begin], **kw)
    tr.train(resume_from_checkpoint=True)
    return killer, begin, tr


@pytest.fixture(scope='module')
def reference(setup):
    "An uninterrupted 2-epoch run (3 + 2 steps): epoch 1 over 6 items, toy0/toy1 dropped, epoch 2 over 4."
    root = setup[0]
    tr = _trainer(setup, 'ref')
    tr.train()
    return tr, _trained_ids(root, 'ref')


def test_filtering_inside_one_run(setup, reference):
    root = setup[0]
    tr, ids = reference
    st = tr.curriculum.state
    assert tr.state.global_step == 3 + 2
    assert st.remaining == ['toy2', 'toy3', 'toy4', 'toy5'] and st.dropped == [{'toy0': 1.0, 'toy1': 1.0}, {}]
    assert ([(h['epoch'], h['n_before'], h['n_dropped'], h['n_remaining']) for h in st.history]
            == [(1, 6, 2, 4), (2, 4, 0, 4)])
    assert sorted(i for s in (1, 2, 3) for i in ids[s]) == [f'toy{i}' for i in range(6)]   # epoch 1: every item once
    assert sorted(i for s in (4, 5) for i in ids[s]) == st.remaining                        # epoch 2: only the rest
    saved = {p.name: CurriculumState.load(p / STATE_FILE) for p in (root / 'ref').glob('checkpoint-*')}
    assert saved['checkpoint-3'].remaining == st.remaining and saved['checkpoint-3'].epoch == 1
    assert saved['checkpoint-5'] == st
    assert CurriculumState.load(root / 'ref') == st
    logs = [json.loads(line) for line in open(root / 'ref' / 'curriculum.jsonl')]
    assert [r['n_dropped'] for r in logs] == [2, 0]
    m = [json.loads(line) for line in open(root / 'ref' / 'metrics.jsonl')]
    assert [(r['step'], r['curriculum/n_dropped'], r['curriculum/n_remaining'])
            for r in m if 'curriculum/epoch' in r][0] == (4, 2, 4)


def test_resume_at_epoch_checkpoint(setup, reference):
    "Killed right after epoch 1's checkpoint; a fresh trainer resumes with the saved pool, weights and step."
    root, ckpt = setup[:2]
    killer, begin, tr = _kill_and_resume(setup, 'epoch', kill_step=3)
    saved = CurriculumState.load(root / 'epoch' / 'checkpoint-3' / STATE_FILE)
    assert saved.remaining == ['toy2', 'toy3', 'toy4', 'toy5'] and saved.epoch == 1 and saved.epoch_start_step == 3
    assert begin.step == 3                                        # continues from the checkpoint's global step
    assert all(torch.equal(killer.weights[k], begin.weights[k]) for k in killer.weights)   # with its weights
    initial = dict(load_model(ckpt).named_parameters())           # ... which are not the initial ones
    assert any(not torch.equal(initial[k], v) for k, v in begin.weights.items())
    st = tr.curriculum.state
    assert tr.state.global_step == 5 and st.remaining == saved.remaining and st.epoch == 2
    ids = _trained_ids(root, 'epoch')
    assert {i for s in (4, 5) for i in ids[s]} == set(saved.remaining)
    assert ids == reference[1]                                     # the same batches as the uninterrupted run


def test_resume_mid_epoch(setup, reference):
    ("Checkpoint every step, killed after step 2 of epoch 1: the resumed run trains only epoch 1's third batch, "
     "then epoch 2.")
    root = setup[0]
    killer, begin, tr = _kill_and_resume(setup, 'mid', kill_step=2, save_strategy='steps', save_steps=1)
    assert begin.step == 2
    assert CurriculumState.load(root / 'mid' / 'checkpoint-2' / STATE_FILE).remaining == [f'toy{i}' for i in range(6)]
    assert all(torch.equal(killer.weights[k], begin.weights[k]) for k in killer.weights)
    assert tr.state.global_step == 5
    assert tr.curriculum.state.remaining == reference[0].curriculum.state.remaining
    assert _trained_ids(root, 'mid') == reference[1]               # no batch repeated or skipped
    m = [json.loads(line) for line in open(root / 'mid' / 'metrics.jsonl')]
    assert [r['epoch'] for r in m if 'loss' in r] == pytest.approx([1 / 3, 2 / 3, 1, 1.5, 2])


def test_resume_at_last_step_of_epoch(setup, reference):
    "A step checkpoint at an epoch's last step is written before the epoch-end filtering; the resumed run does it."
    root = setup[0]
    _, begin, tr = _kill_and_resume(setup, 'last', kill_step=3, save_strategy='steps', save_steps=1)
    assert begin.step == 3 and CurriculumState.load(root / 'last' / 'checkpoint-3' / STATE_FILE).epoch == 0
    st = tr.curriculum.state
    assert tr.state.global_step == 5 and st.epoch == 2 and st.dropped[0] == {'toy0': 1.0, 'toy1': 1.0}
    assert _trained_ids(root, 'last') == reference[1]


def test_grad_accumulation_resume(setup):
    "2 micro-batches per optimizer step (steps_per_generation = 2): 6 items = 3 generation batches of 2 prompts."
    root = setup[0]
    kw = dict(per_device_train_batch_size=2, gradient_accumulation_steps=2, save_strategy='steps', save_steps=1)
    ref = _trainer(setup, 'ga-ref', **kw)
    ref.train()
    assert ref.state.global_step == 3 + 2 and ref.steps_per_epoch(6) == 3
    _, begin, tr = _kill_and_resume(setup, 'ga', kill_step=4, **kw)
    assert begin.step == 4 and tr.state.global_step == 5
    a, b = tr.curriculum.state, ref.curriculum.state
    assert ((a.remaining, a.dropped, a.epoch, a.epoch_start_step)
            == (b.remaining, b.dropped, b.epoch, b.epoch_start_step))
    assert _trained_ids(root, 'ga') == _trained_ids(root, 'ga-ref')


def test_every_item_dropped_stops(setup, capsys):
    root = setup[0]
    tr = _trainer(setup, 'all', score_fn=lambda m, p, items, **kw: [95.0] * len(items), num_train_epochs=3)
    tr.curriculum.verbose = True
    tr.train()
    st = tr.curriculum.state
    assert tr.state.global_step == 3 and st.epoch == 1 and st.remaining == [] and len(st.dropped[0]) == 6
    assert 'every item was dropped after epoch 1' in st.stopped
    assert 'every item was dropped' in capsys.readouterr().out
    assert CurriculumState.load(root / 'all').stopped == st.stopped


def test_too_few_left_stops(setup):
    "One item left < one generation batch (2 prompts): stop instead of running empty epochs."
    tr = _trainer(setup, 'few', score_fn=lambda m, p, items, **kw: [100.0 * (it.id != 'toy5') for it in items],
                  num_train_epochs=3)
    tr.train()
    st = tr.curriculum.state
    assert tr.state.global_step == 3 and st.remaining == ['toy5'] and 'fewer than one generation batch' in st.stopped


def test_resume_refuses_foreign_pool(setup):
    "A checkpoint whose remaining ids are not in train_items is refused with the file named."
    root = setup[0]
    (root / 'foreign').mkdir(exist_ok=True)
    CurriculumState(['toy0', 'toy9'], epoch=1, epoch_start_step=3).save(root / 'foreign' / STATE_FILE)
    (root / 'foreign' / 'trainer_state.json').write_text(json.dumps({'global_step': 3}))
    with pytest.raises(ValueError, match=r"foreign.*not in train_items"):
        _trainer(setup, 'foreign-run').train(resume_from_checkpoint=str(root / 'foreign'))
