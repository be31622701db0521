"""Positional-aware LRP experiments (Bakish et al. 2025, PA-LRP): conservation budgets, where
positional relevance sits, and perturbation faithfulness of PA-LRP against AttnLRP.

Pipeline: a :class:`Task` (tokenised, right-padded examples with the positions a perturbation may
touch) from :func:`classification_task`, :func:`next_token_task` or :func:`prompt_task` ->
:func:`set_targets` -> :func:`explain_task` (length-sorted batches) -> tidy tables from
:func:`conservation_frame`, :func:`position_profile`, :func:`layer_profile` and
:func:`faithfulness` (+ :func:`paired_table`).

Removal operator of the perturbation curves: ``"mask"``, the project's shared operator
(:func:`lrp_utils.loo.logits_without`: nobody attends to a removed token; it keeps its position id,
and so does every other token).  It is computed on the *shortened* sequence with the original
position ids, which gives the same read-out at lower cost (``tests/test_experiments_positional.py``
checks the equality).  Removing a token therefore removes the whole (token, position) pair, which is
the unit PA-LRP's combined map ranks.  Shapes: ``n`` examples, ``S`` positions.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import metrics
from ..adapters import get_adapter
from ..batching import length_batches
from ..engine import explain
from ..explanation import Explanation
from ..loo import removable
from .faithfulness import RemovalScorer, readout_logits

#: method pairs compared throughout: (without positions, with positions)
PAIRS = (("attnlrp", "pa-lrp"), ("cp-lrp", "pa-cp-lrp"))
PROMPT = "Review: {}\nSentiment (positive or negative):"
OPTIONS = (" positive", " negative")
#: metric -> True if higher is better
HIGHER_IS_BETTER = {"AUAC": True, "AU-MSE": False, "insert-MoRF": True, "insert-LeRF": False}


@dataclass
class Task:
    """Tokenised examples of one experiment.  ``input_ids, attention_mask [n, S]`` (right padding);
    ``valid [n, S]`` positions a perturbation may remove; ``target [n]`` the explained class / token;
    ``contrast [n]`` (optional) a second token: the explained score is ``logit[target] -
    logit[contrast]``; ``tokens``: token strings per example (unpadded); ``labels`` (optional)."""

    name: str
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    valid: torch.Tensor
    target: torch.Tensor | None = None
    contrast: torch.Tensor | None = None
    tokens: list = field(default_factory=list)
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def with_target(self, target, contrast=None) -> "Task":
        """A copy with ``target`` (and ``contrast``) set, e.g. from ``Explanation.target``."""
        return replace(self, target=torch.as_tensor(target).long(), contrast=contrast)

    def subset(self, n: int) -> "Task":
        """The first ``n`` examples."""
        cut = lambda t: None if t is None else t[:n]  # noqa: E731
        return replace(self, input_ids=self.input_ids[:n], attention_mask=self.attention_mask[:n],
                       valid=self.valid[:n], target=cut(self.target), contrast=cut(self.contrast),
                       tokens=self.tokens[:n], labels=cut(self.labels))


def _pad(rows: list[list[int]], pad_id: int):
    S = max(len(r) for r in rows)
    ids = torch.full((len(rows), S), int(pad_id), dtype=torch.long)
    mask = torch.zeros(len(rows), S, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    return ids, mask


def classification_task(tokenizer, texts, labels=None, max_length: int = 64, name: str = "sentiment") -> Task:
    """A BERT-style classification task; ``valid`` excludes [CLS] (read out), [SEP] and padding."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    ids, mask = _pad(enc["input_ids"], tokenizer.pad_token_id)
    special = torch.tensor([[t in tokenizer.all_special_ids for t in row] for row in ids.tolist()])
    lab = None if labels is None else torch.as_tensor(list(labels)).long()
    return Task(name, ids, mask, mask.bool() & ~special, tokens=[tokenizer.convert_ids_to_tokens(r)
                                                                  for r in enc["input_ids"]], labels=lab)


