"""Notebook 02: AttnLRP (Achtibat et al. 2024): faithfulness on tasks the models solve, the conservation
audit, the cost of one explanation, equality with lxt, and the claims computed from the figure CSVs.

* :func:`rt_sentences` / :func:`decoder_sentiment_task`: Rotten Tomatoes test sentences for the
  ``smollm2-rt`` classifier (detokenised: the text it was trained on), targets = its prediction.
* :func:`task_faithfulness`: MoRF / LeRF per-example areas of several methods on one task, Integrated
  Gradients optionally on the first ``n_ig`` examples only (it costs ``ig_steps`` gradients each);
  :func:`paired_table`: AttnLRP minus every other method on the examples both explained, with a paired
  bootstrap interval (what the claims and the figure use).
* :func:`scaling_table`: wall / CPU time of a forward pass, a plain gradient (GI: forward + backward), one
  AttnLRP explanation and leave-one-out (LOO, extrapolated from a batch of removals) as the sequence grows,
  and the bytes an explanation keeps for its backward (:func:`lrp_utils.profiling.saved_bytes`).  Peak
  resident memory per call is measured by ``benchmarks/`` in fresh processes (a process's high-water mark
  says nothing about the second call of a session).
* :func:`claims_from_csvs` (registered for notebook 02): every verdict from the committed figure CSVs.

The other pieces are library calls: the audit (:mod:`lrp_utils.audit`), the perturbation driver
(:mod:`lrp_utils.perturbation`) and the lxt fixtures (:mod:`lrp_utils.lxt`).
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch

from .. import claims, profiling, runner, tasks
from .. import perturbation as F
from ..adapters import get_adapter
from ..claims import CISide, Claim, Exact, Threshold
from ..data import detokenize, rotten_tomatoes
from ..engine import explain
from ..loo import logits_without
from ..progress import tqdm

PAPER = "Achtibat et al. 2024"
REFERENCE = "attnlrp"
#: methods AttnLRP is compared with, in the order of the claims table
COMPARED = ("cp-lrp", "ig", "gi", "rollout", "random")
#: the order of methods in figures and legends
ORDER = ("random", "rollout", "gi", "ig", "cp-lrp", "attnlrp")
NAMES = {"cp-lrp": "CP-LRP", "ig": "Integrated Gradients", "gi": "Gradient x Input", "rollout": "attention rollout",
         "random": "a random ranking", "attnlrp": "AttnLRP"}
#: comparisons asserted in quick (CI) mode: large effects that hold at CI size (quick run, 6 sentences, quick
#: model: lower interval bounds 1.26 (gi) and 0.90 (random), far from 0)
ROBUST_IN_CI = {("minilm-rt", "gi"), ("minilm-rt", "random")}
#: lxt fixtures are float64 except RMSNorm's float32 variance on LLaMA (relative error ~1e-7)
LXT_TOL = 1e-6
#: audit identities are sums over float32 models of ~30 blocks, as shares of the logit
AUDIT_TOL = 1e-3
AREAS_CSV, PAIRED_METRIC = "02_faithfulness_areas.csv", "LeRF-MoRF"


# --------------------------------------------------------------------------- data
def rt_sentences(n: int, max_words: int | None = None, seed: int = 0) -> list[tuple[str, int]]:
    """The first ``n`` Rotten Tomatoes test sentences (split seed ``seed``) of at most ``max_words``
    words (``None``: any length), as stored (lower-cased, pre-tokenised), with their labels."""
    pairs = rotten_tomatoes("test", seed=seed)
    return [(t, y) for t, y in pairs if max_words is None or len(t.split()) <= max_words][:n]


def decoder_sentiment_task(model, tokenizer, pairs, batch_size: int = 32) -> tasks.Task:
    """A :class:`lrp_utils.tasks.Task` for a decoder classifier (``smollm2-rt``): the sentences
    detokenised (:func:`lrp_utils.data.detokenize`), right-padded; ``valid`` = every token but padding
    and the read-out (last) token; ``labels``; ``target`` = the model's predicted class."""
    ids, mask = tasks.encode(tokenizer, [detokenize(t) for t, _ in pairs])
    task = tasks.inputs_task(model, ids, mask, name="sentiment (decoder)")
    task.labels = torch.tensor([y for _, y in pairs])
    return tasks.set_targets(model, task, batch_size=batch_size)


