"""Perturbation faithfulness: the one removal scorer and the one driver of every notebook's curves
(Ali et al. 2022; Achtibat et al. 2024; Bakish et al. 2025).

Pipeline: relevance ``{method: [n, S]}`` (e.g. from :func:`lrp_utils.runner.explain_many`) ->
a :class:`RemovalScorer` -> :func:`faithfulness` (curves and areas of any of :data:`HIGHER_IS_BETTER`'s
metrics, bootstrap bands and intervals) -> :func:`paired_differences`.  :func:`run_faithfulness`
does all of it in one call.  Removal operators (:data:`OPERATORS`):

* ``"mask"`` (the project's shared operator, :func:`lrp_utils.loo.logits_without`): nobody attends
  to a removed token. It is computed exactly, and more cheaply, on the *shortened* sequence: under
  ``"mask"`` a removed token still computes its own state but nothing reads it, so dropping it from
  the input while every other token keeps its original position id gives the same read-out
  (``tests/test_perturbation.py`` checks the equality).  Removing a token removes the whole
  (token, position) pair.
* ``"unk"`` (Ali et al.'s code): the removed tokens' ids are replaced by ``[UNK]``; full length.

Metrics (areas under curves of the fractions ``f`` of valid positions): ``AUAC`` (keep the top-k by
signed relevance, probability of the target), ``AU-MSE`` (remove the least ``|relevance|`` first,
squared change of the score), ``MoRF`` / ``LeRF`` (remove the most / least relevant first, the
score; their difference ``LeRF-MoRF``), ``insert-MoRF`` / ``insert-LeRF`` (keep the most / least
relevant first, the logit score).  The scorer evaluates each distinct (example, removed set) once,
whichever method, metric or fraction asks for it.  Shapes: ``n`` examples, ``S`` positions.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from .progress import tqdm

from . import checks, masks, metrics, profiling, runner
from .adapters import get_adapter
from .loo import removable

OPERATORS = ("mask", "unk")
SCORES = ("logit", "prob", "logprob")
#: metric -> True if a higher area is better
HIGHER_IS_BETTER = {"AUAC": True, "AU-MSE": False, "MoRF": False, "LeRF": True, "LeRF-MoRF": True,
                    "insert-MoRF": True, "insert-LeRF": False}
#: named metric sets: Ali et al.'s two, the removal pair, and the insertion set of notebook 05
PROTOCOLS = {"ali": ("AUAC", "AU-MSE"), "morf_lerf": ("MoRF", "LeRF"),
             "insertion": ("AUAC", "AU-MSE", "insert-MoRF", "insert-LeRF")}


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
        raise ValueError("expected right padding (attention_mask of the form 1..1 0..0); use tasks.encode()")


class RemovalScorer:
    """The model's target logit / probability with sets of positions removed (see module doc).

    ``target``: the scored class / token (an int or one per example).  ``contrast`` (optional):
    the score becomes ``logit[target] - logit[contrast]`` and the probability ``sigmoid`` of it
    (two options).  ``valid`` (optional, ``[n, S]`` bool): only these positions may be removed.

    ``logit(removed)``, ``prob(removed)`` and ``logprob(removed)`` take ``removed [n, S]`` bool (the
    read-out position may not be removed) and return ``[n]`` float64: the ``score_fn`` of
    :func:`lrp_utils.metrics.perturbation_curve`.  Inside ``with scorer.record():`` calls only
    collect the removal sets (returning zeros); leaving the block evaluates them all at once in
    length-sorted batches of at most ``max_tokens`` tokens.  Results are cached.
    """

    def __init__(self, model, input_ids, attention_mask, target, removal: str = "mask", unk_id=None,
                 max_tokens: int = 16384, progress: bool = True, contrast=None, valid=None):
        if removal not in OPERATORS:
            raise ValueError(f"unknown removal {removal!r}; valid: {', '.join(OPERATORS)}")
        if removal == "unk" and unk_id is None:
            raise ValueError("removal='unk' needs unk_id (e.g. tokenizer.unk_token_id)")
        _check_right_padded(attention_mask)
        self.model, self.adapter = model, get_adapter(model)
        self.ids, self.mask = input_ids.cpu(), attention_mask.long().cpu()
        self.target = checks.per_example(target, len(self.ids))
        self.contrast = checks.per_example(contrast, len(self.ids), "contrast")
        self.valid = None if valid is None else torch.as_tensor(valid).bool().cpu()
        self.removal, self.unk_id, self.progress = removal, unk_id, progress
        self.max_tokens = checks.positive_int("max_tokens", max_tokens)
        self.readout = self.adapter.readout_positions(self.mask)
        self.cache, self.pending, self.recording = {}, {}, False
        self.n_forward = 0  # sequences run through the model so far

    @classmethod
    def for_task(cls, model, task, max_tokens: int = 4096, progress: bool = False) -> "RemovalScorer":
        """The ``"mask"`` scorer of a :class:`lrp_utils.tasks.Task`: its target (and contrast) are
        scored; only ``task.valid`` positions may be removed."""
        if task.target is None:
            raise ValueError("task.target is None: call lrp_utils.tasks.set_targets(model, task) first")
        return cls(model, task.input_ids, task.attention_mask, task.target, "mask", None, max_tokens,
                   progress, contrast=task.contrast, valid=task.valid)

    @property
    def removable(self) -> torch.Tensor:
        """``[n, S]`` bool: the positions this scorer may remove (``valid`` if given, else every
        token but the read-out position)."""
        return self.valid if self.valid is not None else removable(self.adapter, self.mask)

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
        """Evaluate every pending removal set, longest inputs first."""
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
            idx, order = torch.tensor(order[-take:]), order[:-take]
            L = int(lengths[idx].max())
            logits = runner.readout_logits(self.model, ids[idx, :L], mask[idx, :L], pos[idx, :L]).double().cpu()
            out[idx] = self._scores(logits, ex[idx])
            bar.update(len(idx))
        bar.close()
        self.cache.update({k: tuple(v) for k, v in zip(keys, out.tolist())})
        self.n_forward += len(keys)
        self.pending = {}

    def _scores(self, logits, ex) -> torch.Tensor:
        """``[m, 3]``: (score, probability, log-probability) of examples ``ex`` from ``logits``."""
        t = self.target[ex][:, None]
        if self.contrast is None:  # score: logit of the target; probability over all outputs
            score, logp = logits.gather(1, t)[:, 0], torch.log_softmax(logits, -1).gather(1, t)[:, 0]
        else:  # score: logit difference to the contrast; probability over the two
            score = logits.gather(1, t)[:, 0] - logits.gather(1, self.contrast[ex][:, None])[:, 0]
            logp = torch.nn.functional.logsigmoid(score)
        return torch.stack([score, logp.exp(), logp], 1)

    def _inputs(self, ex, removed):
        """Model inputs of the removal sets: ids, mask, original position ids (``[m, S]``)."""
        ids, mask = self.ids[ex], self.mask[ex]
        pos = masks.position_ids(mask)
        if self.removal == "unk":
            return ids.masked_fill(removed, int(self.unk_id)), mask, pos
        kept = mask.bool() & ~removed
        order = torch.argsort((~kept).long(), dim=1, stable=True)  # kept positions first, in order
        return ids.gather(1, order), kept.gather(1, order).long(), pos.gather(1, order)


@dataclass
class Faithfulness:
    """Tidy results. ``areas``: one row per (method, metric, example); ``curves``: mean curve with a
    pointwise bootstrap band per (method, metric, fraction); ``summary``: mean area with a
    bootstrap interval per (method, metric); ``seconds`` (explanation and perturbation time) and
    ``n_forward`` (distinct perturbed forwards).  See :data:`HIGHER_IS_BETTER` for the metrics."""

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

    def paired(self, metric: str, reference: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
        """Per method: ``mean(area(method) - area(reference))`` on ``metric`` over the same examples,
        with its paired bootstrap interval (columns ``method``, ``"<metric> - <reference>"``,
        ``low``, ``high``)."""
        d = paired_differences(self.areas[self.areas["metric"] == metric], reference, n_boot=n_boot, seed=seed)
        return d[["method", "diff", "low", "high"]].rename(columns={"diff": f"{metric} - {reference}"})


def curve(scorer: RemovalScorer, metric: str, relevance, valid=None, fractions=metrics.DEFAULT_FRACTIONS,
          score: str = "logit") -> metrics.CurveResult:
    """One metric's curve of ``relevance [n, S]`` (see the module doc); ``score`` (``"logit"``,
    ``"prob"``, ``"logprob"``) is what MoRF / LeRF read."""
    fr = metrics.to_numpy(fractions).ravel()
    if metric == "AUAC":
        return metrics.auac(scorer.prob, relevance, valid, fr)
    if metric == "AU-MSE":
        return metrics.au_mse(scorer.logit, relevance, valid, fractions=fr)
    if metric not in ("MoRF", "LeRF", "insert-MoRF", "insert-LeRF"):
        valid_names = ", ".join(k for k in HIGHER_IS_BETTER if k != "LeRF-MoRF")
        raise ValueError(f"unknown metric {metric!r}; valid: {valid_names}")
    order, insert = metric[-4:].lower(), metric.startswith("insert")
    fn = scorer.logit if insert else getattr(scorer, score)
    return metrics.CurveResult(fr, metrics.perturbation_curve(fn, relevance, order, fr, "keep" if insert else "remove",
                                                              valid))


def faithfulness(scorer: RemovalScorer, relevance: dict, valid=None, protocol="ali",
                 fractions=metrics.DEFAULT_FRACTIONS, n_boot: int = 1000, seed: int = 0,
                 score: str = "logit") -> Faithfulness:
    """Perturbation curves and areas of every method's relevance ``{method: [n, S]}``.

    ``protocol``: a key of :data:`PROTOCOLS` or a list of metrics; with both ``MoRF`` and ``LeRF``
    the areas also hold ``LeRF-MoRF``.  ``valid [n, S]``: removable positions (default: the
    scorer's, :attr:`RemovalScorer.removable`).  Every removal set of every method, metric and
    fraction is collected first and evaluated in one pass.
    """
    names = PROTOCOLS[protocol] if isinstance(protocol, str) and protocol in PROTOCOLS else protocol
    if isinstance(names, str) or not set(names) <= set(HIGHER_IS_BETTER):
        raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)} or a list of metrics")
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; valid: {', '.join(SCORES)}")
    relevance = {m: torch.as_tensor(R).double() for m, R in relevance.items()}
    valid = scorer.removable if valid is None else valid
    with scorer.record():  # pass 1: collect every removal set
        for R in relevance.values():
            for metric in names:
                curve(scorer, metric, R, valid, fractions, score)
    areas, curves = [], []
    for name, R in relevance.items():  # pass 2: from the cache
        res = {metric: curve(scorer, metric, R, valid, fractions, score) for metric in names}
        per = {k: c.areas for k, c in res.items()}
        if {"MoRF", "LeRF"} <= set(per):
            per["LeRF-MoRF"] = per["LeRF"] - per["MoRF"]
        areas += [pd.DataFrame({"method": name, "metric": k, "example": np.arange(len(v)), "value": v})
                  for k, v in per.items()]
        for metric, c in res.items():
            x, mean, low, high = c.band(n_boot=n_boot, seed=seed)
            curves.append(pd.DataFrame({"method": name, "metric": metric, "fraction": x,
                                        "mean": mean, "low": low, "high": high}))
    areas = pd.concat(areas, ignore_index=True)
    rows = [(m, k, *metrics.bootstrap_ci(g["value"], n_boot=n_boot, seed=seed), len(g))
            for (m, k), g in areas.groupby(["method", "metric"], sort=False)]
    summary = pd.DataFrame(rows, columns=["method", "metric", "mean", "low", "high", "n"])
    return Faithfulness(areas, pd.concat(curves, ignore_index=True), summary, n_forward=scorer.n_forward)


def paired_differences(areas: pd.DataFrame, reference: str, methods=None, by=("metric",), n_boot: int = 1000,
                       seed: int = 0) -> pd.DataFrame:
    """Paired comparison with ``reference`` per group of ``by`` (columns of ``areas``, which has
    ``method``, ``example``, ``value`` and ``metric``) and per method (default: all others).

    Columns: ``by``, ``method``, ``better`` (``"higher"`` / ``"lower"``), ``mean`` (of the method),
    ``reference`` (its mean), ``diff`` = mean of ``method - reference`` on the same examples with
    a paired bootstrap interval ``low``, ``high``, ``verdict`` (which is better, or ``"no clear
    difference"`` when the interval contains 0) and ``n``.  Only the examples both have a value for
    are compared (e.g. a costly method run on a subset): means and ``n`` count those.
    """
    rows = []
    for key, g in areas.groupby(list(by), sort=False):
        group = dict(zip(by, key))
        better = HIGHER_IS_BETTER[group["metric"]] if "metric" in group else True
        w = g.pivot(index="example", columns="method", values="value")
        for m in methods or [c for c in g["method"].unique() if c != reference]:
            pair = w[[m, reference]].dropna()
            ci = metrics.paired_bootstrap(pair[m], pair[reference], n_boot=n_boot, seed=seed)
            clear = ci.low > 0 or ci.high < 0
            verdict = f"{m if (ci.mean > 0) == better else reference} better" if clear else "no clear difference"
            rows.append({**group, "method": m, "better": "higher" if better else "lower", "mean": float(pair[m].mean()),
                         "reference": float(pair[reference].mean()), "diff": ci.mean, "low": ci.low, "high": ci.high,
                         "verdict": verdict, "n": len(pair)})
    return pd.DataFrame(rows)


def run_faithfulness(model, input_ids, attention_mask, methods, target=None, protocol="ali",
                     removal: str = "mask", exclude_ids=(), unk_id=None, fractions=metrics.DEFAULT_FRACTIONS,
                     batch_size: int = 64, ig_steps: int = 16, ig_batch_size: int = 8, max_tokens: int = 16384,
                     n_boot: int = 1000, seed: int = 0, progress: bool = True):
    """:func:`lrp_utils.runner.explain_many` + :func:`faithfulness` of the token relevance on
    right-padded inputs; returns ``(Faithfulness, {method: [n, S] relevance})``.

    ``target``: the explained and scored class / token per example (``None``: the model's argmax).
    IG runs ``ig_steps`` steps on ``ig_batch_size`` examples at a time, ``"random"`` is seeded with
    ``seed + batch``.  ``Faithfulness.seconds`` holds each method's and the perturbation's wall time.
    """
    exps = runner.explain_many(model, input_ids, attention_mask, methods, target, batch_size=batch_size,
                               ig_batch_size=ig_batch_size, progress=progress, n_steps=ig_steps, seed=seed)
    rel = {m: e.tokens for m, e in exps.items()}
    valid = valid_positions(model, input_ids, attention_mask, exclude_ids)
    scorer = RemovalScorer(model, input_ids, attention_mask, next(iter(exps.values())).target, removal, unk_id,
                           max_tokens, progress)
    clock = profiling.Clock()
    with clock.measure("perturbation"):
        res = faithfulness(scorer, rel, valid, protocol, fractions, n_boot, seed)
    res.seconds = {**{m: e.extras["wall_s"] for m, e in exps.items()}, "perturbation": clock.wall["perturbation"]}
    return res, rel
