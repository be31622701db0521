"""Notebook 04: CP-LRP vs AttnLRP, agreement with leave-one-out layer by layer (You et al. 2025,
claim ii): the 2x2 decomposition of the gap, the paired comparison, cost, figures and the trained
keyword TinyTransformer.  The per-layer maps and correlations come from
:mod:`lrp_utils.layer_agreement`::

    df = loo_agreement(model, ids, mask, LOO_METHODS, removal=("mask", "zero"))
    decompose(df)                 # the 2x2 factorial: value share x softmax path
    compare(df)                   # CP-LRP vs AttnLRP: difference and relative improvement

The 2x2 design (:data:`FACTORIAL`) crosses the share of relevance the value path gets at ``A @ V``
(1/2 or 1) with whether the softmax path is propagated: ``attnlrp`` = (1/2, on),
``attnlrp-no-softmax`` = (1/2, off), ``attnlrp-full-value`` = (1, on), ``cp-lrp`` = (1, off).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .. import layer_agreement, metrics
from ..data import keyword_task
from ..layer_agreement import MEASURES, LooMaps, group_keys, per_example, summarise  # noqa: F401 (the notebook's names)
from ..models import TinyConfig, TinyTransformer, accuracy, train

LOO_METHODS = ("gi", "cp-lrp", "attnlrp", "attnlrp-no-softmax", "attnlrp-full-value")
#: method -> (share of relevance into V at A @ V, softmax path propagated?)
FACTORIAL = {"attnlrp": (0.5, True), "attnlrp-no-softmax": (0.5, False),
             "attnlrp-full-value": (1.0, True), "cp-lrp": (1.0, False)}


def loo_agreement(model, input_ids, attention_mask=None, methods=LOO_METHODS, removal=("mask",), layers=None,
                  return_maps: bool = False, **kwargs):
    """:func:`lrp_utils.layer_agreement.loo_agreement` with this notebook's :data:`LOO_METHODS`."""
    return layer_agreement.loo_agreement(model, input_ids, attention_mask, methods, removal, layers, return_maps,
                                         **kwargs)


def _paired(df, methods, measure, by):
    """``{group: [n, len(methods)] array}`` of per-example values, examples with a NaN dropped."""
    keys = [k for k in group_keys(df, by) if k != "method"]
    wide = df[df.method.isin(methods)].pivot_table(index=[*keys, "example"], columns="method",
                                                   values=measure, dropna=False)
    wide = wide.reindex(columns=list(methods)).dropna()
    return keys, {k: g.to_numpy() for k, g in wide.groupby(level=list(range(len(keys))), sort=True)}


def _diff_and_ratio(x):
    """``[B, n, 2]`` resamples -> ``[B, 2]``: difference of the column means and it in % of |col 1|."""
    d = x[..., 0].mean(1) - x[..., 1].mean(1)
    return np.stack([d, 100 * d / np.abs(x[..., 1].mean(1))], -1)


def _factorial(x):
    """``[B, n, 4]`` resamples (a, b, c, d: see :func:`decompose`) -> ``[B, 4]``: gap and effects."""
    a, b, c, d = np.moveaxis(x.mean(1), -1, 0)
    return np.stack([d - a, ((c - a) + (d - b)) / 2, ((b - a) + (d - c)) / 2, (d - c) - (b - a)], -1)


def compare(df: pd.DataFrame, method: str = "cp-lrp", baseline: str = "attnlrp", measure: str = "pearson",
            by=None, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """``method`` vs ``baseline`` per group, on examples where both are defined: both means,
    ``diff`` (paired bootstrap CI) and ``rel_pct`` = 100 * diff / |baseline mean| (bootstrap CI of
    the ratio)."""
    keys, groups = _paired(df, (method, baseline), measure, by)
    out = []
    for key, v in groups.items():
        est, low, high = metrics.bootstrap(v, _diff_and_ratio, n_boot, seed=seed)
        out.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,))), "measure": measure, method: v[:, 0].mean(),
                    baseline: v[:, 1].mean(), "diff": est[0], "diff_ci_low": low[0], "diff_ci_high": high[0],
                    "rel_pct": est[1], "rel_ci_low": low[1], "rel_ci_high": high[1], "n": len(v)})
    return pd.DataFrame(out)


def decompose(df: pd.DataFrame, measure: str = "pearson", by=None, n_boot: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """Split the gap ``cp-lrp - attnlrp`` with the 2x2 design (a = attnlrp, b = no-softmax,
    c = full-value, d = cp-lrp), per group, on examples where all four are defined:

    * ``value`` = ((c - a) + (d - b)) / 2, the main effect of giving V the full relevance;
    * ``softmax`` = ((b - a) + (d - c)) / 2, the main effect of cutting the softmax path;
    * ``interaction`` = (d - c) - (b - a); and ``gap`` = d - a = value + softmax exactly.

    One row per group and component with the mean and a 95% paired bootstrap CI."""
    keys, groups = _paired(df, tuple(FACTORIAL), measure, by)
    out = []
    for key, v in groups.items():
        est, low, high = metrics.bootstrap(v, _factorial, n_boot, seed=seed)
        for i, comp in enumerate(("gap", "value", "softmax", "interaction")):
            out.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,))), "measure": measure, "component": comp,
                        "mean": est[i], "ci_low": low[i], "ci_high": high[i], "n": len(v)})
    return pd.DataFrame(out)


