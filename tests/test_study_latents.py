"""Notebook 06's study module: the summary tables and the findings sentences written from them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lrp_utils.studies import latents as S


def _table(effect: float, n=40, seed=0):
    """Per-example drops: attnlrp = effect + noise, random = noise, grad x act = attnlrp."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(n):
        base = effect + rng.normal(0, 0.1)
        for k in (0, 1, 4):
            drops = {"attnlrp": base * k, "random": rng.normal(0, 0.1) * k, "grad x act": base * k}
            rows += [("m", "heads", r, k, e, d) for r, d in drops.items()]
    return pd.DataFrame(rows, columns=["model", "kind", "ranking", "k", "example", "drop"])


def test_area_table_means_over_the_grid_and_pairs_the_differences():
    t = _table(1.0)
    areas = S.area_table(t, n_boot=200).set_index("ranking")
    per = t[(t.k > 0) & (t.ranking == "attnlrp")].groupby("example")["drop"].mean()
    assert np.isclose(areas.loc["attnlrp", "mean_drop"], per.mean())
    assert areas.loc["attnlrp", "attnlrp_minus"] == 0 and areas.loc["random", "diff_low"] > 0
    assert (areas.n == 40).all()


def test_findings_sentences_follow_the_intervals():
    lines = S.faithfulness_findings(S.area_table(_table(1.0), n_boot=200))
    assert len(lines) == 1 and "larger than random's" in lines[0]
    assert "not distinguishable from grad x act's (difference +0.000" in lines[0]
    curves = S.curve_table(_table(1.0), n_boot=50)
    assert set(curves.columns) == {"model", "kind", "ranking", "k", "drop", "low", "high", "n"}
    assert np.allclose(curves[curves.k == 0]["drop"], 0)


def test_concept_findings_read_the_table():
    rows = [("none", 0, "accuracy", 0.8), ("none", 0, "recall_pos", 0.7), ("none", 0, "recall_neg", 0.9)]
    rows += [(u, 8, m, v) for u, v0 in (("concept", 0.5), ("random", 0.79))
             for m, v in (("accuracy", v0), ("recall_pos", v0 - 0.1), ("recall_neg", v0 + 0.1))]
    table = pd.DataFrame(rows, columns=["units", "n_units", "measure", "value"]).assign(low=0.0, high=1.0)
    lines = S.concept_findings(table, 0.95)
    assert "0.800" in lines[0] and "0.950" in lines[0]
    assert "8 concept neurons off: accuracy 0.500" in lines[1] and "8 random neurons off: accuracy 0.790" in lines[1]


def test_latent_claims_follow_the_areas_csv(tmp_path):
    """The claims are computed from the CSV: AttnLRP ahead of random reproduces, behind contradicts."""
    from lrp_utils.studies.latents import latent_claims

    rows = [("m", "heads", "attnlrp", 1.0, 0.9, 1.1, 0.0, 0.0, 0.0, 10),
            ("m", "heads", "random", 0.2, 0.1, 0.3, 0.8, 0.6, 1.0, 10),
            ("m", "heads", "grad x act", 1.3, 1.2, 1.4, -0.3, -0.4, -0.2, 10),
            ("m", "heads", "cp-lrp", 1.0, 0.9, 1.1, 0.01, -0.1, 0.1, 10)]
    cols = ["model", "kind", "ranking", "mean_drop", "low", "high", "attnlrp_minus", "diff_low", "diff_high", "n"]
    pd.DataFrame(rows, columns=cols).to_csv(tmp_path / "06_faithfulness_areas.csv", index=False)
    got = {c.claim_id: c.verdict for c in latent_claims(tmp_path)}
    assert got == {"latent-vs-random-heads": "reproduced", "latent-vs-gradxact-heads": "contradicted",
                   "latent-vs-cp-lrp-heads": "not reproduced"}


