"""Notebook 06 "Inside the model": inputs, the head map of one sentence, latent faithfulness curves,
"concept" neurons, their tables, figures and the findings sentences.  Generic pieces (unit
relevance, ablation, rankings, curves) live in :mod:`lrp_utils.latents`."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .. import latents, metrics, runner, tasks
from ..adapters import get_adapter
from ..data import detokenize, natural_sentences, rotten_tomatoes
from ..engine import explain
from ..palette import OTHER_COLORS, method_color

RANKINGS = ("attnlrp", "cp-lrp", "grad x act", "|activation|", "random")
#: the collection's method colours (``lrp_utils.palette``); grad x act is GI on the latents
COLORS = {"attnlrp": method_color("attnlrp"), "cp-lrp": method_color("cp-lrp"), "grad x act": method_color("gi"),
          "|activation|": OTHER_COLORS[0], "random": method_color("random")}


# -- inputs -----------------------------------------------------------------------------------------
def rt_batch(tokenizer, split: str, n: int, seed: int = 0, max_tokens: int = 48, detokenised: bool = False):
    """``n`` Rotten Tomatoes sentences of ``split`` with at most ``max_tokens`` word pieces (seeded
    pick): ``(texts, labels [n], input_ids [n, S], attention_mask [n, S])``, right-padded.
    ``detokenised``: as plain text (:func:`lrp_utils.data.detokenize`), the text SmolLM2-RT's head
    was trained on; otherwise as stored (lower-cased, pre-tokenised), as MiniLM-RT was trained."""
    data = rotten_tomatoes(split, seed=0)
    if detokenised:
        data = [(detokenize(t), y) for t, y in data]
    data = [(t, y) for t, y in data if len(tokenizer(t).input_ids) <= max_tokens]
    pick = np.random.default_rng(seed).permutation(len(data))[:n]
    texts, labels = [data[i][0] for i in pick], torch.tensor([data[i][1] for i in pick])
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return texts, labels, enc.input_ids, enc.attention_mask


def batch_accuracy(model, input_ids, attention_mask, labels) -> float:
    """Share of the rows whose predicted class (read-out argmax) equals ``labels``."""
    pred = runner.predict(model, input_ids, attention_mask).argmax(1)
    return float((pred == labels).double().mean())


def competent_prompts(model, tokenizer, n: int, seed: int = 0, max_words: int = 12) -> tasks.Task:
    """``n`` next-token prompts the causal LM gets right: :func:`lrp_utils.tasks.competent_next_token_task`
    on ``2 n`` natural sentences of 8-``max_words`` words (one prefix per sentence, cut before a word the
    model predicts top-1), the first ``n`` kept; ``meta`` holds the counts.  Raises if fewer qualify."""
    texts = natural_sentences(2 * n, seed=seed, max_words=max_words)
    task = tasks.competent_next_token_task(model, tokenizer, texts, seed=seed, name="next word (model right)")
    if len(task) < n:
        raise ValueError(f"only {len(task)} of {len(texts)} sentences have a prefix the model gets right; need {n}")
    return task.subset(n)


def count_passes(model, fn) -> tuple[int, int]:
    """``(forward calls, gradient arrivals)`` of block 1's attention output projection while ``fn()``
    runs: how many forward and backward passes a call makes."""
    module, counts = get_adapter(model).latent_modules()[0][0], [0, 0]

    def seen(mod, args, out):
        counts[0] += 1
        if out.requires_grad:
            out.register_hook(lambda g: counts.__setitem__(1, counts[1] + 1))

    handle = module.register_forward_hook(seen)
    try:
        fn()
    finally:
        handle.remove()
    return counts[0], counts[1]


# -- one sentence: the head map ---------------------------------------------------------------------
def head_map(model, tokenizer, text: str, methods=("attnlrp", "cp-lrp")) -> dict:
    """Explanations of ``text`` with per-position latents: ``{"tokens", "exps": {method: exp},
    "heads": {method: [L, H]}}``."""
    enc = tokenizer([text], return_tensors="pt")
    exps = {m: explain(model, enc.input_ids, m, attention_mask=enc.attention_mask, latents="positions")
            for m in methods}
    heads = {m: torch.stack([h[0] for h in e.heads]).double() for m, e in exps.items()}
    return {"tokens": tokenizer.convert_ids_to_tokens(enc.input_ids[0]), "exps": exps, "heads": heads}


def head_table(hm: dict) -> pd.DataFrame:
    """Long table ``method, block, head, relevance`` (block 1 = first)."""
    rows = [(m, b + 1, h, float(v)) for m, R in hm["heads"].items() for (b, h), v in np.ndenumerate(R.numpy())]
    return pd.DataFrame(rows, columns=["method", "block", "head", "relevance"])


def top_head(hm: dict, method: str = "attnlrp") -> tuple[int, int]:
    """``(block index from 0, head)`` of the most relevant head."""
    R = hm["heads"][method]
    return tuple(int(i) for i in np.unravel_index(int(R.argmax()), tuple(R.shape)))


def plot_head_map(hm: dict, title: str = ""):
    """One panel per method (blocks x heads, raw relevance, shared symmetric scale) and, per block
    before the last, where in the sentence the relevance of its most relevant AttnLRP head sits (in
    the last block only the read-out position reaches the output)."""
    from ..viz import CMAP, _tick

    methods = list(hm["heads"])
    lim = max(float(R.abs().max()) for R in hm["heads"].values()) or 1.0
    fig, axes = plt.subplots(1, len(methods) + 1, figsize=(4.4 * (len(methods) + 1), 3.8), layout="constrained",
                             gridspec_kw={"width_ratios": [1] * len(methods) + [1.8]})
    for ax, m in zip(axes, methods):
        im = ax.imshow(hm["heads"][m].numpy(), cmap=CMAP, vmin=-lim, vmax=lim, aspect="auto", origin="lower")
        L, H = hm["heads"][m].shape
        ax.set(title=m, xlabel="head", ylabel="block", xticks=range(0, H, 2), yticks=range(L),
               yticklabels=range(1, L + 1))
        ax.grid(False)
    fig.colorbar(im, ax=axes[:len(methods)], label="head relevance (raw)", fraction=0.04)
    best = hm["heads"]["attnlrp"].argmax(1)[:-1]
    rows = torch.stack([hm["exps"]["attnlrp"].heads_by_position[b][0, :, h] for b, h in enumerate(best.tolist())])
    ax, r = axes[-1], float(rows.abs().max()) or 1.0
    im = ax.imshow(rows.double().numpy(), cmap=CMAP, vmin=-r, vmax=r, aspect="auto", origin="lower")
    ax.set(title="attnlrp: top head of each block, per position",
           yticks=range(len(best)), yticklabels=[f"{b + 1}.{h}" for b, h in enumerate(best.tolist())])
    ax.set_ylabel("block.head")
    ax.set_xticks(range(len(hm["tokens"])), [_tick(t) for t in hm["tokens"]], rotation=60, ha="right")
    ax.grid(False)
    fig.colorbar(im, ax=ax, label="relevance (raw)", fraction=0.05)
    fig.suptitle(title)
    return fig


# -- latent faithfulness ----------------------------------------------------------------------------
def faithfulness(model, ids, mask, name: str, ks: dict, methods=("attnlrp", "cp-lrp"), batch_size: int = 32,
                 seed: int = 0) -> pd.DataFrame:
    """Per-example logit drops for heads and neurons: columns ``model, kind, ranking, k, example,
    drop`` (:func:`lrp_utils.latents.rankings` then :func:`lrp_utils.latents.faithfulness`)."""
    out = []
    for kind in latents.KINDS:
        scores, target = latents.rankings(model, ids, mask, kind, methods, batch_size=batch_size, seed=seed)
        t = latents.faithfulness(model, ids, mask, kind, scores, target, ks[kind], batch_size=batch_size)
        out.append(t.assign(model=name, kind=kind))
    return pd.concat(out, ignore_index=True)[["model", "kind", "ranking", "k", "example", "drop"]]


def curve_table(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean drop with a 95% bootstrap band per ``model, kind, ranking, k``."""
    parts = [latents.curve_summary(g, n_boot, seed).assign(model=m, kind=k)
             for (m, k), g in table.groupby(["model", "kind"], sort=False)]
    return pd.concat(parts, ignore_index=True)[["model", "kind", "ranking", "k", "drop", "low", "high", "n"]]