def timing_table(maps_by_model: dict) -> pd.DataFrame:
    """Per model: total seconds (wall and CPU) of all explanations vs all LOO runs, and the ratio."""
    rows = []
    for name, maps in maps_by_model.items():
        t = maps.timing.groupby("kind")[["wall_s", "cpu_s"]].sum()
        rows.append({"model": name, "examples": len(maps.target), "loo_layers": len(maps.layers),
                     "methods": int((maps.timing.kind == "explain").sum()),
                     "removals": int((maps.timing.kind == "loo").sum()),
                     "explain_wall_s": t.wall_s["explain"], "loo_wall_s": t.wall_s["loo"],
                     "explain_cpu_s": t.cpu_s["explain"], "loo_cpu_s": t.cpu_s["loo"],
                     "loo / explain (wall)": t.wall_s["loo"] / t.wall_s["explain"]})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- figures
def _offsets(layers, k: int, n: int, frac: float = 0.09) -> np.ndarray:
    """x positions of the ``k``-th of ``n`` series drawn at ``layers``: shifted by a small fraction of
    the layer spacing, so that no line hides another."""
    layers = np.asarray(layers, dtype=float)
    step = np.diff(np.unique(layers)).min() if len(np.unique(layers)) > 1 else 1.0
    return layers + (k - (n - 1) / 2) * frac * step


def plot_layers(summary: pd.DataFrame, measure: str = "pearson", removal: str = "mask", methods=LOO_METHODS,
                models=None):
    """Mean correlation vs layer with 95% CIs, one series per method (palette colour and marker, a
    small x offset each), one panel per model, x ticks at the layers measured, one legend
    (:func:`plot_panels`; the two AttnLRP ablations dashed)."""
    return plot_panels(summary[summary.removal == removal], measure, f"{measure}_ci_low", f"{measure}_ci_high",
                       "method", methods, models, ylabel=f"mean {measure} r with layer-l LOO",
                       title=f"Agreement of layer-l relevance with layer-l LOO ({removal} removal, 95% CI)",
                       dashed=("attnlrp-no-softmax", "attnlrp-full-value"))


def plot_panels(df: pd.DataFrame, y: str, low: str, high: str, hue: str, hue_order, models=None,
                ylabel: str = "", title: str = "", dashed=()):
    """One panel per model: ``y`` vs layer with ``[low, high]`` error bars, one series per ``hue``
    value (palette colours for methods, :data:`lrp_utils.palette.OTHER_COLORS` otherwise; small x
    offsets), x ticks at the data's layers, a grey line at 0, one legend. Returns the Figure."""
    import matplotlib.pyplot as plt

    from ..palette import figure_legend, label_styles

    df = df.dropna(subset=[y])
    models = list(models or df.model.unique())
    styles = label_styles([str(v) for v in hue_order])
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.5), squeeze=False)
    for ax, name in zip(axes[0], models):
        g0 = df[df.model == name]
        for k, value in enumerate(hue_order):
            g = g0[g0[hue] == value].sort_values("layer")
            st = styles[str(value)]
            ax.errorbar(_offsets(g.layer, k, len(hue_order)), g[y], yerr=[g[y] - g[low], g[high] - g[y]],
                        color=st["color"], marker=st["marker"] if st["marker"] != "." else "o", ms=4, lw=1.3,
                        capsize=0, elinewidth=0.9, label=str(value), ls="--" if value in dashed else "-")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(sorted(g0.layer.unique()))
        ax.set(xlabel="layer l (0 = embeddings)", ylabel=ylabel, title=name)
    figure_legend(fig, [str(v) for v in hue_order])
    fig.suptitle(title, y=1.08)
    fig.tight_layout()
    return fig


def plot_decomposition(dec: pd.DataFrame, measure: str = "pearson", removal: str = "mask", models=None):
    """The 2x2 decomposition of the CP-LRP - AttnLRP gap per layer (see :func:`decompose`)."""
    d = dec[(dec.removal == removal) & (dec.measure == measure)]
    return plot_panels(d, "mean", "ci_low", "ci_high", "component", ("gap", "value", "softmax", "interaction"),
                       models, ylabel=f"effect on mean {measure} r",
                       title=f"Where the CP-LRP vs AttnLRP gap comes from ({removal} removal, 95% CI)")


