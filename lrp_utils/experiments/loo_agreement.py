"""Layer-by-layer agreement of relevance with leave-one-out (You et al. 2025, claim ii).

For every layer ``l`` and method, the residual-stream relevance ``Explanation.layers[l]`` (summed
over features, ``[B, S]``) is correlated per example with layer-``l`` LOO (:func:`lrp_utils.loo_by_layer`,
``removal="mask"`` or ``"zero"``), over the positions where LOO is defined (not padding, not the
read-out position). Pipeline::

    maps = compute_maps(model, ids, mask, methods, removal=("mask", "zero"))  # batched, length-sorted
    df = per_example(maps)        # one row per example x layer x method x removal
    summ = summarise(df)          # mean Pearson / Spearman with 95% bootstrap CIs
    decompose(df)                 # the 2x2 factorial: value share x softmax path
    compare(df)                   # CP-LRP vs AttnLRP: difference and relative improvement

:func:`loo_agreement` runs the first two steps. The 2x2 design (:data:`FACTORIAL`) crosses the share
of relevance the value path gets at ``A @ V`` (1/2 or 1) with whether the softmax path is propagated:
``attnlrp`` = (1/2, on), ``attnlrp-no-softmax`` = (1/2, off), ``attnlrp-full-value`` = (1, on),
``cp-lrp`` = (1, off). Shapes: ``B`` examples, ``S`` positions, ``L`` blocks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import metrics
from ..adapters import get_adapter
from ..batching import length_batches
from ..engine import explain
from ..loo import loo_by_layer

METHODS = ("gi", "cp-lrp", "attnlrp", "attnlrp-no-softmax", "attnlrp-full-value")
#: method -> (share of relevance into V at A @ V, softmax path propagated?)
FACTORIAL = {"attnlrp": (0.5, True), "attnlrp-no-softmax": (0.5, False),
             "attnlrp-full-value": (1.0, True), "cp-lrp": (1.0, False)}
MEASURES = ("pearson", "spearman")


@dataclass
class LooMaps:
    """Raw maps of one run: ``relevance[method]`` ``[L+1, B, S]`` (0 at padding), ``loo[removal]``
    ``[len(layers), B, S]`` (NaN at padding and the read-out position), the LOO ``layers``,
    ``target`` / ``logit`` ``[B]``, and ``timing`` (one row per method / removal: wall and CPU s)."""

    relevance: dict
    loo: dict
    layers: list
    attention_mask: torch.Tensor
    target: torch.Tensor
    logit: torch.Tensor
    timing: pd.DataFrame


class _Clock:
    """Accumulates wall and process-CPU seconds per key."""

    def __init__(self):
        self.wall, self.cpu = {}, {}

    def __call__(self, key, fn):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        self.wall[key] = self.wall.get(key, 0.0) + time.perf_counter() - w
        self.cpu[key] = self.cpu.get(key, 0.0) + time.process_time() - c
        return out


def compute_maps(model, input_ids, attention_mask=None, methods=METHODS, removal=("mask",), layers=None,
                 target=None, batch_size: int = 16, loo_batch_size: int = 128, progress: bool = True,
                 desc: str = "explain + LOO") -> LooMaps:
    """Relevance of every method at every layer and LOO at ``layers`` (default all ``0..L``).

    Args:
        input_ids, attention_mask: ``[B, S]`` (padding on either side).
        methods: names accepted by :func:`lrp_utils.explain` that return layer relevance.
        removal: LOO operators, ``"mask"`` and/or ``"zero"`` (see ``lrp_utils.loo``).
        target: ``None`` (the model's argmax) or ``[B]``; LOO explains the same target.
        batch_size: examples per length-sorted batch (explanations and LOO prefixes);
            ``loo_batch_size`` bounds the removed copies per LOO suffix batch.
    """
    adapter = get_adapter(model)
    B, S = input_ids.shape
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    L, dev = adapter.n_layers, adapter.device
    layers = list(range(L + 1)) if layers is None else [int(l) for l in layers]
    removal = (removal,) if isinstance(removal, str) else tuple(removal)
    rel = {m: torch.zeros(L + 1, B, S, dtype=torch.float64) for m in methods}
    loo = {r: torch.full((len(layers), B, S), float("nan"), dtype=torch.float64) for r in removal}
    tgt, logit = torch.zeros(B, dtype=torch.long), torch.zeros(B, dtype=torch.float64)
    clock = _Clock()
    batches = list(length_batches(mask, batch_size))
    for idx, cols in tqdm(batches, desc=desc, disable=not progress):
        ids, m = input_ids[idx, cols].to(dev), mask[idx, cols].to(dev)
        t = None if target is None else torch.as_tensor(target).reshape(-1).expand(B)[idx].to(dev)
        for name in methods:
            e = clock(name, lambda: explain(model, ids, name, target=t, attention_mask=m))
            t = e.target.to(dev)
            for j, r in enumerate(e.layers):
                rel[name][j][idx, cols] = r.double()
        tgt[idx], logit[idx] = t.cpu(), e.logit.double()
        for r in removal:
            scores = clock(r, lambda: loo_by_layer(model, ids, layers, target=t, attention_mask=m,
                                                   removal=r, batch_size=loo_batch_size))
            for j in range(len(layers)):
                loo[r][j][idx, cols] = scores[j].double()
    timing = pd.DataFrame({
        "kind": ["explain"] * len(methods) + ["loo"] * len(removal), "name": [*methods, *removal],
        "wall_s": [clock.wall[k] for k in (*methods, *removal)],
        "cpu_s": [clock.cpu[k] for k in (*methods, *removal)],
        "layers": [L + 1] * len(methods) + [len(layers)] * len(removal)})
    return LooMaps(rel, loo, layers, mask.cpu(), tgt, logit, timing)


def per_example(maps: LooMaps) -> pd.DataFrame:
    """One row per example x LOO layer x method x removal: ``pearson``, ``spearman`` (NaN where
    undefined: fewer than 3 positions or a constant map) and ``n_positions`` (positions compared)."""
    rows, rel = [], {name: R.numpy() for name, R in maps.relevance.items()}
    for r, scores in maps.loo.items():
        for j, layer in enumerate(maps.layers):
            x = scores[j].numpy()
            valid = np.isfinite(x)
            for name, R in rel.items():
                for b in range(x.shape[0]):
                    p, s = metrics.correlations(R[layer, b], x[b], valid[b])
                    rows.append((b, layer, name, r, p, s, int(valid[b].sum())))
    return pd.DataFrame(rows, columns=["example", "layer", "method", "removal", "pearson", "spearman",
                                       "n_positions"])


def loo_agreement(model, input_ids, attention_mask=None, methods=METHODS, removal=("mask",), layers=None,
                  return_maps: bool = False, **kwargs):
    """Per-example correlation of each method's layer relevance with layer LOO (tidy DataFrame, see
    :func:`per_example`); with ``return_maps=True`` also the :class:`LooMaps`. ``kwargs`` go to
    :func:`compute_maps` (``target``, ``batch_size``, ``loo_batch_size``, ``progress``)."""
    maps = compute_maps(model, input_ids, attention_mask, methods, removal, layers, **kwargs)
    df = per_example(maps)
    return (df, maps) if return_maps else df


def _keys(df, by):
    return [k for k in (by or ("model", "layer", "method", "removal")) if k in df.columns]


def summarise(df: pd.DataFrame, by=None, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean Pearson / Spearman over examples with 95% percentile-bootstrap CIs, per group of ``by``
    (default the present columns of model, layer, method, removal). ``n`` counts examples with a
    defined correlation, ``n_total`` all; ``ci_low`` / ``ci_high`` repeat the Pearson interval."""
    out = []
    for key, g in df.groupby(_keys(df, by), sort=True):
        row = dict(zip(_keys(df, by), key))
        for meas in MEASURES:
            ci = metrics.bootstrap_ci(g[meas].to_numpy(), n_boot=n_boot, seed=seed)
            row.update({meas: ci.mean, f"{meas}_ci_low": ci.low, f"{meas}_ci_high": ci.high})
        row.update(ci_low=row["pearson_ci_low"], ci_high=row["pearson_ci_high"],
                   n=int(g["pearson"].notna().sum()), n_total=len(g))
        out.append(row)
    return pd.DataFrame(out)