# --------------------------------------------------------------------------- faithfulness
def task_faithfulness(model, task: tasks.Task, methods, fractions, score: str = "logit", n_ig: int | None = None,
                      ig_steps: int = 16, ig_batch_size: int = 4, batch_size: int = 16, seed: int = 0,
                      progress: bool = False) -> tuple[F.Faithfulness, dict]:
    """MoRF / LeRF of ``methods`` explaining ``task.target`` (removal ``"mask"``, ``task.valid`` only).

    ``score``: what the curves read (``"logit"`` or ``"logprob"`` of the target).  ``n_ig``: IG explains
    only the first ``n_ig`` examples (``None``: all); its areas then cover those examples only, its
    curves are left out.  Returns ``(Faithfulness, seconds)`` with ``areas`` (``method, metric, example,
    value``), the curves of the methods run on every example, and wall seconds per method and for the
    perturbed forwards (``"perturbation"``).
    """
    clock = profiling.Clock()
    main = [m for m in methods if not (m == "ig" and n_ig is not None)]
    kw = dict(batch_size=batch_size, ig_batch_size=ig_batch_size, clock=clock, n_steps=ig_steps, seed=seed)
    exps = runner.explain_many(model, task.input_ids, task.attention_mask, main, task.target, **kw)
    scorer = F.RemovalScorer.for_task(model, task, progress=progress)
    with clock.measure("perturbation"):
        res = F.faithfulness(scorer, {m: e.tokens for m, e in exps.items()}, task.valid, "morf_lerf", fractions,
                             seed=seed, score=score)
    if len(main) < len(methods):
        sub = task.subset(n_ig)
        ig = runner.explain_many(model, sub.input_ids, sub.attention_mask, ["ig"], sub.target, **kw)["ig"]
        with clock.measure("perturbation"):
            part = F.faithfulness(F.RemovalScorer.for_task(model, sub), {"ig": ig.tokens}, sub.valid, "morf_lerf",
                                  fractions, seed=seed, score=score)
        res.areas = pd.concat([res.areas, part.areas], ignore_index=True)
        res.summary = pd.concat([res.summary, part.summary], ignore_index=True)
    return res, dict(clock.wall)


def paired_table(areas: pd.DataFrame, reference: str = REFERENCE, metric: str = PAIRED_METRIC, n_boot: int = 1000,
                 seed: int = 0) -> pd.DataFrame:
    """Per ``model`` and method: ``diff`` = mean over the examples both explained of
    ``area(reference) - area(method)`` (positive: the reference is more faithful), its paired bootstrap
    95% interval ``low, high``, ``n`` and both means (``reference_mean``, ``method_mean``).

    ``areas``: columns ``model, method, metric, example, value`` (e.g. ``02_faithfulness_areas.csv``);
    :func:`lrp_utils.perturbation.paired_differences` with each method as the reference."""
    rows = []
    for model, g in areas[areas.metric == metric].groupby("model", sort=False):
        for m in [c for c in g.method.unique() if c != reference]:
            d = F.paired_differences(g, m, [reference], ("model",), n_boot, seed).iloc[0]
            rows.append({"model": model, "method": m, "diff": d["diff"], "low": d["low"], "high": d["high"],
                         "n": int(d["n"]), "reference_mean": d["mean"], "method_mean": d["reference"]})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- cost
