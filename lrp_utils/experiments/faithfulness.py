"""Perturbation faithfulness of token relevance (Ali et al. 2022; Achtibat et al. 2024).

Pipeline: :func:`encode` -> :func:`explain_all` (batched, length-sorted) -> :func:`faithfulness`,
which calls the shared protocols of :mod:`lrp_utils.metrics` (``auac``, ``au_mse``, ``morf_lerf``)
with the scores of a :class:`RemovalScorer`. Removal operators:

* ``"mask"`` (the project's shared operator, :func:`lrp_utils.loo.logits_without`): nobody attends
  to a removed token. It is computed exactly, and more cheaply, on the *shortened* sequence: under
  ``"mask"`` a removed token still computes its own state but nothing reads it, so dropping it from
  the input while every other token keeps its original position id gives the same read-out
  (``tests/test_experiments_faithfulness.py`` checks the equality).
* ``"unk"`` (Ali et al.'s code): the removed tokens' ids are replaced by ``[UNK]``; full length.

The scorer evaluates each distinct (example, removed set) once, whichever method or fraction asks
for it (fraction 0 and 1 are shared by all methods). Shapes: ``n`` examples, ``S`` positions.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import masks, metrics
from ..adapters import get_adapter
from ..batching import length_batches
from ..engine import explain
from ..loo import removable
from ..methods import METHODS

PROTOCOLS = ("ali", "morf_lerf")
REMOVALS = ("mask", "unk")


def encode(tokenizer, texts, max_length: int = 128):
    """``(input_ids [n, S], attention_mask [n, S])``, right-padded, truncated to ``max_length``."""
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt", padding_side="right")
    return enc["input_ids"], enc["attention_mask"]


def valid_positions(model, input_ids, attention_mask, exclude_ids=()) -> torch.Tensor:
    """``[n, S]`` bool: positions a perturbation may remove: not padding, not the read-out position
    ([CLS] of a classifier, the last token of a causal LM), not one of ``exclude_ids`` ([SEP] ...)."""
    ok = removable(get_adapter(model), attention_mask.to(input_ids.device)).cpu()
    for t in exclude_ids:
        ok &= input_ids.cpu() != int(t)
    return ok


def _check_right_padded(attention_mask):
    m = attention_mask.long()
    if (m[:, 1:] > m[:, :-1]).any():
        raise ValueError("expected right padding (attention_mask of the form 1..1 0..0); use encode()")


def explain_all(model, input_ids, attention_mask, methods, target=None, batch_size: int = 64,
                ig_steps: int = 16, ig_batch_size: int = 8, seed: int = 0, progress: bool = True):
    """Token relevance of every method on right-padded inputs, in length-sorted batches.

    Returns ``(relevance, seconds, logit, target)``: ``{method: [n, S] float64}`` (0 at padding),
    ``{method: wall seconds}``, and the explained ``logit [n]`` / ``target [n]`` (``target=None``:
    the model's argmax). IG uses ``ig_steps`` steps and ``ig_batch_size`` examples per call
    (captum expands each batch ``ig_steps`` times); ``"random"`` is seeded with ``seed + batch``.
    """
    _check_right_padded(attention_mask)
    n, S = input_ids.shape
    dev = get_adapter(model).device
    tgt = None if target is None else torch.as_tensor(target).long().reshape(-1).expand(n)
    rel, secs = {}, {}
    logit, out_target = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.long)
    for m in tqdm(list(methods), desc="explaining", disable=not progress):
        R, t0 = torch.zeros(n, S, dtype=torch.float64), time.perf_counter()
        bs = ig_batch_size if m == "ig" else batch_size
        for b, (idx, cols) in enumerate(length_batches(attention_mask, bs)):
            kw = {"n_steps": ig_steps} if m == "ig" else {"seed": seed + b} if m == "random" else {}
            exp = explain(model, input_ids[idx, cols].to(dev), m, attention_mask=attention_mask[idx, cols].to(dev),
                          target=None if tgt is None else tgt[idx], **kw)
            R[idx, cols] = exp.tokens.double()
            logit[idx], out_target[idx] = exp.logit.double(), exp.target
        rel[m], secs[m] = R, time.perf_counter() - t0
    return rel, secs, logit, out_target


class RemovalScorer:
    """The model's target logit / probability with sets of positions removed (see module doc).

    ``contrast`` (optional, a token / class per example): the score becomes ``logit[target] -
    logit[contrast]`` and the probability ``sigmoid`` of it (two options).  ``valid`` (optional,
    ``[n, S]`` bool): only these positions may be removed.

    ``logit(removed)``, ``prob(removed)`` and ``logprob(removed)`` take ``removed [n, S]`` bool (the read-out position
    may not be removed) and return ``[n]`` float64; they are the ``score_fn`` of
    :func:`lrp_utils.metrics.perturbation_curve`. Inside ``with scorer.record():`` calls only
    collect the removal sets (returning zeros); leaving the block evaluates them all at once in
    length-sorted batches of at most ``max_tokens`` tokens. Results are cached.
    """

    def __init__(self, model, input_ids, attention_mask, target, removal: str = "mask", unk_id=None,
                 max_tokens: int = 16384, progress: bool = True, contrast=None, valid=None):
        if removal not in REMOVALS:
            raise ValueError(f"unknown removal {removal!r}; valid: {', '.join(REMOVALS)}")
        if removal == "unk" and unk_id is None:
            raise ValueError("removal='unk' needs unk_id (e.g. tokenizer.unk_token_id)")
        _check_right_padded(attention_mask)
        self.model, self.adapter = model, get_adapter(model)
        self.ids, self.mask = input_ids.cpu(), attention_mask.long().cpu()
        per_example = lambda t: None if t is None else torch.as_tensor(t).long().reshape(-1).expand(len(self.ids)).cpu()  # noqa: E731
        self.target, self.contrast = per_example(target), per_example(contrast)
        self.valid = None if valid is None else torch.as_tensor(valid).bool().cpu()
        self.removal, self.unk_id, self.max_tokens, self.progress = removal, unk_id, max_tokens, progress
        self.readout = self.adapter.readout_positions(self.mask)
        self.cache, self.pending, self.recording = {}, {}, False
        self.n_forward = 0  # sequences run through the model so far

    def logit(self, removed) -> torch.Tensor:
        return self._lookup(removed, 0)

    def prob(self, removed) -> torch.Tensor:
        return self._lookup(removed, 1)

    def logprob(self, removed) -> torch.Tensor:
        return self._lookup(removed, 2)

    @contextlib.contextmanager
    def record(self):
        self.recording = True
        try:
            yield self
        finally:
            self.recording = False
        self.flush()

    def _lookup(self, removed, col: int) -> torch.Tensor:
        R = torch.as_tensor(removed).detach().cpu().bool() & self.mask.bool()
        if R.shape != self.ids.shape:
            raise ValueError(f"removed has shape {tuple(R.shape)}, expected {tuple(self.ids.shape)}")
        if R[torch.arange(len(R)), self.readout].any():
            raise ValueError("the read-out position cannot be removed (see valid_positions)")
        if self.valid is not None and (R & ~self.valid).any():
            raise ValueError("only valid positions may be removed (the scorer's valid mask)")
        rows = R.numpy()
        keys = [(i, rows[i].tobytes()) for i in range(len(rows))]
        self.pending.update({k: rows[i] for i, k in enumerate(keys) if k not in self.cache})
        if self.recording:
            return torch.zeros(len(keys), dtype=torch.float64)
        self.flush()
        return torch.tensor([self.cache[k][col] for k in keys], dtype=torch.float64)

    def flush(self) -> None:
        """Evaluate every pending removal set."""
        if not self.pending:
            return
        keys = list(self.pending)
        ex = torch.tensor([k[0] for k in keys])
        ids, mask, pos = self._inputs(ex, torch.from_numpy(np.stack([self.pending[k] for k in keys])))
        lengths = mask.sum(1)
        order = torch.argsort(lengths, stable=True).tolist()
        out = torch.zeros(len(keys), 3, dtype=torch.float64)
        bar = tqdm(total=len(keys), desc=f"perturbed forwards ({self.removal})", disable=not self.progress)
        while order:
            take = max(1, min(len(order), self.max_tokens // max(1, int(lengths[order[-1]]))))
            idx, order = torch.tensor(order[-take:]), order[:-take]  # longest first
            L = int(lengths[idx].max())
            logits = readout_logits(self.model, ids[idx, :L], mask[idx, :L], pos[idx, :L]).double().cpu()
            t = self.target[ex[idx]][:, None]
            if self.contrast is None:  # score: logit of the target; probability over all outputs
                out[idx, 0] = logits.gather(1, t)[:, 0]
                out[idx, 2] = torch.log_softmax(logits, -1).gather(1, t)[:, 0]
            else:  # score: logit difference to the contrast; probability over the two
                d = logits.gather(1, t)[:, 0] - logits.gather(1, self.contrast[ex[idx]][:, None])[:, 0]
                out[idx, 0], out[idx, 2] = d, torch.nn.functional.logsigmoid(d)
            out[idx, 1] = out[idx, 2].exp()
            bar.update(len(idx))
        bar.close()
        self.cache.update({k: tuple(v) for k, v in zip(keys, out.tolist())})
        self.n_forward += len(keys)
        self.pending = {}

    def _inputs(self, ex, removed):
        """Model inputs of the removal sets: ids, mask, original position ids (``[m, S]``)."""
        ids, mask = self.ids[ex], self.mask[ex]
        pos = masks.position_ids(mask)
        if self.removal == "unk":
            return ids.masked_fill(removed, int(self.unk_id)), mask, pos
        kept = mask.bool() & ~removed
        order = torch.argsort((~kept).long(), dim=1, stable=True)  # kept positions first, in order
        return ids.gather(1, order), kept.gather(1, order).long(), pos.gather(1, order)


@torch.no_grad()
def readout_logits(model, ids, mask, pos=None) -> torch.Tensor:
    """Read-out logits ``[b, n_out]`` of inputs ``[b, S]``, with explicit position ids ``pos [b, S]``
    if given (a shortened sequence keeps its tokens' original positions)."""
    adapter = get_adapter(model)
    dev = adapter.device
    with adapter.session(METHODS["gi"]):
        return adapter.forward(ids.to(dev), mask.to(dev), None if pos is None else pos.to(dev))


@dataclass
class Faithfulness:
    """Tidy results. ``areas``: one row per (method, metric, example); ``curves``: mean curve with a
    pointwise bootstrap band per (method, metric, fraction); ``summary``: mean area with a
    bootstrap interval per (method, metric). Metrics: ``AUAC`` (higher = better), ``AU-MSE``
    (lower = better); ``MoRF`` (lower = better), ``LeRF`` (higher), ``LeRF-MoRF`` (higher)."""

    areas: pd.DataFrame
    curves: pd.DataFrame
    summary: pd.DataFrame
    seconds: dict = field(default_factory=dict)
    n_forward: int = 0

    def table(self, digits: int = 3) -> pd.DataFrame:
        """``method x metric`` table of ``mean [low, high]`` strings, methods in input order."""
        s = self.summary.round(digits)
        s = s.assign(cell=s["mean"].astype(str) + " [" + s["low"].astype(str) + ", " + s["high"].astype(str) + "]")
        return s.pivot(index="method", columns="metric", values="cell").loc[s["method"].unique()]


def _curves(scorer, R, valid, protocol, fr, score="logit") -> dict:
    if protocol == "ali":
        return {"AUAC": metrics.auac(scorer.prob, R, valid, fr),
                "AU-MSE": metrics.au_mse(scorer.logit, R, valid, fractions=fr)}
    ml = metrics.morf_lerf(getattr(scorer, score), R, valid, fr)
    return {"MoRF": ml.morf, "LeRF": ml.lerf}


def faithfulness(scorer: RemovalScorer, relevance: dict, valid, protocol: str = "ali",
                 fractions=metrics.DEFAULT_FRACTIONS, n_boot: int = 1000, seed: int = 0,
                 score: str = "logit") -> Faithfulness:
    """Perturbation curves and areas of every method's relevance ``{method: [n, S]}``.

    ``protocol="ali"``: AUAC (keep the top-k by signed relevance, true-class probability) and
    AU-MSE (remove the least ``|relevance|`` first, squared change of the logit), as Ali et al.
    ``protocol="morf_lerf"``: remove most / least relevant (signed) first, score = target logit;
    ``LeRF-MoRF`` is the area between the curves; ``score="logprob"`` scores the target's log-probability
    instead. ``valid [n, S]``: removable positions.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    if score not in ("logit", "logprob", "prob"):
        raise ValueError(f"unknown score {score!r}; valid: 'logit', 'logprob', 'prob'")
    fr = metrics.to_numpy(fractions).ravel()
    with scorer.record():  # pass 1: collect every removal set of every method and fraction
        for R in relevance.values():
            _curves(scorer, R, valid, protocol, fr, score)
    areas, curves = [], []
    for name, R in relevance.items():  # pass 2: from the cache
        res = _curves(scorer, R, valid, protocol, fr, score)
        per = {k: c.areas for k, c in res.items()}
        if protocol == "morf_lerf":
            per["LeRF-MoRF"] = per["LeRF"] - per["MoRF"]
        for metric, values in per.items():
            areas.append(pd.DataFrame({"method": name, "metric": metric, "example": np.arange(len(values)),
                                       "value": values}))
        for metric, c in res.items():
            x, mean, low, high = c.band(n_boot=n_boot, seed=seed)
            curves.append(pd.DataFrame({"method": name, "metric": metric, "fraction": x,
                                        "mean": mean, "low": low, "high": high}))
    areas = pd.concat(areas, ignore_index=True)
    rows = [(m, k, *metrics.bootstrap_ci(g["value"], n_boot=n_boot, seed=seed), len(g))
            for (m, k), g in areas.groupby(["method", "metric"], sort=False)]
    summary = pd.DataFrame(rows, columns=["method", "metric", "mean", "low", "high", "n"])
    return Faithfulness(areas, pd.concat(curves, ignore_index=True), summary, n_forward=scorer.n_forward)


def run_faithfulness(model, input_ids, attention_mask, methods, target=None, protocol: str = "ali",
                     removal: str = "mask", exclude_ids=(), unk_id=None, fractions=metrics.DEFAULT_FRACTIONS,
                     batch_size: int = 64, ig_steps: int = 16, ig_batch_size: int = 8, max_tokens: int = 16384,
                     n_boot: int = 1000, seed: int = 0, progress: bool = True):
    """:func:`explain_all` + :func:`faithfulness` in one call; returns ``(Faithfulness, relevance)``.

    ``target``: the explained and scored class / token per example (``None``: the model's argmax).
    ``Faithfulness.seconds`` holds the explanation time of each method and ``"perturbation"``.
    """
    rel, secs, _, tgt = explain_all(model, input_ids, attention_mask, methods, target, batch_size,
                                    ig_steps, ig_batch_size, seed=seed, progress=progress)
    valid = valid_positions(model, input_ids, attention_mask, exclude_ids)
    scorer = RemovalScorer(model, input_ids, attention_mask, tgt, removal, unk_id, max_tokens, progress)
    t0 = time.perf_counter()
    res = faithfulness(scorer, rel, valid, protocol, fractions, n_boot, seed)
    res.seconds = {**secs, "perturbation": time.perf_counter() - t0}
    return res, rel


def paired_differences(areas: pd.DataFrame, metric: str, reference: str, n_boot: int = 1000,
                       seed: int = 0) -> pd.DataFrame:
    """Per method: mean of ``area(method) - area(reference)`` over the same examples, with a paired
    bootstrap interval (:func:`lrp_utils.metrics.paired_bootstrap`)."""
    wide = areas[areas["metric"] == metric].pivot(index="example", columns="method", values="value")
    rows = [(m, *metrics.paired_bootstrap(wide[m], wide[reference], n_boot=n_boot, seed=seed))
            for m in areas["method"].unique() if m != reference]
    return pd.DataFrame(rows, columns=["method", f"{metric} - {reference}", "low", "high"])


def name_swap_probe(model, tokenizer, templates, names: dict, methods=("gi", "cp-lrp-ah", "cp-lrp", "attnlrp"),
                    target: int = 1) -> pd.DataFrame:
    """Relevance of a swapped-in name (bias probe in the spirit of Ali et al. 2022).

    Args:
        templates: sentences with one ``{}`` where the name goes, e.g. ``"{} was brilliant in this film"``.
        names: ``{name: group}``, e.g. ``{"John": "male", "Mary": "female"}``.
        target: the explained class (1 = positive for MiniLM-RT), the same for every sentence.
    Returns one row per (template, name, method): ``name_relevance`` (sum over the name's word
    pieces), ``name_share`` (that / sum of |R| over the sentence), ``logit`` of ``target``, ``prob``.
    """
    meta = [(tpl, name, group) for tpl in templates for name, group in names.items()]
    texts = [tpl.format(name) for tpl, name, _ in meta]
    enc = tokenizer(texts, padding=True, return_tensors="pt", return_offsets_mapping=True, padding_side="right")
    start = torch.tensor([tpl.index("{}") for tpl, _, _ in meta])[:, None]
    end = start + torch.tensor([len(name) for _, name, _ in meta])[:, None]
    o = enc["offset_mapping"]
    in_name = (o[..., 0] < end) & (o[..., 1] > start) & (o[..., 1] > o[..., 0])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    probs = RemovalScorer(model, ids, mask, target, progress=False).prob(torch.zeros_like(ids, dtype=torch.bool))
    dev = get_adapter(model).device
    ids, mask = ids.to(dev), mask.to(dev)
    rows = []
    for m in methods:
        exp = explain(model, ids, m, target=target, attention_mask=mask)
        R = exp.tokens.double()
        name_rel = (R * in_name).sum(1)
        share = name_rel / R.abs().sum(1)
        for i, (tpl, name, group) in enumerate(meta):
            rows.append((tpl, name, group, m, float(name_rel[i]), float(share[i]), float(exp.logit[i]),
                         float(probs[i])))
    return pd.DataFrame(rows, columns=["template", "name", "group", "method", "name_relevance",
                                       "name_share", "logit", "prob"])