def _paired(df, methods, measure, by):
    """``{group: [n, len(methods)] array}`` of per-example values, examples with a NaN dropped."""
    keys = [k for k in _keys(df, by) if k != "method"]
    wide = df[df.method.isin(methods)].pivot_table(index=[*keys, "example"], columns="method",
                                                   values=measure, dropna=False)
    wide = wide.reindex(columns=list(methods)).dropna()
    return keys, {k: g.to_numpy() for k, g in wide.groupby(level=list(range(len(keys))), sort=True)}


def _boot(values: np.ndarray, stat, n_boot: int, seed: int):
    """``(stat(values), low, high)``: percentile bootstrap over rows of ``values`` ``[n, k]``."""
    rng = np.random.default_rng(seed)
    boots = [stat(values[rng.integers(0, len(values), len(values))]) for _ in range(n_boot)]
    low, high = np.nanquantile(np.array(boots), [0.025, 0.975], axis=0)
    return stat(values), low, high


def compare(df: pd.DataFrame, method: str = "cp-lrp", baseline: str = "attnlrp", measure: str = "pearson",
            by=None, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """``method`` vs ``baseline`` per group, on examples where both are defined: both means,
    ``diff`` (paired bootstrap CI) and ``rel_pct`` = 100 * diff / |baseline mean| (bootstrap CI of
    the ratio)."""
    keys, groups = _paired(df, (method, baseline), measure, by)
    stat = lambda v: np.array([v[:, 0].mean() - v[:, 1].mean(),  # noqa: E731
                               100 * (v[:, 0].mean() - v[:, 1].mean()) / abs(v[:, 1].mean())])
    out = []
    for key, v in groups.items():
        est, low, high = _boot(v, stat, n_boot, seed)
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

    def stat(v):
        a, b, c, d = v.mean(0)
        return np.array([d - a, ((c - a) + (d - b)) / 2, ((b - a) + (d - c)) / 2, (d - c) - (b - a)])

    out = []
    for key, v in groups.items():
        est, low, high = _boot(v, stat, n_boot, seed)
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
def plot_panels(df: pd.DataFrame, y: str, low: str, high: str, hue: str, hue_order, models=None,
                ylabel: str = "", title: str = "", dashed=()):
    """One panel per model: ``y`` vs layer, one line per ``hue`` value (fixed colour per value, in
    ``hue_order``; values in ``dashed`` dashed) with a ``[low, high]`` band; a grey line at 0; one
    legend below. Returns the Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    df = df.dropna(subset=[y])
    models = list(models or df.model.unique())
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.6), squeeze=False)
    for ax, name in zip(axes[0], models):
        for k, value in enumerate(hue_order):
            g = df[(df.model == name) & (df[hue] == value)].sort_values("layer")
            ax.plot(g.layer, g[y], marker="o", ms=4, color=f"C{k}", label=str(value),
                    ls="--" if value in dashed else "-")
            ax.fill_between(g.layer, g[low], g[high], color=f"C{k}", alpha=0.15, lw=0)
        ax.axhline(0, color="grey", lw=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="layer l (0 = embeddings)", ylabel=ylabel, title=name)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_layers(summary: pd.DataFrame, measure: str = "pearson", removal: str = "mask", methods=METHODS,
                models=None):
    """Mean correlation vs layer with 95% CI bands, one line per method, one panel per model."""
    s = summary[summary.removal == removal]
    return plot_panels(s, measure, f"{measure}_ci_low", f"{measure}_ci_high", "method", methods, models,
                       ylabel=f"mean {measure} r with layer-l LOO",
                       title=f"Agreement of layer-l relevance with layer-l LOO ({removal} removal, 95% CI)",
                       dashed=("attnlrp-no-softmax", "attnlrp-full-value"))


def plot_decomposition(dec: pd.DataFrame, measure: str = "pearson", removal: str = "mask", models=None):
    """The 2x2 decomposition of the CP-LRP - AttnLRP gap per layer (see :func:`decompose`)."""
    d = dec[(dec.removal == removal) & (dec.measure == measure)]
    return plot_panels(d, "mean", "ci_low", "ci_high", "component", ("gap", "value", "softmax", "interaction"),
                       models, ylabel=f"effect on mean {measure} r",
                       title=f"Where the CP-LRP vs AttnLRP gap comes from ({removal} removal, 95% CI)")


def plot_robustness(comp: pd.DataFrame, models=None):
    """CP-LRP - AttnLRP difference per layer for every (measure, removal) variant in ``comp``."""
    c = comp.assign(variant=comp.measure + ", " + comp.removal)
    return plot_panels(c, "diff", "diff_ci_low", "diff_ci_high", "variant", sorted(c.variant.unique()), models,
                       ylabel="r(CP-LRP) - r(AttnLRP)",
                       title="Robustness: Pearson vs Spearman, mask vs zero removal (paired 95% CI)")


def plot_improvement(comp: pd.DataFrame, removal: str = "mask", models=None, min_base: float = 0.1,
                     clip: float = 150.0):
    """CP-LRP vs AttnLRP per layer (x = relative depth l / L), one line per model with 95% CI bands:
    left the difference of the mean correlations, right the relative improvement in %. On the right,
    layers where |mean r_AttnLRP| < ``min_base`` are left out (the ratio is meaningless there) and
    the axis is clipped at +-``clip`` %."""
    import matplotlib.pyplot as plt

    c = comp[comp.removal == removal]
    fig, (ax_d, ax_r) = plt.subplots(1, 2, figsize=(11, 4))
    for k, name in enumerate(models or c.model.unique()):
        g = c[c.model == name].sort_values("layer")
        x = g.layer / (g.layer.max() + 1)  # the last LOO layer shown is L - 1 (layer L is undefined)
        ax_d.plot(x, g["diff"], marker="o", ms=4, color=f"C{k}", label=name)
        ax_d.fill_between(x, g.diff_ci_low, g.diff_ci_high, color=f"C{k}", alpha=0.15, lw=0)
        ok = g.attnlrp.abs() >= min_base
        g, x = g[ok], x[ok]
        ax_r.plot(x, g.rel_pct.clip(-clip, clip), marker="o", ms=4, color=f"C{k}", label=name)
        ax_r.fill_between(x, g.rel_ci_low.clip(-clip, clip), g.rel_ci_high.clip(-clip, clip), color=f"C{k}",
                          alpha=0.15, lw=0)
    for ax in (ax_d, ax_r):
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("relative depth l / L")
    ax_r.axhline(30, color="k", ls=":", lw=1, label="paper: 'up to ~30%'")
    ax_r.set_ylim(-clip * 1.05, clip * 1.05)
    measure = c.measure.iloc[0]
    ax_d.set(ylabel=f"r_CP - r_Attn (mean {measure} r)", title="Difference (paired 95% CI)")
    ax_r.set(ylabel="100 (r_CP - r_Attn) / |r_Attn|   [%]",
             title=f"Relative improvement (|r_Attn| < {min_base} left out; clipped at +-{clip:.0f}%)")
    ax_d.legend(frameon=False, fontsize=8)
    ax_r.legend(frameon=False, fontsize=8)
    fig.suptitle(f"CP-LRP vs AttnLRP agreement with LOO ({measure}, {removal} removal)")
    fig.tight_layout()
    return fig


def plot_scatter(maps: LooMaps, example: int, layers, methods=("attnlrp", "cp-lrp"), removal: str = "mask",
                 title: str | None = None):
    """LOO (x) vs relevance (y) of one example at a few layers: rows = methods, columns = layers."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(methods), len(layers), figsize=(3.3 * len(layers), 2.9 * len(methods)),
                             squeeze=False)
    for j, layer in enumerate(layers):
        x = maps.loo[removal][maps.layers.index(layer), example]
        ok = torch.isfinite(x)
        for i, name in enumerate(methods):
            y = maps.relevance[name][layer, example]
            p, s = metrics.correlations(y, x, ok)
            ax = axes[i][j]
            ax.scatter(x[ok], y[ok], s=14, alpha=0.8, color=f"C{i}")
            ax.set_title(f"{name}, layer {layer}: r={p:.2f}, rho={s:.2f}", fontsize=9)
            ax.set_xlabel(f"LOO ({removal}) at layer {layer}")
            ax.set_ylabel(f"relevance at layer {layer}")
    fig.suptitle(title or f"LOO vs relevance, example {example}")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- the trained tiny model