def scaling_table(model, lengths=(16, 32, 64, 128, 256, 512), method: str = "attnlrp", n_loo: int = 4,
                  repeats: int = 3, seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """Time and memory of one explanation vs one forward, one plain gradient and LOO, per length ``S``.

    One row per length (random ids, batch 1), wall seconds ``t_*`` and CPU seconds ``cpu_*``:
    ``forward`` (one forward through the adapter path LOO uses), ``gradient`` (``explain(..., "gi")``:
    one forward + one plain backward), ``explain`` (``explain(model, ids, method)``: one forward + one
    modified backward), ``t_loo_per_removal`` (a batch of ``n_loo`` removals divided by ``n_loo``) and
    ``loo = (S - 1) * per removal`` (extrapolated); the ratios ``explain_in_forwards``,
    ``explain_over_gradient`` and ``loo_over_explain`` (CPU seconds), ``saved_mb`` (memory kept for the
    backward, see module doc) and ``load_1min`` (the machine's 1-minute load average after the row).
    Times are the fastest of ``repeats`` runs after a warm-up run (``S >= 128``: one run; ``S >= 256``: no
    warm-up, the shorter lengths have warmed every code path; the explanation is warmed up by the memory
    measurement).
    """
    adapter = get_adapter(model)
    vocab = adapter.word_embeddings.num_embeddings
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for S in tqdm(sorted(lengths), desc="sequence lengths", disable=not progress):
        ids = torch.randint(min(1000, vocab // 2), vocab, (1, S), generator=gen).to(adapter.device)
        none = torch.zeros_like(ids, dtype=torch.bool)
        k = min(n_loo, S - 1)
        loo_ids = ids.expand(k, S)
        removed = torch.zeros(k, S, dtype=torch.bool, device=ids.device)
        removed[torch.arange(k), torch.arange(k) + (1 if adapter.task == "classify" and not adapter.causal else 0)] = True
        r, warm = (1, S < 256) if S >= 128 else (repeats, True)
        mem = profiling.saved_bytes(model, lambda: explain(model, ids, method))  # also the explanation's warm-up
        t_fwd, c_fwd = profiling.best_of(lambda: logits_without(model, ids, none), r, warm)
        t_grad, c_grad = profiling.best_of(lambda: explain(model, ids, "gi"), r, warm)
        t_exp, c_exp = profiling.best_of(lambda: explain(model, ids, method), r, warm_up=False)
        t_row, c_row = (t / k for t in profiling.best_of(lambda: logits_without(model, loo_ids, removed), r, warm))
        rows.append({"seq_len": S, "t_forward": t_fwd, "t_gradient": t_grad, "t_explain": t_exp,
                     "t_loo_per_removal": t_row, "t_loo": (S - 1) * t_row, "cpu_forward": c_fwd,
                     "cpu_gradient": c_grad, "cpu_explain": c_exp, "cpu_loo": (S - 1) * c_row,
                     "explain_in_forwards": c_exp / c_fwd, "explain_over_gradient": c_exp / c_grad,
                     "loo_over_explain": (S - 1) * c_row / c_exp, "saved_mb": mem / 2**20,
                     "load_1min": os.getloadavg()[0]})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- claims
def _faithfulness_claims(figures: Path) -> list:
    areas = pd.read_csv(figures / AREAS_CSV)
    rows = []
    for _, r in paired_table(areas).iterrows():
        if r.method not in COMPARED:
            continue
        rows.append(Claim("02", f"faithful-vs-{r.method}", PAPER, f"AttnLRP is more faithful than {NAMES[r.method]}",
                          f"LeRF-MoRF area of AttnLRP minus {r.method} on the same examples, paired bootstrap 95% CI",
                          r.model, r["diff"], CISide(">"), r.low, r.high, n=int(r.n),
                          checked_in_ci=(r.model, r.method) in ROBUST_IN_CI))
    order = {m: i for i, m in enumerate(COMPARED)}
    return sorted(rows, key=lambda c: (c.model, order[c.claim_id.removeprefix("faithful-vs-")]))


def _audit_claims(figures: Path) -> list:
    a = pd.read_csv(figures / "02_audit.csv")
    rows = []
    for model, g in a.groupby("model", sort=False):
        at, cp = g[g.method == "attnlrp"], g[g.method == "cp-lrp"]
        lr = g[g.method.isin(["attnlrp", "cp-lrp"])]
        rows.append(Claim("02", "audit-softmax-absorbs", PAPER, "The softmax (Taylor) rule is not conservative: "
                          "its bias terms absorb relevance", "share of the logit absorbed by AttnLRP's softmax terms, "
                          "summed over stages", model, at.softmax.sum(), Threshold(">", 0.05), checked_in_ci=True))
        rows.append(Claim("02", "audit-products-conserve", PAPER, "The uniform rule conserves relevance at q k^T and A V",
                          "largest |products term| over stages (AttnLRP and CP-LRP), share of the logit", model,
                          lr.products.abs().max(), Exact(AUDIT_TOL), checked_in_ci=True))
        if g.bias.abs().max() == 0:  # bias-free models (LLaMA): nothing but the softmax may absorb
            rows.append(Claim("02", "audit-only-softmax", PAPER, "On a bias-free LLaMA, AttnLRP loses relevance only "
                              "at the softmax", "largest |absorbed - softmax term| over stages (AttnLRP), share of "
                              "the logit", model, (at.absorbed - at.softmax).abs().max(), Exact(AUDIT_TOL),
                              checked_in_ci=True))
            rows.append(Claim("02", "audit-cp-conserves", PAPER, "On a bias-free LLaMA, CP-LRP conserves relevance "
                              "from the logit to the tokens", "largest |absorbed| over stages (CP-LRP), share of the "
                              "logit", model, cp.absorbed.abs().max(), Exact(AUDIT_TOL), checked_in_ci=True))
    return rows


def _cost_lxt_claims(figures: Path) -> list:
    c = pd.read_csv(figures / "02_cost.csv").sort_values("seq_len")
    model = "smollm2-135m (random ids)"
    rows = [Claim("02", "cost-vs-gradient", PAPER, "An AttnLRP explanation costs about one gradient (forward + "
                  "backward)", "median over sequence lengths of CPU s (AttnLRP) / CPU s (GI = forward + plain "
                  "backward)", model, float(c.explain_over_gradient.median()), Threshold("<=", 1.5), n=len(c)),
            Claim("02", "cost-vs-loo", PAPER, "Perturbation (LOO) needs one forward per token: far costlier than one "
                  "explanation", f"CPU s of LOO / CPU s of AttnLRP at S = {int(c.seq_len.iloc[-1])} tokens", model,
                  float(c.loo_over_explain.iloc[-1]), Threshold(">=", 10.0), n=len(c))]
    lxt = pd.read_csv(figures / "02_lxt_agreement.csv")
    for fixture, g in lxt.groupby("model", sort=False):
        rows.append(Claim("02", "lxt-equal", "lxt 2.1 (AttnLRP reference code)", "Our AttnLRP / CP-LRP / GI equal the "
                          "reference implementation", f"largest max|ours - lxt| / max|lxt| over {', '.join(g.method)}",
                          f"lxt fixture {fixture}", g.max_rel_error.max(), Exact(LXT_TOL), n=len(g), checked_in_ci=True))
    return rows


@claims.register("02")
def claims_from_csvs(figures) -> list:
    """Notebook 02's claims from ``02_faithfulness_areas.csv``, ``02_audit.csv``, ``02_cost.csv`` and
    ``02_lxt_agreement.csv`` under ``figures``."""
    figures = Path(figures)
    return _audit_claims(figures) + _faithfulness_claims(figures) + _cost_lxt_claims(figures)


@claims.register_caption("02", "02_faithfulness.png")
def faithfulness_caption(figures) -> str:
    """README caption of ``02_faithfulness.png`` from ``02_faithfulness_areas.csv``: per model, the methods
    AttnLRP beats, ties and trails (paired 95% interval of the area difference vs 0)."""
    p = paired_table(pd.read_csv(Path(figures) / AREAS_CSV))
    parts = []
    for model, g in p.groupby("model", sort=False):
        side = {"ahead of": g[g.low > 0], "behind": g[g.high < 0], "tied with": g[(g.low <= 0) & (g.high >= 0)]}
        said = "; ".join(f"{k} {', '.join(f'{m} (n = {n})' for m, n in zip(d.method, d.n))}"
                         for k, d in side.items() if len(d))
        parts.append(f"{model}: AttnLRP {said}")
    return ("MoRF / LeRF removal curves and AttnLRP's paired LeRF-MoRF area difference to each method "
            "(95% bootstrap intervals). " + ". ".join(parts) + ".")


def areas_frame(results: dict) -> pd.DataFrame:
    """``{model: Faithfulness}`` -> the rows of ``02_faithfulness_areas.csv`` (``model, method, metric,
    example, value``; LeRF-MoRF only, 6 significant digits)."""
    out = pd.concat([r.areas.assign(model=k) for k, r in results.items()], ignore_index=True)
    out = out[out.metric == PAIRED_METRIC][["model", "method", "metric", "example", "value"]]
    return out.assign(value=out.value.map(lambda v: float(f"{v:.6g}"))).reset_index(drop=True)


def stage_ticks(n_layers: int) -> tuple[list, list]:
    """Tick positions and labels of an audit axis: ``stage_index`` ``L+1`` = "head", ``l`` = block ``l``,
    ``0`` = "emb"; every block labelled up to 12 blocks, else every 5th (not next to head / emb)."""
    blocks = range(n_layers, 0, -1) if n_layers <= 12 else [b for b in range(n_layers - 2, 1, -1) if b % 5 == 0]
    pos = [n_layers + 1, *blocks, 0]
    return pos, ["head" if p == n_layers + 1 else ("emb" if p == 0 else str(p)) for p in pos]


def accuracy_line(name: str, task: tasks.Task) -> str:
    """One line: how many examples and how often the model's prediction equals the label."""
    acc = tasks.accuracy(task)
    return f"{name}: {len(task)} sentences, accuracy of the explained predictions {acc:.3f} ({int(round(acc * len(task)))} right)"


# --------------------------------------------------------------------------- figures
def plot_faithfulness(curves: pd.DataFrame, paired: pd.DataFrame, ylabels: dict):
    """``02_faithfulness.png``: per model (rows, ``ylabels``: model -> what the curves read) the MoRF
    and LeRF curves (mean, 95% band) and AttnLRP's paired area difference to every other method
    (points with 95% intervals; a method run on a subset shows its ``n``).  One legend."""
    import matplotlib.pyplot as plt

    from .. import viz

    models = list(ylabels)
    fig, axes = plt.subplots(len(models), 3, figsize=(14, 3.6 * len(models)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 0.9]})
    shown = []
    for row, k in enumerate(models):
        c = curves[curves.model == k]
        for col, metric in enumerate(["MoRF", "LeRF"]):
            g = c[c.metric == metric]
            viz.plot_curves({m: (d.fraction, d["mean"], d.low, d.high) for m, d in g.groupby("method", sort=False)},
                            ax=axes[row, col], ylabel=ylabels[k], xlabel="fraction of tokens removed",
                            title=f"{k}: {metric} ({'lower' if metric == 'MoRF' else 'higher'} is better)",
                            legend=False)
        p = paired[paired.model == k]
        p = p.iloc[p.method.map(ORDER.index).argsort()].reset_index(drop=True)
        ax, full = axes[row, 2], int(p.n.max())
        for i, r in p.iterrows():
            style = viz.method_style(r.method)
            ax.errorbar(r["diff"], i, xerr=[[r["diff"] - r.low], [r.high - r["diff"]]], fmt=style["marker"],
                        color=style["color"], capsize=3, label=r.method)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(p)), [m if n == full else f"{m} (n = {n})" for m, n in zip(p.method, p.n)])
        ax.invert_yaxis()
        ax.set(xlabel="area(AttnLRP) - area(method), LeRF-MoRF", title=f"{k}: AttnLRP minus ... (n = {full})")
        shown += [m for m in [*c.method.unique(), *p.method] if m not in shown]
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    viz.figure_legend(fig, [m for m in ORDER if m in shown], bbox_to_anchor=(0.5, 0.97))
    return fig