def plot_improvement(comp: pd.DataFrame, n_layers: dict, removal: str = "mask", models=None):
    """CP-LRP minus AttnLRP (mean correlation) per layer with paired 95% CIs, one panel per model;
    the middle-to-late layers (``ceil(L/3) <= l < L``, ``n_layers[model] = L``) shaded.  Differences
    only: a ratio to AttnLRP's correlation explodes where that is near 0."""
    import math

    import matplotlib.pyplot as plt

    from ..palette import OTHER_COLORS, figure_legend, method_color

    c = comp[comp.removal == removal].dropna(subset=["diff"])
    models = list(models or c.model.unique())
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
    for ax, name in zip(axes[0], models):
        g = c[c.model == name].sort_values("layer")
        L = n_layers[name]
        ax.axvspan(math.ceil(L / 3) - 0.5, L - 0.5, color=OTHER_COLORS[1], alpha=0.3, lw=0,
                   label="middle-to-late layers")
        ax.errorbar(g.layer, g["diff"], yerr=[g["diff"] - g.diff_ci_low, g.diff_ci_high - g["diff"]],
                    color=method_color("cp-lrp"), marker="s", ms=4, lw=1.3, capsize=0, elinewidth=0.9,
                    label="r(CP-LRP) - r(AttnLRP), paired 95% CI")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(sorted(g.layer.unique()))
        ax.set_xlim(min(g.layer) - 0.7, max(g.layer) + 0.7)
        ax.set(xlabel="layer l", ylabel=f"difference of mean {c.measure.iloc[0]} r", title=name)
    figure_legend(fig)
    fig.suptitle(f"CP-LRP minus AttnLRP: agreement with layer-l LOO ({removal} removal)", y=1.1)
    fig.tight_layout()
    return fig


def scatter_outliers(x, y, k: int = 2) -> list:
    """Indices of the ``k`` points of ``(x, y)`` farthest from their least-squares line (in units
    of the residual spread); all points when there are at most ``k``."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) <= k:
        return list(range(len(x)))
    A = np.stack([x, np.ones_like(x)], 1)
    res = y - A @ np.linalg.lstsq(A, y, rcond=None)[0]
    return list(np.argsort(-np.abs(res), kind="stable")[:k])


def plot_scatter(maps: LooMaps, example: int, layers, methods=("attnlrp", "cp-lrp"), removal: str = "mask",
                 title: str | None = None, tokens=None, n_labels: int = 2):
    """LOO (x) vs relevance (y) of one example at a few layers: rows = methods (palette colours),
    columns = layers; each panel's ``n_labels`` points farthest from its regression line are
    labelled with their token (``tokens``: the example's tokens, one per position)."""
    import textwrap

    import matplotlib.pyplot as plt

    from ..palette import figure_legend, method_style

    fig, axes = plt.subplots(len(methods), len(layers), figsize=(3.3 * len(layers), 2.9 * len(methods)),
                             squeeze=False)
    for j, layer in enumerate(layers):
        x = maps.loo[removal][maps.layers.index(layer), example]
        ok = torch.isfinite(x)
        pos = ok.nonzero()[:, 0]
        for i, name in enumerate(methods):
            y = maps.relevance[name][layer, example]
            p, s = metrics.correlations(y, x, ok)
            ax = axes[i][j]
            st = method_style(name)
            ax.scatter(x[ok], y[ok], s=16, alpha=0.85, color=st["color"], marker=st["marker"], label=name)
            if tokens is not None:
                for q in scatter_outliers(x[ok].numpy(), y[ok].numpy(), n_labels):
                    ax.annotate(str(tokens[int(pos[q])]), (float(x[ok][q]), float(y[ok][q])), fontsize=8,
                                xytext=(3, 3), textcoords="offset points")
            ax.set_title(f"layer {layer}: r = {p:.2f}, rho = {s:.2f}", fontsize=9)
            ax.set_xlabel(f"LOO ({removal}) at layer {layer}")
            ax.set_ylabel(f"{name} relevance, layer {layer}", fontsize=9)
    figure_legend(fig, list(methods))
    head = title or f"LOO vs relevance, example {example}"
    fig.suptitle("\n".join(textwrap.wrap(head, 90)), y=1.1)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- the trained tiny model
def train_keyword_tiny(n_layers: int = 4, seq_len: int = 20, n_train: int = 3000, n_test: int = 200,
                       epochs: int = 8, seed: int = 0, progress: bool = False):
    """A softmax-attention :class:`~lrp_utils.models.TinyTransformer` ([CLS] read-out, learned
    positions, LayerNorm, GELU MLP) trained deterministically on :func:`lrp_utils.data.keyword_task`.

    Returns ``(model, test, accuracy)``: the float32 model in eval mode, the held-out
    :class:`~lrp_utils.data.KeywordTask` batch (``n_test`` sequences, another seed) and its accuracy."""
    cfg = TinyConfig(vocab_size=32, d_model=32, n_layers=n_layers, n_heads=4, d_ff=64, max_len=seq_len)
    torch.manual_seed(seed)
    model = TinyTransformer(cfg).reset_parameters(0.1, seed=seed)
    data = keyword_task(n_train, seq_len=seq_len, vocab_size=32, seed=seed)
    train(model, data.input_ids, data.labels, epochs=epochs, lr=3e-3, seed=seed, progress=progress)
    test = keyword_task(n_test, seq_len=seq_len, vocab_size=32, seed=seed + 10_000)
    return model.eval(), test, accuracy(model, test.input_ids, test.labels)
