"""Notebook 05: positional-aware LRP (Bakish et al. 2025, PA-LRP): conservation budgets, where
positional relevance sits, and perturbation faithfulness of PA-LRP against AttnLRP.

Pipeline: a :class:`lrp_utils.tasks.Task` (:func:`default_task`, :func:`sentiment_prompt_task`) ->
``task.explain(model, methods)`` (:func:`lrp_utils.runner.explain_many`) -> tidy tables from
:func:`conservation_frame`, :func:`position_profile`, :func:`layer_profile` and :func:`faithfulness`
(+ :func:`paired_table`).  Perturbations use the ``"mask"`` operator of
:mod:`lrp_utils.perturbation`: removing a token removes the whole (token, position) pair, the unit
PA-LRP's combined map ranks.  Shapes: ``n`` examples, ``S`` positions.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .. import metrics, perturbation, tasks
from ..data import _detokenize, natural_sentences, rotten_tomatoes
from ..explanation import Explanation
from ..reference import rope_reference

#: method pairs compared throughout: (without positions, with positions)
PAIRS = (("attnlrp", "pa-lrp"), ("cp-lrp", "pa-cp-lrp"))
#: the perturbation metrics of this notebook (see :mod:`lrp_utils.perturbation`)
METRICS = perturbation.PROTOCOLS["insertion"]


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
            rows.append((task, m, part, *metrics.bootstrap(v, "median", n_boot, seed=seed), float(v.mean()), len(v)))
    return pd.DataFrame(rows, columns=["task", "method", "part", "median", "low", "high", "mean", "n"])


# --------------------------------------------------------------------------------- profiles
def position_profile(exp: Explanation, attention_mask, max_index: int = 12) -> pd.DataFrame:
    """Where relevance sits, per example and position, as shares of the example's absolute budget
    ``B = sum_i (|R_tok,i| + P_i + |R_type,i|)`` with ``P_i`` the combined map's positional term.

    Rows: ``example``, ``index`` (from the start, 0-based), ``from_end`` (-1 = last token),
    ``positions`` (``P_i / B``), ``positions_signed`` (``R_pos,i / B``), ``tokens`` (``|R_tok,i| / B``).
    Only positions with ``index < max_index`` or ``from_end >= -max_index`` are kept.
    """
    mask = attention_mask.bool().cpu()
    P = exp.position_magnitude()
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
            "PA-LRP positions": pa.position_magnitude()[b, :n]}


# --------------------------------------------------------------------------------- faithfulness
def faithfulness(model, task: tasks.Task, rankings: dict, fractions=metrics.DEFAULT_FRACTIONS,
                 max_tokens: int = 4096, n_boot: int = 1000, seed: int = 0, progress: bool = True):
    """Perturbation faithfulness (:data:`METRICS`, on ``task.valid`` positions, ``"mask"``
    removal, the task's target and contrast) of each ranking ``{name: [n, S] relevance}``.
    Returns ``(areas, curves)`` of :func:`lrp_utils.perturbation.faithfulness` with a ``task``
    column first; ``areas.attrs["n_forward"]`` counts the distinct perturbed forwards."""
    scorer = perturbation.RemovalScorer.for_task(model, task, max_tokens, progress)
    res = perturbation.faithfulness(scorer, rankings, task.valid, METRICS, fractions, n_boot, seed)
    areas, curves = (df.assign(task=task.name)[["task", *df.columns]] for df in (res.areas, res.curves))
    areas.attrs["n_forward"] = res.n_forward
    return areas, curves


def paired_table(areas: pd.DataFrame, a: str = "pa-lrp", b: str = "attnlrp", n_boot: int = 1000,
                 seed: int = 0) -> pd.DataFrame:
    """Per (task, metric): mean area of ``a`` and ``b``, the paired difference ``a - b`` with a 95%
    paired bootstrap interval and a verdict (:func:`lrp_utils.perturbation.paired_differences`)."""
    d = perturbation.paired_differences(areas, b, [a], ("task", "metric"), n_boot, seed)
    return d.rename(columns={"mean": a, "reference": b})[["task", "metric", "better", a, b, "diff", "low", "high",
                                                          "verdict", "n"]]


def budget_table(model, input_ids, attention_mask, methods=("attnlrp", "pa-lrp"), batch_size: int = 16,
                 progress: bool = True) -> pd.DataFrame:
    """Notebook 05's conservation budget over a dataset slice: :func:`conservation_frame` of
    ``methods`` (the first explains the model's argmax, the others the same targets), one row per
    (method, example)."""
    task = tasks.inputs_task(model, input_ids, attention_mask)
    return conservation_frame(task.explain(model, methods, batch_size, progress), task.name)


def faithfulness_table(model, input_ids, attention_mask, methods=("attnlrp", "pa-lrp"), batch_size: int = 16,
                       fractions=metrics.DEFAULT_FRACTIONS, max_tokens: int = 4096, progress: bool = True
                       ) -> pd.DataFrame:
    """Notebook 05's perturbation faithfulness over a dataset slice: each method's ranking (token
    relevance, or the combined token + position map where the method has positions) scored by
    :func:`faithfulness`; returns its ``areas`` table (one row per method, metric, example)."""
    task = tasks.inputs_task(model, input_ids, attention_mask)
    exps = task.explain(model, methods, batch_size, progress)
    task = task.with_target(exps[list(methods)[0]].target)
    rankings = {m: e.combined() if e.positions is not None else e.tokens for m, e in exps.items()}
    return faithfulness(model, task, rankings, fractions, max_tokens, n_boot=1, progress=progress)[0]


# --------------------------------------------------------------------------------- data and plots
def default_task(name: str, tokenizer, n: int, seed: int = 0) -> tasks.Task:
    """The notebook's main task of a real model: ``"minilm-rt"``: sentiment of the first ``n``
    Rotten Tomatoes *test* sentences (never seen in fine-tuning); ``"smollm2-135m"``: next-token
    prediction on prefixes of ``n`` natural IMDB sentences (8-30 words, original casing)."""
    if name == "minilm-rt":
        data = rotten_tomatoes("test", seed=0)[:n]
        return tasks.classification_task(tokenizer, [t for t, _ in data], [y for _, y in data],
                                   name="minilm-rt: sentiment")
    if name == "smollm2-135m":
        return tasks.next_token_task(tokenizer, natural_sentences(n, seed=seed, source="imdb", max_words=30), seed=seed,
                               name="smollm2: next token")
    raise ValueError(f"unknown model {name!r}; valid: 'minilm-rt', 'smollm2-135m'")


def sentiment_prompt_task(tokenizer, n: int, seed: int = 0, max_words: int = 20) -> tasks.Task:
    """:func:`lrp_utils.tasks.prompt_task` on ``n`` Rotten Tomatoes test sentences of at most ``max_words`` words,
    pre-tokenisation undone (``"it 's good ."`` -> ``"It's good."``), seeded choice."""
    pool = [(t, y) for t, y in rotten_tomatoes("test", seed=0) if len(t.split()) <= max_words]
    pick = np.random.default_rng(seed).permutation(len(pool))[:n]
    return tasks.prompt_task(tokenizer, [_detokenize(pool[i][0]) for i in pick], [pool[i][1] for i in pick],
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

    metrics_ = list(METRICS)
    fig, axes = plt.subplots(1, len(metrics_), figsize=(3.2 * len(metrics_), 3.4))
    for ax, metric in zip(axes, metrics_):
        g = table[table.metric == metric].reset_index(drop=True)
        ax.errorbar(g["diff"], range(len(g)), xerr=[g["diff"] - g["low"], g["high"] - g["diff"]],
                    fmt="o", capsize=3)
        ax.axvline(0, color="k", lw=1, ls="--")
        ax.set_yticks(range(len(g)), g["task"])
        better = "higher" if perturbation.HIGHER_IS_BETTER[metric] else "lower"
        ax.set(title=f"{metric} ({better} is better)", xlabel=f"{a} - {b}")
        ax.invert_yaxis()
    axes[0].set_ylabel("task")
    fig.suptitle(f"Paired difference of perturbation areas, {a} minus {b} (95% paired bootstrap)")
    fig.tight_layout()
    return fig


def reference_explanation(model, input_ids, attention_mask=None, target=None) -> Explanation:
    """:func:`lrp_utils.reference.rope_reference` (PA-LRP for a rotary TinyTransformer, written
    from the definition) as an :class:`Explanation` (``method="pa-lrp (reference)"``)."""
    ref = rope_reference(model, input_ids, attention_mask, target)
    by_layer = ref["positions_by_layer"]
    return Explanation(tokens=ref["tokens"], positions=sum(by_layer), layers=None, logit=ref["logit"],
                       target=torch.as_tensor(target if target is not None else -1).reshape(-1),
                       method="pa-lrp (reference)", positions_by_layer=by_layer)