def plot_audit(shares: pd.DataFrame, n_layers: dict):
    """``02_audit.png``: per model (columns) the relevance left below each stage (top) and what AttnLRP
    absorbs at each stage, by cause (bottom); one stage axis for both (``head``, blocks L..1, ``emb``)."""
    import matplotlib.pyplot as plt

    from .. import viz

    causes = {"softmax": "#CC3311", "bias": "#33BBEE", "other": "#777777"}
    fig, axes = plt.subplots(2, len(n_layers), figsize=(5.2 * len(n_layers), 7.5), squeeze=False, sharex="col")
    for col, (k, L) in enumerate(n_layers.items()):
        s = shares[shares.model == k]
        for m, g in s.groupby("method", sort=False):
            axes[0, col].plot(g.stage_index, g.r_in, ms=3, label=m, **viz.method_style(m))
        axes[0, col].axhline(1, color="grey", lw=0.8, ls="--")
        axes[0, col].set(ylabel="relevance below the stage / logit", title=f"{k}: relevance left after each stage")
        a = s[s.method == "attnlrp"]
        terms = [t for t in causes if a[t].abs().max() > 0]
        w = 0.8 / len(terms)
        for j, t in enumerate(terms):
            axes[1, col].bar(a.stage_index + (j - (len(terms) - 1) / 2) * w, a[t], width=w, color=causes[t], label=t)
        axes[1, col].axhline(0, color="black", lw=0.6)
        axes[1, col].set(ylabel="absorbed at the stage / logit", title=f"{k}: what AttnLRP absorbs, by cause")
        pos, labels = stage_ticks(L)
        for ax in axes[:, col]:
            ax.set_xticks(pos, labels)
            ax.set_xlim(L + 1.7, -0.7)  # top-down: head on the left, embeddings on the right
        axes[1, col].set_xlabel("stage (head = read-out, L..1 = blocks, emb = embeddings)")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    viz.figure_legend(fig, [m for m in ["attnlrp", "cp-lrp", "gi"] if m in set(shares.method)], bbox_to_anchor=(0.5, 0.96))
    for ax in axes[1]:  # the causes' key, per panel (after the figure legend, which removes panel legends)
        ax.legend(frameon=False, fontsize=8)
    return fig


