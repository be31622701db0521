"""Notebook 05: positional-aware LRP (Bakish et al. 2025, PA-LRP): conservation budgets, where
positional relevance sits, and perturbation faithfulness of PA-LRP against AttnLRP.

Pipeline: a :class:`lrp_utils.tasks.Task` (:func:`default_task`: MiniLM-RT sentiment, SmolLM2-RT
sentiment, SmolLM2 next token where the model is right) -> ``task.explain(model, methods)``
(:func:`lrp_utils.runner.explain_many`) -> tidy tables from :func:`conservation_frame`,
:func:`position_profile`, :func:`layer_profile`, :func:`sink_table` and :func:`faithfulness` (+
:func:`paired_table`, and :func:`first_position_kept` for the same test with the attention sink held
in place).  Perturbations use the ``"mask"`` operator of :mod:`lrp_utils.perturbation`: removing a
token removes the whole (token, position) pair, the unit PA-LRP's combined map ranks.  The claims of
notebook 05 (:func:`claims_from_csvs`) and the README caption are computed from the figure CSVs.
Shapes: ``n`` examples, ``S`` positions.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from .. import metrics, perturbation, tasks
from ..adapters import get_adapter
from ..data import detokenize, natural_sentences, rotten_tomatoes
from ..explanation import Explanation
from ..loo import removable
from ..palette import figure_legend, method_color
from ..reference import rope_reference

#: method pairs compared throughout: (without positions, with positions)
PAIRS = (("attnlrp", "pa-lrp"), ("cp-lrp", "pa-cp-lrp"))
#: the perturbation metrics of this notebook (see :mod:`lrp_utils.perturbation`), all scored on the
#: log-probability of the explained class / token (``LeRF-MoRF`` is added to the areas)
METRICS = ("AUAC", "MoRF", "LeRF")
SCORE = "logprob"
#: the CSVs the claims are computed from
CONSERVATION_CSV, FAITHFULNESS_CSV, SINK_CSV = "05_conservation.csv", "05_faithfulness.csv", "05_sink.csv"


# --------------------------------------------------------------------------------- conservation
def conservation_frame(exps: dict, task: str = "", model: str = "", pe: str = "") -> pd.DataFrame:
    """One row per (method, example): ``task``, ``model``, ``pe`` (the kind of position encoding),
    ``logit``, the sums of ``tokens``, ``positions``, ``types`` (0 where the method has none),
    ``ratio_tokens = tokens / logit`` and ``ratio_total = (tokens + positions + types) / logit``."""
    rows = []
    for m, e in exps.items():
        z = e.logit.double()
        tok = e.tokens.sum(-1)
        pos = e.positions.sum(-1) if e.positions is not None else torch.zeros_like(z)
        typ = e.token_types.sum(-1) if e.token_types is not None else torch.zeros_like(z)
        rows.append(pd.DataFrame({"task": task, "model": model, "pe": pe, "method": m, "example": np.arange(len(z)), "logit": z.numpy(),
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
                 max_tokens: int = 4096, n_boot: int = 1000, seed: int = 0, progress: bool = True, scorer=None):
    """Perturbation faithfulness (:data:`METRICS` scored on :data:`SCORE`, on ``task.valid``
    positions, ``"mask"`` removal, the task's target) of each ranking ``{name: [n, S] relevance}``.
    ``scorer``: a :class:`lrp_utils.perturbation.RemovalScorer` of the same inputs and targets to
    reuse (its cached removal sets are not run again), e.g. that of the task before
    :func:`first_position_kept`. Returns ``(areas, curves)`` of
    :func:`lrp_utils.perturbation.faithfulness` with a ``task`` column first;
    ``areas.attrs["n_forward"]`` counts the distinct perturbed forwards this call ran."""
    scorer = scorer or perturbation.RemovalScorer.for_task(model, task, max_tokens, progress)
    before = scorer.n_forward
    res = perturbation.faithfulness(scorer, rankings, task.valid, METRICS, fractions, n_boot, seed, SCORE)
    areas, curves = (df.assign(task=task.name)[["task", *df.columns]] for df in (res.areas, res.curves))
    areas.attrs["n_forward"] = res.n_forward - before
    return areas, curves


def first_position_kept(task: tasks.Task) -> tasks.Task:
    """The same task with the first position (index 0: a causal LM's attention sink) never removed:
    ``valid[:, 0] = False``; the name gains ``" · first position kept"``."""
    valid = task.valid.clone()
    valid[:, 0] = False
    return replace(task, valid=valid, name=f"{task.name} · first position kept")


# --------------------------------------------------------------------------------- attention sink
def top_position(relevance, valid) -> torch.Tensor:
    """``[n]`` index of the most relevant (largest signed relevance) of the ``valid [n, S]``
    positions of each row of ``relevance [n, S]``; ties go to the first. Rows need a valid position."""
    valid = torch.as_tensor(valid).bool()
    if not bool(valid.any(1).all()):
        raise ValueError("every row needs at least one valid position")
    R = torch.as_tensor(relevance).double()
    return torch.where(valid, R, torch.full_like(R, -np.inf)).argmax(1)


def sink_table(rankings: dict, valid, task: str = "", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per ranking ``{name: [n, S]}``: the share of inputs whose most relevant valid position
    (:func:`top_position`) is the first position (index 0, the attention sink of a causal LM) with a
    95% percentile-bootstrap interval. Columns ``task, method, share, low, high, n``."""
    rows = []
    for m, R in rankings.items():
        first = (top_position(R, valid) == 0).double().numpy()
        rows.append((task, m, *metrics.bootstrap(first, "mean", n_boot, seed=seed), len(first)))
    return pd.DataFrame(rows, columns=["task", "method", "share", "low", "high", "n"])


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
def default_task(name: str, model, tokenizer, n: int, seed: int = 0, n_texts: int | None = None) -> tasks.Task:
    """The notebook's task of a real model, ``n`` examples:

    * ``"minilm-rt"``: sentiment of the first ``n`` Rotten Tomatoes *test* sentences (never seen in
      fine-tuning), as stored (lower-cased, pre-tokenised: how MiniLM-RT was trained).
    * ``"smollm2-rt"``: the same sentences **detokenised** (:func:`lrp_utils.data.detokenize`, how its
      head was trained); ``valid`` = every token but padding and the read-out (last) token.
    * ``"smollm2-135m"``: :func:`lrp_utils.tasks.competent_next_token_task` on ``n_texts`` (default
      ``n + n // 4``) natural IMDB sentences of 8-30 words, the first ``n`` kept prefixes (``meta``:
      the counts, ``n_texts`` and ``kept``); raises if fewer than ``n`` qualify.
    """
    if name in ("minilm-rt", "smollm2-rt"):
        data = rotten_tomatoes("test", seed=0)[:n]
        texts = [t if name == "minilm-rt" else detokenize(t) for t, _ in data]
        task = tasks.classification_task(tokenizer, texts, [y for _, y in data], name=f"{name}: sentiment")
        return task if name == "minilm-rt" else replace(
            task, valid=task.valid & removable(get_adapter(model), task.attention_mask))
    if name == "smollm2-135m":
        texts = natural_sentences(n_texts or n + n // 4, seed=seed, source="imdb", max_words=30)
        task = tasks.competent_next_token_task(model, tokenizer, texts, seed=seed,
                                               name="smollm2-135m: next token (model right)")
        if len(task) < n:
            raise ValueError(f"only {len(task)} of {len(texts)} texts have a prefix the model gets right; "
                             f"need {n}: raise n_texts")
        task = task.subset(n)
        task.meta.update(n_texts=len(texts), kept=n)
        return task
    raise ValueError(f"unknown model {name!r}; valid: 'minilm-rt', 'smollm2-rt', 'smollm2-135m'")


def plot_conservation(summary: pd.DataFrame, ax=None):
    """Bars of the median ``sum / logit`` (with 95% intervals) per method, one group per task: hatched =
    tokens only, solid = tokens + positions (+ token types); method colours of :mod:`lrp_utils.palette`,
    one legend.  The dashed line is exact conservation."""
    import matplotlib.pyplot as plt

    names, methods = list(summary.task.unique()), [m for pair in PAIRS for m in pair]
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(2.2 + 3.0 * len(names), 4.0))
    width = 0.8 / (2 * len(methods))
    for t, task in enumerate(names):
        for j, m in enumerate(methods):
            for k, part in enumerate(("tokens", "tokens+positions")):
                row = summary[(summary.task == task) & (summary.method == m) & (summary.part == part)]
                if row.empty or (k == 1 and m in {w for w, _ in PAIRS}):  # no positions: total = tokens
                    continue
                r = row.iloc[0]
                ax.bar(t + (2 * j + k - len(methods) + 0.5) * width, r["median"], width,
                       yerr=[[r["median"] - r["low"]], [r["high"] - r["median"]]], capsize=2,
                       color=method_color(m), hatch="//" if k == 0 else None, edgecolor="k", lw=0.5,
                       label=f"{m}: {part}")
    ax.axhline(1.0, ls="--", color="k", lw=1)
    ax.set_xticks(range(len(names)), [n.replace(": ", ":\n", 1) for n in names])
    ax.set(xlabel="model: task", ylabel="median of sum(relevance) / logit")
    ax.set_title("Conservation budget with and without positional relevance", pad=48)
    figure_legend(fig, ncol=4, fontsize=8)
    return fig


def plot_profiles(profiles: dict, layers: pd.DataFrame | None = None, max_index: int = 12):
    """Mean share of the absolute relevance budget carried by each position's *positional* term
    (95% bootstrap band), by index from the start and from the end, one line per task; with
    ``layers`` (:func:`layer_profile` rows with a ``task`` column) a third panel splits the RoPE
    models' positional relevance over layers. One colour per task in every panel, one legend."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    colors = dict(zip(profiles, sns.color_palette("colorblind", len(profiles))))
    fig, axes = plt.subplots(1, 2 if layers is None else 3, figsize=(10 if layers is None else 15, 3.8),
                             gridspec_kw={"width_ratios": [1, 1] if layers is None else [1, 1, 1.1]})
    for name, prof in profiles.items():
        for ax, part in zip(axes, (prof[prof["index"] < max_index], prof[prof["from_end"] >= -max_index])):
            sns.lineplot(data=part, x="index" if ax is axes[0] else "from_end", y="positions", errorbar=("ci", 95),
                         seed=0, marker="o", ax=ax, label=name, color=colors[name])
    axes[0].set(xlabel="position from the start (0 = first token / [CLS])", ylabel="share of |relevance| budget",
                title="positional relevance by absolute position")
    axes[1].set(xlabel="position from the end (-1 = last token / [SEP])", ylabel="share of |relevance| budget",
                title="... and relative to the end")
    if layers is not None:
        sns.barplot(data=layers, x="layer", y="share", hue="task", errorbar=("ci", 95), seed=0, ax=axes[2],
                    palette=colors, saturation=1, err_kws={"linewidth": 0.8})
        axes[2].set(title="RoPE models: positional relevance by layer", xlabel="layer", ylabel="share of sum |R_pos|")
        axes[2].tick_params(axis="x", labelsize=7, rotation=90)
    fig.tight_layout()
    figure_legend(fig, list(profiles), bbox_to_anchor=(0.5, 1.0))
    return fig


def plot_paired(table: pd.DataFrame, a: str = "pa-lrp", b: str = "attnlrp"):
    """One panel per metric: paired difference ``a - b`` of the areas with its 95% interval, one
    row per task (shared task labels on the left; the title says which direction is better)."""
    import textwrap

    import matplotlib.pyplot as plt

    names = list(table.task.unique())
    panels = list(table.metric.unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels) + 3.2, 0.55 * len(names) + 1.9),
                             sharey=True, squeeze=False)
    for ax, metric in zip(axes[0], panels):
        g = table[table.metric == metric].set_index("task").reindex(names)
        y = np.arange(len(names))
        ax.errorbar(g["diff"], y, xerr=[g["diff"] - g["low"], g["high"] - g["diff"]], fmt="o", ms=4, lw=1.8,
                    capsize=4, color=method_color(a), label=f"{a} - {b}")
        ax.axvline(0, color="k", lw=1, ls="--")
        span = float(np.nanmax(np.abs(g[["low", "high"]].to_numpy()))) if len(g) else 1.0
        ax.set_xlim(-1.15 * span, 1.15 * span)
        better = "higher" if perturbation.HIGHER_IS_BETTER[metric] else "lower"
        ax.set(title=f"{metric}\n({better} is better)", xlabel=f"{a} - {b}")
        ax.tick_params(axis="x", labelsize=8)
    axes[0, 0].set_yticks(range(len(names)), [textwrap.fill(n, 30) for n in names], fontsize=8)
    axes[0, 0].set_ylabel("task")
    axes[0, 0].invert_yaxis()
    fig.suptitle(f"Paired difference of perturbation areas, {a} minus {b} (95% paired bootstrap)", y=1.0)
    fig.tight_layout()
    return fig


def plot_heatmaps(shown: list, tokens: dict, rows: dict):
    """Stacked :func:`lrp_utils.viz.token_heatmap` panels, one per ``(task, example)`` of ``shown``
    (``tokens[key]`` the token strings, ``rows[key]`` the :func:`display_rows`), every row scaled by
    its own max |R|, with ONE colour bar for the figure (the panels share the scale [-1, 1])."""
    import matplotlib.pyplot as plt

    from .. import viz

    fig, axes = plt.subplots(len(shown), 1, figsize=(13, 2.3 * len(shown)), layout="constrained", squeeze=False)
    image = None
    for ax, key in zip(axes[:, 0], shown):
        viz.token_heatmap(tokens[key], rows[key], ax=ax, title=f"{key[0]}, example {key[1]}")
        image = ax.images[0]
        image.colorbar.remove()
        ax.set_ylabel("")
    fig.colorbar(image, ax=axes[:, 0].tolist(), label="relevance / row max |R|", shrink=0.4, aspect=30, pad=0.01)
    return fig


def reference_explanation(model, input_ids, attention_mask=None, target=None) -> Explanation:
    """:func:`lrp_utils.reference.rope_reference` (PA-LRP for a rotary TinyTransformer, written
    from the definition) as an :class:`Explanation` (``method="pa-lrp (reference)"``)."""
    ref = rope_reference(model, input_ids, attention_mask, target)
    by_layer = ref["positions_by_layer"]
    return Explanation(tokens=ref["tokens"], positions=sum(by_layer), layers=None, logit=ref["logit"],
                       target=torch.as_tensor(target if target is not None else -1).reshape(-1),
                       method="pa-lrp (reference)", positions_by_layer=by_layer)