def next_token_task(tokenizer, texts, seed: int = 0, min_prefix: int = 5, name: str = "next-token") -> Task:
    """Next-token prediction on prefixes of natural text: each text (no special tokens added) is cut
    after ``k`` tokens, ``k`` drawn uniformly from ``[max(min_prefix, n // 2), n - 1]`` (seeded), so
    the prefix is a mid-sentence context.  ``valid`` excludes the last position (read out)."""
    rng = np.random.default_rng(seed)
    rows = []
    for text in texts:
        full = tokenizer(text, add_special_tokens=False)["input_ids"]
        lo = min(max(min_prefix, len(full) // 2), len(full) - 1)
        rows.append(full[: int(rng.integers(lo, len(full)))] if len(full) > 1 else full)
    ids, mask = _pad(rows, tokenizer.pad_token_id)
    valid = mask.bool().clone()
    valid[torch.arange(len(rows)), mask.sum(1) - 1] = False
    return Task(name, ids, mask, valid, tokens=[tokenizer.convert_ids_to_tokens(r) for r in rows])


def prompt_task(tokenizer, texts, labels=None, template: str = PROMPT, name: str = "prompt-sentiment") -> Task:
    """A zero-shot prompt ``template.format(text)`` for a causal LM; ``valid`` = the tokens inside
    ``text`` (the template stays in place).  Targets come from :func:`set_targets` with ``options``."""
    prompts = [template.format(t) for t in texts]
    enc = tokenizer(prompts, add_special_tokens=False, return_offsets_mapping=True)
    start = template.index("{}")
    ids, mask = _pad(enc["input_ids"], tokenizer.pad_token_id)
    valid = torch.zeros_like(mask, dtype=torch.bool)
    for i, (offsets, text) in enumerate(zip(enc["offset_mapping"], texts)):
        for j, (a, b) in enumerate(offsets):
            valid[i, j] = b > a and a < start + len(text) and b > start
    lab = None if labels is None else torch.as_tensor(list(labels)).long()
    return Task(name, ids, mask, valid, tokens=[tokenizer.convert_ids_to_tokens(r) for r in enc["input_ids"]],
                labels=lab)


def set_targets(model, task: Task, options=None, tokenizer=None, batch_size: int = 32) -> Task:
    """The model's own prediction as ``task.target`` (argmax of the read-out logits).  With
    ``options`` (strings, e.g. :data:`OPTIONS`, single tokens of ``tokenizer``) the prediction is
    restricted to them: ``target`` = the higher option, ``contrast`` = the other (two options)."""
    batches = list(length_batches(task.attention_mask, batch_size))
    logits = torch.cat([readout_logits(model, task.input_ids[i, c], task.attention_mask[i, c]).cpu()
                        for i, c in batches])
    order = torch.cat([i for i, _ in batches])
    logits = logits[torch.argsort(order)].double()
    if options is None:
        return replace(task, target=logits.argmax(-1), contrast=None)
    opt = torch.tensor(option_ids(tokenizer, options))
    if len(opt) != 2:
        raise ValueError(f"need exactly two options for a contrast, got {len(opt)}")
    pick = logits[:, opt].argmax(-1)
    return replace(task, target=opt[pick], contrast=opt[1 - pick])


def option_ids(tokenizer, options=OPTIONS) -> list[int]:
    """Token ids of single-token answer ``options`` (raises if one is several tokens)."""
    return [_single_token(tokenizer, o) for o in options]


def _single_token(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"option {text!r} is {len(ids)} tokens; options must be single tokens")
    return ids[0]


def accuracy(task: Task, options_are_labels=None) -> float:
    """Share of examples whose ``target`` equals the label (``options_are_labels``: token id of
    each label value, e.g. ``{1: id(" positive"), 0: id(" negative")}``)."""
    if task.labels is None or task.target is None:
        return float("nan")
    want = task.labels if options_are_labels is None else torch.tensor(
        [options_are_labels[int(y)] for y in task.labels])
    return float((task.target == want).double().mean())


# --------------------------------------------------------------------------------- explanations
def _explain_one(model, ids, mask, method, target, contrast_ids):
    exp = explain(model, ids, method, target=target, attention_mask=mask)
    if contrast_ids is None:
        return exp
    return exp.contrast(explain(model, ids, method, target=contrast_ids, attention_mask=mask))


def explain_task(model, task: Task, methods, batch_size: int = 16, progress: bool = True) -> dict:
    """``{method: Explanation}`` for every example of ``task`` (fields ``[n, S]``, 0 at padding),
    in length-sorted batches.  With ``task.contrast`` the explanation is that of ``logit[target] -
    logit[contrast]`` (:meth:`lrp_utils.Explanation.contrast`).  With ``task.target`` None the first
    method explains the model's own argmax and the other methods explain the same targets (read
    them from ``out[method].target``; this saves :func:`set_targets`' forward pass)."""
    dev = get_adapter(model).device
    out, target = {}, task.target
    if target is None and task.contrast is not None:
        raise ValueError("a contrast needs explicit targets: call set_targets(model, task, options=...)")
    batches = list(length_batches(task.attention_mask, batch_size))
    for m in tqdm(list(methods), desc=f"explaining {task.name}", disable=not progress):
        parts = []
        for idx, cols in batches:
            c = None if task.contrast is None else task.contrast[idx].to(dev)
            t = None if target is None else target[idx].to(dev)
            parts.append((idx, _explain_one(model, task.input_ids[idx, cols].to(dev),
                                            task.attention_mask[idx, cols].to(dev), m, t, c)))
        out[m] = _stack(parts, task.input_ids.shape)
        target = out[m].target if target is None else target
    return out


def _stack(parts, shape) -> Explanation:
    """One Explanation ``[n, S]`` from per-batch ones (rows ``idx``, first ``L`` columns)."""
    n, S = shape

    def grid(get):
        first = get(parts[0][1])
        if first is None:
            return None
        full = torch.zeros(n, S, dtype=torch.float64)
        for idx, e in parts:
            x = get(e).double()
            full[idx, : x.shape[1]] = x
        return full

    def per_layer(get):
        first = get(parts[0][1])
        return None if first is None else [grid(lambda e, j=j: get(e)[j]) for j in range(len(first))]

    vec = lambda get: torch.cat([get(e) for _, e in parts])[torch.argsort(torch.cat([i for i, _ in parts]))]  # noqa: E731
    e0 = parts[0][1]
    return Explanation(
        tokens=grid(lambda e: e.tokens), positions=grid(lambda e: e.positions),
        layers=per_layer(lambda e: e.layers), logit=vec(lambda e: e.logit.double()),
        target=vec(lambda e: e.target), method=e0.method, token_types=grid(lambda e: e.token_types),
        positions_by_layer=per_layer(lambda e: e.positions_by_layer))


# --------------------------------------------------------------------------------- conservation
def conservation_frame(exps: dict, task: str = "") -> pd.DataFrame:
    """One row per (method, example): ``logit``, the sums of ``tokens``, ``positions``, ``types``
    (0 where the method has none), ``ratio_tokens = tokens / logit`` and ``ratio_total =
    (tokens + positions + types) / logit``."""
    rows = []
    for m, e in exps.items():
        z = e.logit.double()
        tok = e.tokens.sum(-1)
        pos = e.positions.sum(-1) if e.positions is not None else torch.zeros_like(z)
        typ = e.token_types.sum(-1) if e.token_types is not None else torch.zeros_like(z)
        rows.append(pd.DataFrame({"task": task, "method": m, "example": np.arange(len(z)), "logit": z.numpy(),
                                  "tokens": tok.numpy(), "positions": pos.numpy(), "types": typ.numpy(),
                                  "ratio_tokens": (tok / z).numpy(), "ratio_total": ((tok + pos + typ) / z).numpy()}))
    return pd.concat(rows, ignore_index=True)


def conservation_summary(frame: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per (task, method, part) the **median** ratio with a 95% percentile-bootstrap interval (the
    median: a logit near 0 makes single ratios explode), and the mean: ``part`` is ``"tokens"``
    (``ratio_tokens``) or ``"tokens+positions"`` (``ratio_total``)."""
    rows = []
    for (task, m), g in frame.groupby(["task", "method"], sort=False):
        for part, col in (("tokens", "ratio_tokens"), ("tokens+positions", "ratio_total")):
            v = g[col].to_numpy(dtype=float)
            idx = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))
            low, high = np.quantile(np.median(v[idx], axis=1), [0.025, 0.975])
            rows.append((task, m, part, float(np.median(v)), float(low), float(high), float(v.mean()), len(v)))
    return pd.DataFrame(rows, columns=["task", "method", "part", "median", "low", "high", "mean", "n"])


# --------------------------------------------------------------------------------- profiles
def _position_abs(e: Explanation) -> torch.Tensor:
    """``[n, S]`` unsigned positional score of the combined map: sum over layers of |R_pos|."""
    if e.positions_by_layer is not None:
        return sum(p.abs() for p in e.positions_by_layer)
    return e.positions.abs()


def position_profile(exp: Explanation, attention_mask, max_index: int = 12) -> pd.DataFrame:
    """Where relevance sits, per example and position, as shares of the example's absolute budget
    ``B = sum_i (|R_tok,i| + P_i + |R_type,i|)`` with ``P_i`` the combined map's positional term.

    Rows: ``example``, ``index`` (from the start, 0-based), ``from_end`` (-1 = last token),
    ``positions`` (``P_i / B``), ``positions_signed`` (``R_pos,i / B``), ``tokens`` (``|R_tok,i| / B``).
    Only positions with ``index < max_index`` or ``from_end >= -max_index`` are kept.
    """
    mask = attention_mask.bool().cpu()
    P = _position_abs(exp)
    types = exp.token_types.abs() if exp.token_types is not None else torch.zeros_like(P)
    budget = (exp.tokens.abs() + P + types).sum(-1, keepdim=True).clamp_min(1e-30)
    n, S = mask.shape
    idx = torch.arange(S).expand(n, S)
    from_end = idx - mask.long().sum(1, keepdim=True)
    keep = mask & ((idx < max_index) | (from_end >= -max_index))
    ex = torch.arange(n)[:, None].expand(n, S)
    col = lambda t: t[keep].numpy()  # noqa: E731
    return pd.DataFrame({"example": col(ex), "index": col(idx), "from_end": col(from_end),
                         "positions": col(P / budget), "positions_signed": col(exp.positions / budget),
                         "tokens": col(exp.tokens.abs() / budget)})


def layer_profile(exp: Explanation) -> pd.DataFrame:
    """RoPE: per example and layer, ``share`` = sum_i |R_pos,l,i| / sum_l sum_i |R_pos,l,i| and
    ``signed_over_logit`` = sum_i R_pos,l,i / logit."""
    if exp.positions_by_layer is None:
        raise ValueError("layer_profile needs per-layer position relevance (PA-LRP on a RoPE model)")
    A = torch.stack([p.abs().sum(-1) for p in exp.positions_by_layer])  # [L, n]
    Ssum = torch.stack([p.sum(-1) for p in exp.positions_by_layer])
    share = A / A.sum(0, keepdim=True).clamp_min(1e-30)
    L, n = A.shape
    return pd.DataFrame({"layer": np.repeat(np.arange(1, L + 1), n), "example": np.tile(np.arange(n), L),
                         "share": share.reshape(-1).numpy(),
                         "signed_over_logit": (Ssum / exp.logit.double()).reshape(-1).numpy()})


def display_rows(attn: Explanation, pa: Explanation, b: int, n: int) -> dict:
    """Three raw rows ``[n]`` for example ``b`` (its first ``n`` positions): AttnLRP tokens, PA-LRP
    combined map, and its positional term alone (sum over layers of |R_pos|)."""
    return {"AttnLRP (tokens)": attn.tokens[b, :n], "PA-LRP combined": pa.combined()[b, :n],
            "PA-LRP positions": _position_abs(pa)[b, :n]}


# --------------------------------------------------------------------------------- faithfulness
def task_scorer(model, task: Task, max_tokens: int = 4096, progress: bool = False) -> RemovalScorer:
    """The shared :class:`~lrp_utils.experiments.faithfulness.RemovalScorer` (``"mask"`` removal,
    see module doc) for ``task``: ``logit(removed)`` is ``logit[target] (- logit[contrast])``,
    ``prob(removed)`` the softmax probability of ``target`` (with a contrast: ``sigmoid`` of the
    difference); only ``task.valid`` positions may be removed."""
    if task.target is None:
        raise ValueError("task.target is None: call set_targets(model, task) first")
    return RemovalScorer(model, task.input_ids, task.attention_mask, task.target, "mask", None, max_tokens,
                         progress, contrast=task.contrast, valid=task.valid)


def _curves(scorer: RemovalScorer, R, valid, fr) -> dict:
    keep = lambda order: metrics.CurveResult(fr, metrics.perturbation_curve(  # noqa: E731
        scorer.logit, R, order, fr, "keep", valid))
    return {"AUAC": metrics.auac(scorer.prob, R, valid, fr),
            "AU-MSE": metrics.au_mse(scorer.logit, R, valid, fractions=fr),
            "insert-MoRF": keep("morf"), "insert-LeRF": keep("lerf")}


def faithfulness(model, task: Task, rankings: dict, fractions=metrics.DEFAULT_FRACTIONS,
                 max_tokens: int = 4096, n_boot: int = 1000, seed: int = 0, progress: bool = True):
    """Perturbation faithfulness of each ranking ``{name: [n, S] relevance}`` on ``task``.

    Metrics (all on ``task.valid`` positions, ``"mask"`` removal): ``AUAC`` (keep the top-k by signed
    relevance, probability of the target; higher = better), ``AU-MSE`` (remove the least |relevance|
    first, squared change of the explained score; lower = better), ``insert-MoRF`` / ``insert-LeRF``
    (insert the most / least relevant first, i.e. keep them, area under the explained score; higher
    / lower = better).  Returns ``(areas, curves)``: ``areas`` one row per (method, metric, example)
    with ``value``; ``curves`` the mean curve and a pointwise bootstrap band per (method, metric,
    fraction).  ``areas.attrs["n_forward"]`` counts the distinct perturbed forwards.
    """
    fr = metrics.to_numpy(fractions).ravel()
    scorer, valid = task_scorer(model, task, max_tokens, progress), task.valid
    rankings = {name: torch.as_tensor(R).double() for name, R in rankings.items()}
    with scorer.record():  # pass 1: collect every removal set of every ranking, metric and fraction
        for R in rankings.values():
            _curves(scorer, R, valid, fr)
    areas, curves = [], []
    for name, R in rankings.items():
        for metric, c in _curves(scorer, R, valid, fr).items():  # pass 2: from the cache
            areas.append(pd.DataFrame({"task": task.name, "method": name, "metric": metric,
                                       "example": np.arange(len(task)), "value": c.areas}))
            x, mean, low, high = c.band(n_boot=n_boot, seed=seed)
            curves.append(pd.DataFrame({"task": task.name, "method": name, "metric": metric, "fraction": x,
                                        "mean": mean, "low": low, "high": high}))
    areas = pd.concat(areas, ignore_index=True)
    areas.attrs["n_forward"] = scorer.n_forward
    return areas, pd.concat(curves, ignore_index=True)


def inputs_task(model, input_ids, attention_mask, name: str = "inputs") -> Task:
    """A :class:`Task` from right-padded ``input_ids, attention_mask [n, S]`` as they come (a
    dataset slice): ``valid`` = every position but padding and the read-out position."""
    mask = attention_mask.long().cpu()
    return Task(name, input_ids.cpu(), mask, removable(get_adapter(model), mask))


def budget_table(model, input_ids, attention_mask, methods=("attnlrp", "pa-lrp"), batch_size: int = 16,
                 progress: bool = True) -> pd.DataFrame:
    """Notebook 05's conservation budget over a dataset slice: :func:`conservation_frame` of
    ``methods`` (the first explains the model's argmax, the others the same targets), one row per
    (method, example)."""
    task = inputs_task(model, input_ids, attention_mask)
    return conservation_frame(explain_task(model, task, methods, batch_size, progress), task.name)


def faithfulness_table(model, input_ids, attention_mask, methods=("attnlrp", "pa-lrp"), batch_size: int = 16,
                       fractions=metrics.DEFAULT_FRACTIONS, max_tokens: int = 4096, progress: bool = True
                       ) -> pd.DataFrame:
    """Notebook 05's perturbation faithfulness over a dataset slice: each method's ranking (token
    relevance, or the combined token + position map where the method has positions) scored by
    :func:`faithfulness`; returns its ``areas`` table (one row per method, metric, example)."""
    task = inputs_task(model, input_ids, attention_mask)
    exps = explain_task(model, task, methods, batch_size, progress)
    task = task.with_target(exps[list(methods)[0]].target)
    rankings = {m: e.combined() if e.positions is not None else e.tokens for m, e in exps.items()}
    return faithfulness(model, task, rankings, fractions, max_tokens, n_boot=1, progress=progress)[0]


def paired_table(areas: pd.DataFrame, a: str = "pa-lrp", b: str = "attnlrp", n_boot: int = 1000,
                 seed: int = 0) -> pd.DataFrame:
    """Per (task, metric): mean area of ``a`` and ``b``, the paired difference ``a - b`` with a 95%
    paired bootstrap interval (:func:`lrp_utils.metrics.paired_bootstrap`) and a verdict: which
    method is better, or ``"no clear difference"`` when the interval contains 0."""
    rows = []
    for (task, metric), g in areas.groupby(["task", "metric"], sort=False):
        w = g.pivot(index="example", columns="method", values="value")
        ci = metrics.paired_bootstrap(w[a], w[b], n_boot=n_boot, seed=seed)
        better = HIGHER_IS_BETTER[metric]
        if ci.low > 0 or ci.high < 0:
            verdict = f"{a if (ci.mean > 0) == better else b} better"
        else:
            verdict = "no clear difference"
        rows.append((task, metric, "higher" if better else "lower", float(w[a].mean()), float(w[b].mean()),
                     ci.mean, ci.low, ci.high, verdict, len(w)))
    return pd.DataFrame(rows, columns=["task", "metric", "better", a, b, "diff", "low", "high", "verdict", "n"])


# --------------------------------------------------------------------------------- data and plots
def default_task(name: str, tokenizer, n: int, seed: int = 0) -> Task:
    """The notebook's main task of a real model: ``"minilm-rt"``: sentiment of the first ``n``
    Rotten Tomatoes *test* sentences (never seen in fine-tuning); ``"smollm2-135m"``: next-token
    prediction on prefixes of ``n`` natural IMDB sentences (8-30 words, original casing)."""
    from ..data import natural_sentences, rotten_tomatoes

    if name == "minilm-rt":
        data = rotten_tomatoes("test", seed=0)[:n]
        return classification_task(tokenizer, [t for t, _ in data], [y for _, y in data],
                                   name="minilm-rt: sentiment")
    if name == "smollm2-135m":
        return next_token_task(tokenizer, natural_sentences(n, seed=seed, source="imdb", max_words=30), seed=seed,
                               name="smollm2: next token")
    raise ValueError(f"unknown model {name!r}; valid: 'minilm-rt', 'smollm2-135m'")


def sentiment_prompt_task(tokenizer, n: int, seed: int = 0, max_words: int = 20) -> Task:
    """:func:`prompt_task` on ``n`` Rotten Tomatoes test sentences of at most ``max_words`` words,
    pre-tokenisation undone (``"it 's good ."`` -> ``"It's good."``), seeded choice."""
    from ..data import _detokenize, rotten_tomatoes

    pool = [(t, y) for t, y in rotten_tomatoes("test", seed=0) if len(t.split()) <= max_words]
    pick = np.random.default_rng(seed).permutation(len(pool))[:n]
    return prompt_task(tokenizer, [_detokenize(pool[i][0]) for i in pick], [pool[i][1] for i in pick],
                       name="smollm2: prompt sentiment")


def plot_conservation(summary: pd.DataFrame, ax=None):
    """Bars of the median ``sum / logit`` (with 95% intervals) per method, one group per task: hatched =
    tokens only, solid = tokens + positions (+ token types).  The dashed line is exact conservation."""
    import matplotlib.pyplot as plt

    tasks, methods = list(summary.task.unique()), [m for pair in PAIRS for m in pair]
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(2.6 + 2.6 * len(tasks), 3.8))
    colors = dict(zip(methods, plt.get_cmap("tab20").colors[:2 * len(PAIRS)]))
    width = 0.8 / (2 * len(methods))
    for t, task in enumerate(tasks):
        for j, m in enumerate(methods):
            for k, part in enumerate(("tokens", "tokens+positions")):
                row = summary[(summary.task == task) & (summary.method == m) & (summary.part == part)]
                if row.empty:
                    continue
                r = row.iloc[0]
                x = t + (2 * j + k - len(methods) + 0.5) * width
                ax.bar(x, r["median"], width, yerr=[[r["median"] - r["low"]], [r["high"] - r["median"]]],
                       color=colors[m], hatch="//" if k == 0 else None, edgecolor="k", lw=0.5,
                       label=f"{m}: {part}" if t == 0 else None)
    ax.axhline(1.0, ls="--", color="k", lw=1)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("median of sum(relevance) / logit")
    ax.set_title("Conservation budget with and without positional relevance")
    ax.legend(frameon=False, fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_profiles(profiles: dict, max_index: int = 12, axes=None):
    """Mean share of the absolute relevance budget carried by each position's *positional* term
    (95% bootstrap band), by index from the start and from the end; one line per model."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = (axes[0].figure, axes) if axes is not None else plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for name, prof in profiles.items():
        start = prof[prof["index"] < max_index]
        end = prof[prof["from_end"] >= -max_index]
        sns.lineplot(data=start, x="index", y="positions", errorbar=("ci", 95), seed=0, marker="o", ax=axes[0], label=name)
        sns.lineplot(data=end, x="from_end", y="positions", errorbar=("ci", 95), seed=0, marker="o", ax=axes[1], label=name)
    axes[0].set(xlabel="position from the start (0 = first token / [CLS])", ylabel="share of |relevance| budget",
                title="positional relevance by absolute position")
    axes[1].set(xlabel="position from the end (-1 = last token / [SEP])", ylabel="share of |relevance| budget",
                title="... and relative to the end")
    return fig


def plot_paired(table: pd.DataFrame, a: str = "pa-lrp", b: str = "attnlrp"):
    """One panel per metric: paired difference ``a - b`` of the areas with its 95% interval, per task
    (the arrow says which direction is better)."""
    import matplotlib.pyplot as plt

    metrics_ = list(HIGHER_IS_BETTER)
    fig, axes = plt.subplots(1, len(metrics_), figsize=(3.2 * len(metrics_), 3.4))
    for ax, metric in zip(axes, metrics_):
        g = table[table.metric == metric].reset_index(drop=True)
        ax.errorbar(g["diff"], range(len(g)), xerr=[g["diff"] - g["low"], g["high"] - g["diff"]],
                    fmt="o", capsize=3)
        ax.axvline(0, color="k", lw=1, ls="--")
        ax.set_yticks(range(len(g)), g["task"])
        better = "higher" if HIGHER_IS_BETTER[metric] else "lower"
        ax.set(title=f"{metric} ({better} is better)", xlabel=f"{a} - {b}")
        ax.invert_yaxis()
    axes[0].set_ylabel("task")
    fig.suptitle(f"Paired difference of perturbation areas, {a} minus {b} (95% paired bootstrap)")
    fig.tight_layout()
    return fig


def take(exp: Explanation, n: int) -> Explanation:
    """The first ``n`` examples of an explanation (every ``[B, S]`` field and per-layer list)."""
    cut = lambda x: None if x is None else [t[:n] for t in x] if isinstance(x, list) else x[:n]  # noqa: E731
    return Explanation(tokens=exp.tokens[:n], positions=cut(exp.positions), layers=cut(exp.layers),
                       logit=exp.logit[:n], target=exp.target[:n], method=exp.method,
                       token_types=cut(exp.token_types), positions_by_layer=cut(exp.positions_by_layer))


def reference_explanation(model, input_ids, attention_mask=None, target=None) -> Explanation:
    """:func:`lrp_utils.reference.rope_reference` (PA-LRP for a rotary TinyTransformer, written
    from the definition) as an :class:`Explanation` (``method="pa-lrp (reference)"``)."""
    from ..reference import rope_reference

    ref = rope_reference(model, input_ids, attention_mask, target)
    by_layer = ref["positions_by_layer"]
    return Explanation(tokens=ref["tokens"], positions=sum(by_layer), layers=None, logit=ref["logit"],
                       target=torch.as_tensor(target if target is not None else -1).reshape(-1),
                       method="pa-lrp (reference)", positions_by_layer=by_layer)