def train_keyword_tiny(n_layers: int = 4, seq_len: int = 20, n_train: int = 3000, n_test: int = 200,
                       epochs: int = 8, seed: int = 0, progress: bool = False):
    """A softmax-attention :class:`~lrp_utils.models.TinyTransformer` ([CLS] read-out, learned
    positions, LayerNorm, GELU MLP) trained deterministically on :func:`lrp_utils.data.keyword_task`.

    Returns ``(model, test, accuracy)``: the float32 model in eval mode, the held-out
    :class:`~lrp_utils.data.KeywordTask` batch (``n_test`` sequences, another seed) and its accuracy."""
    from ..data import keyword_task
    from ..models import TinyConfig, TinyTransformer, accuracy, train

    cfg = TinyConfig(vocab_size=32, d_model=32, n_layers=n_layers, n_heads=4, d_ff=64, max_len=seq_len)
    torch.manual_seed(seed)
    model = TinyTransformer(cfg).reset_parameters(0.1, seed=seed)
    data = keyword_task(n_train, seq_len=seq_len, vocab_size=32, seed=seed)
    train(model, data.input_ids, data.labels, epochs=epochs, lr=3e-3, seed=seed, progress=progress)
    test = keyword_task(n_test, seq_len=seq_len, vocab_size=32, seed=seed + 10_000)
    return model.eval(), test, accuracy(model, test.input_ids, test.labels)
