"""Cold-start SFT of the tiny Qwen2.5-VL on SynthTVG tiny (CPU, about half a minute): the collator trains on the
target only, a few steps lower the loss on the trained items, a short overfit makes greedy generations well-formed
and correct, bad CoT files fail with the file and record named. The fast checks live in nbs/13_coldstart.ipynb."""
import json

import pytest
import torch

from timer1_lib.coldstart import (ColdStartConfig, VideoSFTCollator, cold_start, cot_loss, cot_rows, cot_target,
                                  load_cot_examples, write_cot_examples)
from timer1_lib.data import AnnotationError
from timer1_lib.infer import predict
from timer1_lib.model import load_model, load_processor, make_tiny_model
from timer1_lib.rewards import REWARDS, parse_answer
from timer1_lib.synth import SynthConfig, generate


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    torch.set_num_threads(1)   # 2 cores shared with other jobs: one thread is faster and steadier than two
    root = tmp_path_factory.mktemp('coldstart')
    ckpt = make_tiny_model(root / 'tiny', size='test')
    items = list(generate(SynthConfig.tiny(n_videos=4, test_frac=0.0), root / 'synth').items('train'))
    return root, ckpt, items


def _cfg(root, name, **kw):
    base = dict(output_dir=str(root / name), report_to='none', video_frame_size=[56, 56], video_cache='none',
                per_device_train_batch_size=2, learning_rate=1e-3, logging_steps=1, save_strategy='no',
                gradient_checkpointing=False, disable_tqdm=True, seed=0)
    return ColdStartConfig(**{**base, **kw})


def test_collator_trains_on_the_target_only(setup):
    "Labels are -100 everywhere but the assistant target + EOS, on rows of different lengths (padding)."
    root, ckpt, items = setup
    proc = load_processor(ckpt)
    rows = cot_rows(items[:4])
    batch = VideoSFTCollator.from_config(proc, _cfg(root, 'coll'))(rows)
    lens = batch['attention_mask'].sum(-1)
    assert len(set(lens.tolist())) > 1, 'want rows of different lengths'
    tok = proc.tokenizer
    for j, r in enumerate(rows):
        keep = batch['labels'][j] != -100
        assert tok.decode(batch['input_ids'][j][keep]) == r['target'] + tok.eos_token
        assert torch.equal(batch['labels'][j][keep], batch['input_ids'][j][keep])
        assert not keep[int(lens[j]):].any() and keep[int(lens[j]) - 1]      # padding masked, EOS learned
    assert torch.equal(batch['mm_token_type_ids'] == 2, batch['input_ids'] == load_model(ckpt).config.video_token_id)


def test_sft_steps_lower_the_loss(setup):
    "8 SFT steps on 4 SynthTVG items lower their target NLL (full-logit measurement before / after)."
    root, ckpt, items = setup
    proc, model = load_processor(ckpt), load_model(ckpt)
    cfg = _cfg(root, 'few', max_steps=8)
    before = cot_loss(model, proc, items[:4], cfg)
    model = cold_start(model, proc, items[:4], cfg, root / 'few_out')
    after = cot_loss(model, proc, items[:4], cfg)
    assert after < before - 0.5, (before, after)
    steps = [h for h in json.loads((root / 'few_out' / 'cold_start.json').read_text())['log_history'] if 'loss' in h]
    assert len(steps) == 8 and steps[-1]['loss'] < steps[0]['loss']
    # GRPO builds its KL reference from config._name_or_path: it must name the cold-started weights now
    assert model.config._name_or_path == str(root / 'few_out')


def test_overfit_two_items_gives_the_format_and_the_answer(setup):
    "Overfitting 2 items (from a checkpoint path): greedy decoding writes the format and the exact ground truth."
    root, ckpt, items = setup
    two = [items[2], items[4]]
    cfg = _cfg(root, 'overfit', max_steps=70, learning_rate=2e-3, lr_scheduler_type='constant', logging_steps=10)
    model = cold_start(str(ckpt), None, two, cfg, root / 'overfit_out')
    proc = load_processor(root / 'overfit_out')                             # saved with the model
    recs = predict(model, proc, two, batch_size=2, max_new_tokens=160, video_config=cfg.video_sampling(), cache=False,
                   progress=False)
    texts = [r['text'] for r in recs]
    assert REWARDS['format'](texts) == [1.0, 1.0], texts
    assert [parse_answer(t) for t in texts] == [it.segment for it in two], texts
    assert texts == [cot_target(it) for it in two]


def test_bad_cot_file_names_file_and_record(setup, tmp_path):
    root, ckpt, items = setup
    good = json.loads(write_cot_examples(items[:2], tmp_path / 'good.json').read_text())
    assert [it.meta['cot'] for it in load_cot_examples(tmp_path / 'good.json')] == [r['cot'] for r in good]
    s, e = good[1]['timestamp']
    cases = {
        'nocot.json': ([good[0], {k: v for k, v in good[1].items() if k != 'cot'}],
                       "record 1 (id {!r}): missing field 'cot'"),
        'contra.json': ([good[0], good[1] | {'cot': f'<think>x</think> <answer>{s + 3} to {e + 3}</answer>'}],
                        'record 1 (id {!r}): field \'cot\': its answer'),
        'units.json': ([good[0], good[1] | {'cot': 'it starts at 1200 to 3400 ms'}],
                       'record 1 (id {!r}): field \'cot\': time span'),
    }
    for name, (recs, want) in cases.items():
        p = tmp_path / name
        p.write_text(json.dumps(recs))
        with pytest.raises(AnnotationError) as ei: load_cot_examples(p)
        msg = str(ei.value)
        assert str(p) in msg and want.format(good[1]['qid']) in msg, msg
    with pytest.raises(FileNotFoundError, match='CoT file not found'): load_cot_examples(tmp_path / 'missing.json')