def area_table(table: pd.DataFrame, reference: str = "attnlrp", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per ``model, kind, ranking``: the drop averaged over the k > 0 of the grid, per example, then
    its mean with a 95% bootstrap CI, and the paired difference ``reference - ranking`` with CI."""
    per = table[table.k > 0].groupby(["model", "kind", "ranking", "example"], sort=False)["drop"].mean()
    rows = []
    for (m, k), g in per.groupby(level=["model", "kind"], sort=False):
        wide = g.unstack("ranking")
        for r in wide.columns:
            ci = metrics.bootstrap_ci(wide[r], n_boot=n_boot, seed=seed)
            d = metrics.paired_bootstrap(wide[reference], wide[r], n_boot=n_boot, seed=seed)
            rows.append((m, k, r, ci.mean, ci.low, ci.high, d.mean, d.low, d.high, len(wide)))
    return pd.DataFrame(rows, columns=["model", "kind", "ranking", "mean_drop", "low", "high",
                                       f"{reference}_minus", "diff_low", "diff_high", "n"])


def plot_faithfulness(curves: pd.DataFrame):
    """Mean logit drop vs number of units switched off (symlog x), one panel per model and kind."""
    keys = list(curves.groupby(["kind", "model"], sort=False).groups)
    models, kinds = list(dict.fromkeys(m for _, m in keys)), list(dict.fromkeys(k for k, _ in keys))
    fig, axes = plt.subplots(len(kinds), len(models), figsize=(4.4 * len(models), 3.3 * len(kinds)), squeeze=False)
    for (kind, model), g in curves.groupby(["kind", "model"], sort=False):
        ax = axes[kinds.index(kind), models.index(model)]
        for r in [r for r in RANKINGS if r in set(g.ranking)]:
            c = g[g.ranking == r]
            ax.plot(c.k, c["drop"], marker="o", ms=3, color=COLORS.get(r), label=r)
            ax.fill_between(c.k, c.low, c.high, color=COLORS.get(r), alpha=0.2, lw=0)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(sorted(g.k.unique()), [str(k) for k in sorted(g.k.unique())])
        ax.axhline(0, color="k", lw=0.6)
        ax.set(title=f"{model}: {kind}", xlabel=f"top-k {kind} switched off", ylabel="drop of the explained logit")
    axes[0, 0].legend(frameon=False)
    fig.tight_layout()
    return fig


# -- concept neurons --------------------------------------------------------------------------------
def _scores(pred, labels) -> dict:
    ok = (pred == labels).double()
    return {"accuracy": ok, "recall_pos": ok[labels == 1], "recall_neg": ok[labels == 0]}


def concept_table(model, ids, mask, labels, scores, sizes, n_random: int = 5, seed: int = 0, batch_size: int = 64,
                  n_boot: int = 1000) -> pd.DataFrame:
    """Accuracy and per-class recall on ``ids`` with no neuron off, the ``n`` neurons of highest
    ``scores`` off, and ``n`` random neurons off (``n_random`` seeded draws, per-example results
    averaged over the draws); 95% bootstrap CIs over examples.  Columns ``units, n_units, measure,
    value, low, high``."""
    N, gen = len(scores), torch.Generator().manual_seed(seed)

    def run(off):
        return _scores(latents.logits_with(model, ids, mask, "neurons", off, batch_size=batch_size).argmax(-1), labels)

    def random_units(n):
        return torch.zeros(1, N, dtype=torch.bool).index_fill_(1, torch.randperm(N, generator=gen)[:n], True)

    results = {("none", 0): run(torch.zeros(1, N, dtype=torch.bool))}
    for n in sizes:
        results[("concept", n)] = run(latents.top_k(scores[None], n))
        draws = [run(random_units(n)) for _ in range(n_random)]
        results[("random", n)] = {k: torch.stack([d[k] for d in draws]).mean(0) for k in draws[0]}
    rows = [(u, n, k, *metrics.bootstrap_ci(v, n_boot=n_boot, seed=seed)) for (u, n), res in results.items()
            for k, v in res.items()]
    return pd.DataFrame(rows, columns=["units", "n_units", "measure", "value", "low", "high"])


def plot_concepts(table: pd.DataFrame):
    """Accuracy and per-class recall vs neurons switched off: concept neurons vs random ones."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3), sharey=True)
    for ax, measure in zip(axes, ("accuracy", "recall_pos", "recall_neg")):
        t = table[table.measure == measure]
        ax.axhline(t[t.units == "none"].value.item(), color="k", lw=1, ls=":", label="no neuron off")
        for units, color in (("concept", COLORS["attnlrp"]), ("random", COLORS["random"])):
            g = t[t.units == units]
            ax.plot(g.n_units, g.value, marker="o", color=color, label=f"{units} neurons off")
            ax.fill_between(g.n_units, g.low, g.high, color=color, alpha=0.2, lw=0)
        ax.set(xscale="log", title=measure, xlabel="neurons switched off")
        sizes = sorted(t.n_units[t.n_units > 0].unique())
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
    axes[0].legend(frameon=False)
    fig.tight_layout()
    return fig


# -- findings ---------------------------------------------------------------------------------------
def _versus(name: str, d: float, lo: float, hi: float) -> str:
    relation = "larger than" if lo > 0 else "smaller than" if hi < 0 else "not distinguishable from"
    return f"{relation} {name}'s (difference {d:+.3f} [{lo:+.3f}, {hi:+.3f}])"


def faithfulness_findings(areas: pd.DataFrame, reference: str = "attnlrp") -> list[str]:
    """One sentence per model and kind, written from :func:`area_table`."""
    out = []
    for (m, k), g in areas.groupby(["model", "kind"], sort=False):
        g = g.set_index("ranking")
        ref = g.loc[reference]
        best = g.mean_drop.idxmax()
        others = "; ".join(f"{r} {v:.3f}" for r, v in g.mean_drop.items() if r != reference)
        vs = "; ".join(_versus(r, *g.loc[r, [f"{reference}_minus", "diff_low", "diff_high"]])
                       for r in g.index if r != reference)
        out.append(f"{m}, {k} (n = {int(ref.n)}): mean drop {ref.mean_drop:.3f} [{ref.low:.3f}, {ref.high:.3f}] "
                   f"with the {reference} ranking ({others}); the largest drop comes from {best!r}. "
                   f"The {reference} drop is {vs}.")
    return out


def concept_findings(table: pd.DataFrame, base_accuracy: float) -> list[str]:
    """Sentences on the concept neurons, written from :func:`concept_table`."""
    v = table.set_index(["units", "n_units", "measure"]).value
    out = [f"Evaluation accuracy with every neuron on: {v['none', 0, 'accuracy']:.3f} (recall positive "
           f"{v['none', 0, 'recall_pos']:.3f}, negative {v['none', 0, 'recall_neg']:.3f}); discovery-set accuracy "
           f"{base_accuracy:.3f}."]
    for n in sorted(n for n in table.n_units.unique() if n > 0):
        out.append(f"{n} concept neurons off: accuracy {v['concept', n, 'accuracy']:.3f}, recall positive "
                   f"{v['concept', n, 'recall_pos']:.3f}, negative {v['concept', n, 'recall_neg']:.3f}; "
                   f"{n} random neurons off: accuracy {v['random', n, 'accuracy']:.3f}, recall positive "
                   f"{v['random', n, 'recall_pos']:.3f}, negative {v['random', n, 'recall_neg']:.3f}.")
    return out


# -- claims -----------------------------------------------------------------------------------------
_PAPER = "Achtibat et al. 2024"
#: (ranking compared with AttnLRP's, claim id, the claim, checked in CI for these models)
_LATENT_CLAIMS = (
    ("random", "latent-vs-random", "AttnLRP explains latent units: switching off its top-ranked units lowers the "
     "logit more than switching off random ones", ("minilm-rt",)),
    ("grad x act", "latent-vs-gradxact", "AttnLRP's latent relevance ranks units more faithfully than gradient x "
     "activation", ()),
    ("cp-lrp", "latent-vs-cp-lrp", "AttnLRP's latent relevance ranks units more faithfully than CP-LRP", ()),
)


def latent_claims(figures) -> list:
    """Notebook 06's claims from ``06_faithfulness_areas.csv``: per model and unit kind, the paired
    bootstrap CI of AttnLRP's mean logit drop minus the other ranking's (CISide: > 0 reproduces)."""
    from ..claims import CISide, Claim

    areas = pd.read_csv(figures / "06_faithfulness_areas.csv")
    rows = []
    for (model, kind), g in areas.groupby(["model", "kind"], sort=False):
        g = g.set_index("ranking")
        for other, claim_id, claim, in_ci in _LATENT_CLAIMS:
            if other not in g.index:
                continue
            r = g.loc[other]
            rows.append(Claim("06", f"{claim_id}-{kind}", _PAPER, claim,
                              f"mean drop over top-k {kind} off, AttnLRP minus {other}, paired bootstrap 95% CI",
                              model, r["attnlrp_minus"], CISide(">", 0.0), r["diff_low"], r["diff_high"],
                              n=int(r["n"]), checked_in_ci=model in in_ci))
    return rows


def _register() -> None:
    from .. import claims

    claims.register("06")(latent_claims)


_register()
