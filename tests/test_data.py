"""Fast checks of the offline data sets and the synthetic keyword task."""
import pytest
import torch

from lrp_utils import data


def test_rotten_tomatoes_splits_sizes_disjoint_deterministic():
    splits = {s: data.rotten_tomatoes(s) for s in data.SPLITS}
    assert {s: len(v) for s, v in splits.items()} == {"train": 6824, "validation": 853, "test": 853}
    texts = [set(t for t, _ in v) for v in splits.values()]
    assert sum(len(t) for t in texts) == len(set().union(*texts)) == 8530  # disjoint, no duplicates
    assert data.rotten_tomatoes("test") == splits["test"]
    assert data.rotten_tomatoes("test", seed=1) != splits["test"]
    labels = [y for _, y in splits["train"]]
    assert set(labels) == {0, 1} and 0.45 < sum(labels) / len(labels) < 0.55
    assert all(isinstance(t, str) and t for t, _ in splits["validation"])


def test_imdb_subsample_and_truncation():
    full = data.imdb("validation")
    assert len(full) == 2500 and all("<br" not in t for t, _ in full[:200])
    short = data.imdb("validation", n=5, max_chars=100)
    assert len(short) == 5 and all(len(t) <= 100 for t, _ in short)
    assert [y for _, y in short] == [y for _, y in full[:5]]
    train_head = {t for t, _ in data.imdb("train", n=300)}
    assert not train_head & {t for t, _ in full}


def test_natural_sentences():
    rt = data.natural_sentences(20, seed=0)
    assert len(rt) == 20 and rt == data.natural_sentences(20, seed=0)
    assert all(s[0].isupper() or not s[0].isalpha() for s in rt)
    assert not any(" ," in s or " ." in s for s in rt)
    imdb = data.natural_sentences(5, source="imdb", max_words=20)
    assert all(8 <= len(s.split()) <= 20 for s in imdb)


@pytest.mark.parametrize("seed", [0, 1])
def test_keyword_task_labels_match_relevant_mask(seed):
    task = data.keyword_task(200, seq_len=12, vocab_size=20, seed=seed)
    ids, labels, relevant = task.input_ids, task.labels, task.relevant
    assert ids.shape == relevant.shape == (200, 12) and labels.shape == (200,)
    assert ids.dtype == labels.dtype == torch.long and relevant.dtype == torch.bool
    assert (ids[:, 0] == data.CLS_ID).all() and not (ids[:, 1:] == data.CLS_ID).any()
    assert not (ids == data.PAD_ID).any() and not relevant[:, 0].any()
    is_pos = torch.isin(ids, task.positive_ids)
    is_neg = torch.isin(ids, task.negative_ids)
    assert torch.equal(relevant, is_pos | is_neg)
    assert torch.equal(labels, (is_pos.sum(1) > is_neg.sum(1)).long())
    assert (is_pos.sum(1) != is_neg.sum(1)).all()
    assert 0.35 < labels.float().mean() < 0.65
    assert torch.equal(ids, data.keyword_task(200, seq_len=12, vocab_size=20, seed=seed).input_ids)


@pytest.mark.parametrize(
    "call",
    [
        lambda: data.rotten_tomatoes("dev"),
        lambda: data.imdb("train", n=0),
        lambda: data.imdb("train", max_chars=0),
        lambda: data.natural_sentences(0),
        lambda: data.natural_sentences(10, source="wiki"),
        lambda: data.natural_sentences(10**7),
        lambda: data.keyword_task(0),
        lambda: data.keyword_task(10, seq_len=4, max_count=3),
        lambda: data.keyword_task(10, vocab_size=6, n_keywords=2),
    ],
)
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()