def plot_cost(scaling: pd.DataFrame):
    """``02_cost.png``: CPU seconds per input (forward, gradient, AttnLRP, LOO) and the memory an
    explanation keeps, against the sequence length; log axes with plain-number ticks."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    from .. import viz

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    lines = [("cpu_forward", "one forward", {"color": "#4D4D4D", "marker": "s"}),
             ("cpu_gradient", "gi: forward + backward", viz.method_style("gi")),
             ("cpu_explain", "attnlrp: forward + modified backward", viz.method_style("attnlrp")),
             ("cpu_loo", "loo: S-1 forwards (extrapolated)", {**viz.method_style("loo"), "ls": "--"})]
    for col, label, style in lines:
        axes[0].loglog(scaling.seq_len, scaling[col], label=label, **style)
    axes[0].set(xlabel="sequence length S (tokens)", ylabel="CPU seconds per input", title="SmolLM2-135M: time")
    axes[0].legend(frameon=False, fontsize=8)
    axes[1].loglog(scaling.seq_len, scaling.saved_mb, **viz.method_style("attnlrp"))
    axes[1].set(xlabel="sequence length S (tokens)", ylabel="MiB kept for the backward",
                title="SmolLM2-135M: memory of one AttnLRP explanation")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for a in axes:
        a.set_xticks(scaling.seq_len, [str(v) for v in scaling.seq_len])
        a.xaxis.set_minor_locator(LogLocator(subs=[]))
        a.yaxis.set_major_locator(LogLocator(subs=[1, 2, 5]))
        a.yaxis.set_major_formatter(plain)
        a.yaxis.set_minor_locator(LogLocator(subs=[]))
    fig.tight_layout()
    return fig