class _WordTokenizer:
    """Word-level stand-in for a Hugging Face tokenizer over a tiny vocabulary (0 = padding, 1 = ".");
    unknown words map to a word id by their length."""

    pad_token_id, all_special_ids = 0, [0]
    words = ["<pad>", ".", *[f"w{i}" for i in range(2, 50)]]

    def __call__(self, texts, add_special_tokens=False, padding=False, return_tensors=None):
        import torch
        from transformers import BatchEncoding

        if isinstance(texts, str):
            return BatchEncoding({"input_ids": [self.words.index(w) if w in self.words else 2 + len(w) % 48
                                                for w in texts.split()]})
        rows = [self(t)["input_ids"] for t in texts]
        n = max(map(len, rows))
        ids = torch.tensor([r + [0] * (n - len(r)) for r in rows])
        return BatchEncoding({"input_ids": ids, "attention_mask": (ids > 0).long()})

    def convert_ids_to_tokens(self, ids):
        return [self.words[i] for i in ids]

    def decode(self, ids):
        return " ".join(self.words[i] for i in ids)


def test_rt_batch_detokenised_picks_the_same_sentences_as_plain_text():
    from lrp_utils.data import detokenize

    tok = _WordTokenizer()
    texts, y, ids, mask = S.rt_batch(tok, "test", 12, seed=3, max_tokens=1000)
    dtexts, dy, _, _ = S.rt_batch(tok, "test", 12, seed=3, max_tokens=1000, detokenised=True)
    assert dtexts == [detokenize(t) for t in texts] and dtexts != texts and (dy == y).all()
    assert ids.shape == mask.shape and ids.shape[0] == len(y) == 12


def test_batch_accuracy_counts_the_predicted_labels():
    import torch
    from archs import tiny

    from lrp_utils import runner

    model = tiny(task="classify", n_classes=2)
    ids, mask = torch.randint(1, 50, (10, 7)), torch.ones(10, 7, dtype=torch.long)
    pred = runner.predict(model, ids, mask).argmax(1)
    assert S.batch_accuracy(model, ids, mask, pred) == 1.0 and S.batch_accuracy(model, ids, mask, 1 - pred) == 0.0
    flip = pred.clone()
    flip[:3] = 1 - flip[:3]
    assert S.batch_accuracy(model, ids, mask, flip) == 0.7


def test_competent_prompts_explain_only_next_words_the_model_gets_right(monkeypatch):
    import torch
    from archs import tiny

    from lrp_utils import runner
    from lrp_utils.tasks import pad

    model, tok = tiny(task="causal", vocab_size=50), _WordTokenizer()
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(2, 50, (8,), generator=g).tolist() for _ in range(20)]
    pred = runner.token_predictions(model, *pad(rows, 0))  # append the model's own top-1 word: right there
    texts = [" ".join(tok.words[i] for i in r + [max(int(pred[b, 7]), 2)]) for b, r in enumerate(rows)]
    monkeypatch.setattr(S, "natural_sentences", lambda n, seed=0, max_words=12: texts[:n])
    task = S.competent_prompts(model, tok, 5)
    assert len(task) == 5 and task.meta["texts"] == 10 and task.meta["texts_kept"] >= 5
    last = task.attention_mask.sum(1) - 1
    got = runner.token_predictions(model, task.input_ids, task.attention_mask)[torch.arange(5), last]
    assert torch.equal(got, task.target)  # every explained next word is the model's top-1 prediction
    monkeypatch.setattr(S, "natural_sentences", lambda n, seed=0, max_words=12: [" ".join(["."] * 9)] * n)
    with pytest.raises(ValueError):  # punctuation never qualifies: no prompt
        S.competent_prompts(model, tok, 3)
    monkeypatch.setattr(S, "natural_sentences", lambda n, seed=0, max_words=12: texts[:2] + [" ".join(["."] * 9)] * (n - 2))
    with pytest.raises(ValueError, match="need 3"):  # too few qualify
        S.competent_prompts(model, tok, 3)
