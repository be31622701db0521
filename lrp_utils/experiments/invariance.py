"""Implementation invariance of attributions (You et al. 2025, claim i).

Two models that compute the same function must get the same attribution (Sundararajan et al.
2017).  Linear attention ``Y = phi(Q) phi(K)^T V`` can be computed as ``(phi(Q) phi(K)^T) V`` or as
``phi(Q) (phi(K)^T V)``: same outputs, but AttnLRP's uniform rule splits relevance per product node,
so the total relevance reaching Q : K : V is 1/4 : 1/4 : 1/2 in the first order and 1/2 : 1/4 : 1/4
in the second.  This module measures that, on a single layer and on trained pairs of
:class:`~lrp_utils.models.TinyTransformer` that share their weights and differ only in the order.

Public entry points::

    toy_table(); qkv_share_table()                         # the toy and the Q:K:V shares
    implementation_invariance(model_a, model_b, ids, "attnlrp")   # per example x level divergence
    setups = build_setups(seeds=(0, 1, 2))                 # trained equal-function pairs
    attribute(setups)                                      # relevance maps of both orders (+ LOO)
    divergence_study(setups) / loo_study(setups) / faithfulness_study(setups) / keyword_hits(setups)

Shapes: ``B`` examples, ``S`` positions, ``L`` blocks; relevance ``[B, S]`` per level, where the
levels are ``"tokens"`` (word embeddings) and ``"layer l"`` (residual stream after block ``l``,
``l = 0`` the embedding sum).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata
from tqdm.auto import tqdm

from .. import metrics, ops
from ..adapters import get_adapter
from ..batching import length_batches
from ..data import keyword_task, rotten_tomatoes
from ..engine import explain
from ..loo import logits_without, loo_by_layer, removable
from ..methods import get_method
from ..models import TinyConfig, TinyTransformer, accuracy, train
from ..toy import toy_attributions

ORDERS = ("(qk)v", "q(kv)")
#: methods run on both orders; "loo-zero" is leave-one-out that zeroes the hidden state of the
#: removed position, so it runs through each order's own arithmetic at every layer
METHODS = ("attnlrp", "gi", "ig", "cp-lrp", "loo-zero")
#: LOO with mask removal (DESIGN.md), the reference of the agreement study, is computed once per
#: pair (on the (qk)v model) and filed under this order label: with the extra removal mask both
#: models route attention through the same (qk)v code path, so a second run is bit-identical
ONCE = "once"
#: (feature map, normalize) of the two linear-attention variants
FEATURE_MAPS = {"identity": False, "elu1": True}
#: relative tolerance for "the two models compute the same logits" (float64 rounding only)
SAME_LOGITS_RTOL = 1e-9
#: a level whose L1 norm is below this fraction of the example's largest level norm is "zero"
ZERO_MAP_REL = 1e-6


# --------------------------------------------------------------------------- one layer
def qkv_shares(order: str, method: str = "attnlrp", seq: int = 8, head_dim: int = 4, seed: int = 0,
               feature_map: str = "identity", normalize: bool = False) -> dict:
    """Share of the output relevance that reaches Q, K and V of one random single-head layer.

    ``q, k, v [1, 1, seq, head_dim]`` are drawn N(0, 1) in float64; the explained scalar is a
    random read-out ``y = sum(W * Y)`` of ``Y = linear_attention(q, k, v, order)``, so the output
    relevance is ``y``.  Returns ``{"q": R_q / y, "k": ..., "v": ..., "total": ...}`` with
    ``R_t = sum(t * modified grad of y w.r.t. t)`` under ``method``.
    """
    g = torch.Generator().manual_seed(seed)
    q, k, v, w = (torch.randn(1, 1, seq, head_dim, generator=g, dtype=torch.float64) for _ in range(4))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    with ops.session(get_method(method)), torch.enable_grad():
        y = (ops.linear_attention(q, k, v, order=order, fmap=feature_map, normalize=normalize) * w).sum()
        grads = torch.autograd.grad(y, (q, k, v), allow_unused=True)  # CP-LRP: none into q, k
    y = float(y.detach())
    out = {name: 0.0 if gt is None else float((t.detach() * gt).sum()) / y
           for name, t, gt in zip("qkv", (q, k, v), grads)}
    out["total"] = out["q"] + out["k"] + out["v"]
    return out


def qkv_share_table(methods=("attnlrp", "gi", "cp-lrp"), **kwargs) -> pd.DataFrame:
    """:func:`qkv_shares` for every method and order: one row each (columns q, k, v, total)."""
    rows = [{"method": m, "order": o, **qkv_shares(o, m, **kwargs)} for m in methods for o in ORDERS]
    return pd.DataFrame(rows)


def toy_table(x=(2.0, 3.0, 4.0)) -> pd.DataFrame:
    """:func:`lrp_utils.toy.toy_attributions` as a tidy table: method, order (left = ``(x1 x2) x3``,
    right = ``x1 (x2 x3)``), input (``x1``..``x3``), relevance."""
    return pd.DataFrame([{"method": m, "order": o, "input": f"x{i + 1}", "relevance": r}
                         for m, by_order in toy_attributions(x).items()
                         for o, values in by_order.items() for i, r in enumerate(values)])


def random_pair(seed: int = 0, std: float = 0.5, **kwargs) -> dict:
    """``{order: model}``: one random float64 linear-attention layer (embedding, single head, no
    MLP, norm or bias, mean read-out) in both orders with the same weights; ``kwargs`` override
    :class:`~lrp_utils.models.TinyConfig` fields."""
    cfg = dict(vocab_size=50, d_model=16, n_layers=1, n_heads=1, attention="linear", mlp="none",
               norm="none", position="none", bias=False, readout="mean", max_len=64)
    cfg = TinyConfig(**{**cfg, **kwargs, "order": ORDERS[0]})
    models = {ORDERS[0]: TinyTransformer(cfg).double().reset_parameters(std, seed=seed).eval()}
    models[ORDERS[1]] = _other_order(models[ORDERS[0]])
    return models


def _other_order(model):
    """A float64 copy of ``model`` (same weights, same device) in the other association order."""
    order = ORDERS[1] if model.config.order == ORDERS[0] else ORDERS[0]
    other = TinyTransformer(replace(model.config, order=order)).double()
    other.load_state_dict(model.state_dict())
    return other.to(next(model.parameters()).device).eval()


# --------------------------------------------------------------------------- relevance maps
def relevance_maps(model, input_ids, method: str, attention_mask=None, target=None,
                   batch_size: int | None = None, **kwargs) -> dict:
    """``{"tokens": [B, S], "layer 0": [B, S], ..., "layer L": [B, S]}`` (CPU float64) of ``method``.

    ``"loo"`` / ``"loo-zero"``: :func:`lrp_utils.loo_by_layer` with ``removal="mask"`` / ``"zero"``
    (its layer 0 is also the token level; NaN at the read-out position and padding; ``layers=``
    restricts the LOO layers).  ``"ig"`` has
    only the token level unless ``ig_layers=True`` is passed.  Other methods: :func:`lrp_utils.explain`.
    ``batch_size``: run length-sorted chunks of this many examples, each cropped to its longest
    sequence (right padding assumed; same numbers, much faster for IG and LOO on short sentences).
    """
    ids, mask, target = _inputs(model, input_ids, attention_mask, target)
    if batch_size is None or batch_size >= len(ids):
        return _maps(model, ids, method, mask, target, **kwargs)
    B, S = ids.shape
    fill = float("nan") if method.startswith("loo") else 0.0
    out = {}
    for idx, cols in length_batches(mask, batch_size):  # each batch cropped to its longest sequence
        part = _maps(model, ids[idx, cols], method, mask[idx, cols], target[idx], **kwargs)
        for level, r in part.items():
            out.setdefault(level, torch.full((B, S), fill, dtype=torch.float64))[idx, cols] = r
    return out


def _inputs(model, input_ids, attention_mask=None, target=None):
    """``(ids [B, S], mask [B, S], target [B])`` on the model's device; target: the argmax if None."""
    ids = input_ids[None] if input_ids.dim() == 1 else input_ids
    ids = ids.to(get_adapter(model).device)
    mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask).to(ids.device)
    mask = mask[None] if mask.dim() == 1 else mask
    if target is None:
        with torch.no_grad():
            target = get_adapter(model).forward(ids, mask).argmax(-1)
    return ids, mask, torch.as_tensor(target, device=ids.device).reshape(-1).expand(len(ids))


def _maps(model, ids, method, mask, target, layers=None, **kwargs) -> dict:
    if method in ("loo", "loo-zero"):
        layers = list(range(get_adapter(model).n_layers + 1)) if layers is None else list(layers)
        removal = "mask" if method == "loo" else "zero"
        scores = loo_by_layer(model, ids, layers, target, mask, removal=removal, **kwargs)
        maps = {f"layer {l}": s.double() for l, s in zip(layers, scores)}
        return {"tokens": maps["layer 0"], **maps} if 0 in layers else maps
    exp = explain(model, ids, method, target=target, attention_mask=mask, **kwargs)
    maps = {"tokens": exp.tokens.double()}
    maps.update({f"layer {l}": r.double() for l, r in enumerate(exp.layers or [])})
    return maps


def same_logits(model_a, model_b, input_ids, attention_mask=None, rtol=SAME_LOGITS_RTOL) -> float:
    """Max ``|logits_a - logits_b|`` (``[B, n_out]`` read-out logits); raises ``ValueError`` when it
    exceeds ``rtol * max(1, max|logits_a|)``: the two models do not compute the same function."""
    with torch.no_grad():
        la, lb = (get_adapter(m).forward(input_ids, attention_mask) for m in (model_a, model_b))
    diff, scale = float((la - lb).abs().max()), max(1.0, float(la.abs().max()))
    if not diff <= rtol * scale:
        raise ValueError(f"the models compute different logits (max |diff| = {diff:.3g}); "
                         "implementation invariance compares two implementations of one function")
    return diff


def compare_maps(maps_a: dict, maps_b: dict, attention_mask=None) -> pd.DataFrame:
    """Divergence of two relevance maps, one row per example x level.

    Columns: ``rel_l1`` = ``||R_a - R_b||_1 / ||R_a||_1``; ``l1_vs_largest`` = ``||R_a - R_b||_1``
    over the example's largest ``||R_a||_1`` of any level (well conditioned even where a level's map
    nearly cancels: the column to test invariance on); ``max_token_diff`` = ``max_i |R_a,i - R_b,i|
    / ||R_a||_1``; ``shape_l1`` = ``||R_a / ||R_a||_1 - R_b / ||R_b||_1||_1`` (0..2: what is left
    after matching the scales); ``norm_ratio`` = ``||R_b||_1 / ||R_a||_1``; ``spearman`` /
    ``pearson`` between ``R_a`` and ``R_b`` (NaN when undefined, e.g. a constant map); ``top1_same``
    (the same position has the largest ``|R|``); ``max_abs_diff``.  Positions count where
    ``attention_mask`` is 1 and both maps are finite.  A level whose ``||R_a||_1`` is below
    ``ZERO_MAP_REL`` times the example's largest level norm is zero up to rounding (e.g. GI just
    before a LayerNorm read-out): its relative columns are NaN there.
    """
    levels = [level for level in maps_a if level in maps_b]
    shape = maps_a[levels[0]].shape
    M0 = np.ones(shape, bool) if attention_mask is None else metrics.to_numpy(attention_mask, bool)
    masked = lambda maps, lv, M: np.where(M, maps[lv].numpy(), np.nan)  # noqa: E731
    scale = np.max([np.nansum(np.abs(masked(maps_a, lv, M0)), 1) for lv in levels], axis=0)  # [B]
    frames = []
    for level in levels:
        M = M0 & np.isfinite(maps_a[level].numpy()) & np.isfinite(maps_b[level].numpy())
        A, B = masked(maps_a, level, M), masked(maps_b, level, M)
        na, nb = np.nansum(np.abs(A), 1), np.nansum(np.abs(B), 1)
        norm = np.where(na > ZERO_MAP_REL * scale, na, np.nan)
        d = np.abs(A - B)
        with np.errstate(invalid="ignore", divide="ignore"):
            pear, spear = _row_corr(A, B), _row_corr(rankdata(A, axis=1, nan_policy="omit"),
                                                    rankdata(B, axis=1, nan_policy="omit"))
            frames.append(pd.DataFrame({
                "example": np.arange(shape[0]), "level": level, "layer": _layer_index(level),
                "rel_l1": np.nansum(d, 1) / norm, "l1_vs_largest": np.nansum(d, 1) / scale,
                "max_token_diff": np.nanmax(d, 1) / norm,
                "shape_l1": np.nansum(np.abs(A / norm[:, None] - B / nb[:, None]), 1) * (nb / nb),
                "norm_ratio": nb / norm, "spearman": spear, "pearson": pear,
                "top1_same": _argmax_abs(A) == _argmax_abs(B), "max_abs_diff": np.nanmax(d, 1)}))
    return pd.concat(frames, ignore_index=True)


def _row_corr(X, Y):
    """Row-wise Pearson correlation of NaN-masked ``[B, S]`` arrays (NaN: < 3 values or constant),
    as :func:`lrp_utils.metrics.correlations` computes it for one row."""
    X, Y = X - np.nanmean(X, 1, keepdims=True), Y - np.nanmean(Y, 1, keepdims=True)
    n = np.isfinite(X).sum(1)
    ptp = lambda Z: np.nanmax(Z, 1) - np.nanmin(Z, 1)  # noqa: E731
    r = np.clip(np.nansum(X * Y, 1) / np.sqrt(np.nansum(X * X, 1) * np.nansum(Y * Y, 1)), -1, 1)
    return np.where((n >= 3) & (ptp(X) > 0) & (ptp(Y) > 0), r, np.nan)


def _argmax_abs(X):
    return np.argmax(np.nan_to_num(np.abs(X), nan=-1.0), axis=1)


def _layer_index(level: str) -> int:
    """``"tokens"`` -> -1, ``"layer l"`` -> ``l``."""
    return -1 if level == "tokens" else int(level.split()[1])


def implementation_invariance(model_a, model_b, input_ids, method: str, attention_mask=None,
                              target=None, rtol: float = SAME_LOGITS_RTOL, **kwargs) -> pd.DataFrame:
    """How far ``method`` gives different relevance to two models computing the same function.

    Checks first that ``model_a`` and ``model_b`` give the same logits on ``input_ids [B, S]``
    (``ValueError`` otherwise), explains both for the same ``target`` (default: ``model_a``'s argmax)
    and returns :func:`compare_maps`: one row per example and level (``"tokens"``, ``"layer 0"`` ..
    ``"layer L"``) with ``rel_l1``, ``l1_vs_largest``, ``max_token_diff``, ``shape_l1``,
    ``norm_ratio``, ``spearman``, ``pearson``, ``top1_same``, ``max_abs_diff``.
    ``df.attrs["max_logit_diff"]`` holds the logit check.  An implementation-invariant method gives
    ``l1_vs_largest ~ 0`` (rounding) everywhere.  ``method``: any name
    :func:`lrp_utils.explain` accepts, or ``"loo"`` / ``"loo-zero"``; extra keywords go to it.
    """
    ids, mask, target = _inputs(model_a, input_ids, attention_mask, target)
    diff = same_logits(model_a, model_b, ids, mask, rtol)
    maps = [relevance_maps(m, ids, method, mask, target, **kwargs) for m in (model_a, model_b)]
    df = compare_maps(*maps, attention_mask=mask.cpu())
    df.insert(0, "method", method)
    df.attrs["max_logit_diff"] = diff
    return df


# --------------------------------------------------------------------------- trained pairs
SPECIALS = ("[CLS]", "[PAD]", "[UNK]")  # ids 0, 1, 2 (as in lrp_utils.data.keyword_task)


@dataclass
class WordVocab:
    """Word-level vocabulary: ``[CLS]``, ``[PAD]``, ``[UNK]`` then words by decreasing frequency."""

    words: list

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, texts, size: int = 5000) -> "WordVocab":
        """The ``size`` most frequent whitespace words of ``texts`` (ties broken alphabetically)."""
        counts = Counter(w for t in texts for w in t.split())
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]
        return cls([*SPECIALS, *(w for w, _ in top)])

    def encode(self, texts, max_len: int = 32):
        """``(input_ids [N, S], attention_mask [N, S])``: ``[CLS]`` + words (unknown -> ``[UNK]``),
        truncated to ``max_len``, right-padded with ``[PAD]`` to the longest sequence."""
        rows = [[0, *(self.index.get(w, 2) for w in t.split())][:max_len] for t in texts]
        S = max(len(r) for r in rows)
        ids = torch.full((len(rows), S), 1, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
        return ids, mask

    def decode(self, ids) -> list:
        return [self.words[int(i)] for i in ids]


#: training recipes (quick = CI-sized: tiny model, few steps)
RECIPES = {
    "full": dict(d_model=32, n_layers=3, n_heads=4, d_ff=64, epochs=2, lr=3e-3, rt_train=None,
                 kw_train=3000),
    "quick": dict(d_model=16, n_layers=2, n_heads=2, d_ff=32, epochs=1, lr=1e-2, rt_train=800,
                  kw_train=800),
}


@dataclass
class Setup:
    """A trained equal-function pair: ``models[order]`` (float64, same weights) and its test inputs.

    ``ids``, ``mask`` ``[B, S]``, ``labels``, ``target`` (the model's prediction) ``[B]``,
    ``relevant`` ``[B, S]`` bool (keyword task: ground-truth relevant positions, else None),
    ``tokens`` (per example, its token strings), ``encode`` (texts -> ids, mask; RT only),
    ``maps[(method, order)]`` (see :func:`attribute`)."""

    task: str
    feature_map: str
    seed: int
    models: dict
    ids: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor
    tokens: list
    accuracy: float
    max_logit_diff: float
    relevant: torch.Tensor | None = None
    encode: object = None
    maps: dict = field(default_factory=dict)

    @property
    def key(self) -> dict:
        return {"task": self.task, "feature_map": self.feature_map, "seed": self.seed}

    def model(self, order: str):
        """The model of ``order`` (``ONCE``: the ``(qk)v`` one)."""
        return self.models.get(order, self.models[ORDERS[0]])


def load_task(task: str, n_examples: int, quick: bool = False, vocab_size: int = 5000,
              max_len: int = 32) -> dict:
    """Train and test data: ``{"train": (ids, mask, labels), "test": (ids, mask, labels, relevant),
    "vocab_size", "decode", "encode"}`` for ``"rt"`` (Rotten Tomatoes; word-level vocabulary of the
    training split, ``max_len`` tokens with [CLS]; the first ``n_examples`` test sentences of 3+
    words) or ``"keyword"`` (synthetic, length 16, vocabulary 32; train seed 0, test seed 1)."""
    r = RECIPES["quick" if quick else "full"]
    if task == "keyword":
        tr, te = keyword_task(r["kw_train"], seed=0), keyword_task(n_examples, seed=1)
        names = [*SPECIALS[:2], "+A", "+B", "-A", "-B", *(f"w{i}" for i in range(6, 32))]
        ones = torch.ones_like
        return {"train": (tr.input_ids, ones(tr.input_ids), tr.labels),
                "test": (te.input_ids, ones(te.input_ids), te.labels, te.relevant), "vocab_size": 32,
                "decode": lambda ids: [names[int(i)] for i in ids], "encode": None}
    if task != "rt":
        raise ValueError(f"unknown task {task!r}; valid: 'rt', 'keyword'")
    train_set = rotten_tomatoes("train")[: r["rt_train"]]
    test_set = [(t, y) for t, y in rotten_tomatoes("test") if len(t.split()) >= 3][:n_examples]
    vocab = WordVocab.build([t for t, _ in train_set], vocab_size)
    labels = lambda data: torch.tensor([y for _, y in data])  # noqa: E731
    return {"train": (*vocab.encode([t for t, _ in train_set], max_len), labels(train_set)),
            "test": (*vocab.encode([t for t, _ in test_set], max_len), labels(test_set), None),
            "vocab_size": len(vocab.words), "decode": vocab.decode,
            "encode": lambda texts: vocab.encode(texts, max_len)}


def train_pair(train_data, vocab_size: int, feature_map: str, seed: int = 0, quick: bool = False,
               max_len: int = 32, device="cpu") -> dict:
    """Train a linear-attention classifier in order ``(qk)v`` (float32, seeded), then return
    ``{"(qk)v": model, "q(kv)": copy}``: both float64, the copy built from the same ``state_dict``
    in a config with the other association order."""
    r = RECIPES["quick" if quick else "full"]
    cfg = TinyConfig(vocab_size=vocab_size, d_model=r["d_model"], n_layers=r["n_layers"],
                     n_heads=r["n_heads"], d_ff=r["d_ff"], max_len=max_len, attention="linear",
                     order=ORDERS[0], feature_map=feature_map, normalize=FEATURE_MAPS[feature_map])
    model = TinyTransformer(cfg).reset_parameters(cfg.init_std, seed=seed).to(device)
    ids, mask, labels = (t.to(device) for t in train_data)
    train(model, ids, labels, mask, epochs=r["epochs"], lr=r["lr"], seed=seed, progress=False)
    model = model.double().eval()
    return {ORDERS[0]: model, ORDERS[1]: _other_order(model)}


def build_setups(tasks=("rt", "keyword"), feature_maps=tuple(FEATURE_MAPS), seeds=(0,),
                 n_examples: int = 200, quick: bool = False, device="cpu", progress: bool = True) -> list:
    """Train one equal-function pair per task x feature map x seed; list of :class:`Setup`."""
    setups = []
    jobs = [(t, f, s) for t in tasks for f in feature_maps for s in seeds]
    data = {t: load_task(t, n_examples, quick) for t in tasks}
    for task, fmap, seed in tqdm(jobs, desc="training pairs", disable=not progress):
        d = data[task]
        ids, mask, labels, relevant = d["test"]
        max_len = max(d["train"][0].shape[1], ids.shape[1])
        models = train_pair(d["train"], d["vocab_size"], fmap, seed, quick, max_len, device)
        ids, mask = ids.to(device), mask.to(device)
        diff = same_logits(models[ORDERS[0]], models[ORDERS[1]], ids, mask)
        with torch.no_grad():
            target = models[ORDERS[0]](ids, attention_mask=mask).argmax(-1)
        acc = accuracy(models[ORDERS[0]], ids, labels.to(device), mask)
        tokens = [d["decode"](row[m.bool()]) for row, m in zip(ids.cpu(), mask.cpu())]
        setups.append(Setup(task, fmap, seed, models, ids, mask, labels, target, tokens, acc, diff,
                            relevant, d["encode"]))
    return setups


#: per-method keywords for :func:`attribute` (IG: 16 Riemann steps, invariance holds for any count;
#: LOO-zero, the invariance control, only at the token level)
METHOD_KWARGS = {"ig": {"n_steps": 16}, "loo-zero": {"layers": [0]}}


def _pairs(methods):
    """``(method, order)`` pairs: every method on both orders, ``"loo"`` once (see :data:`ONCE`)."""
    return [(m, o) for m in methods for o in ((ONCE,) if m == "loo" else ORDERS)]


def attribute(setups, methods=(*METHODS, "loo"), batch_size: int = 25, progress: bool = True) -> None:
    """Fill ``setup.maps[(method, order)]`` (see :func:`relevance_maps`) for both orders (``"loo"``
    once), explaining the same target (the prediction); length-sorted chunks of ``batch_size``."""
    jobs = [(s, m, o) for s in setups for m, o in _pairs(methods)]
    for s, m, o in tqdm(jobs, desc="explaining", disable=not progress):
        s.maps[(m, o)] = relevance_maps(s.model(o), s.ids, m, s.mask, s.target, batch_size,
                                        **METHOD_KWARGS.get(m, {}))


# --------------------------------------------------------------------------- studies
def setup_table(setups) -> pd.DataFrame:
    """One row per setup: task, feature map, seed, test accuracy, max logit difference of the orders."""
    return pd.DataFrame([{**s.key, "n": len(s.ids), "accuracy": s.accuracy,
                          "max_logit_diff": s.max_logit_diff} for s in setups])


def divergence_study(setups, methods=METHODS) -> pd.DataFrame:
    """:func:`compare_maps` between the orders for every setup and method (tidy; see there)."""
    frames = []
    for s in setups:
        for m in methods:
            df = compare_maps(s.maps[(m, ORDERS[0])], s.maps[(m, ORDERS[1])], s.mask.cpu())
            frames.append(df.assign(**s.key, method=m))
    return pd.concat(frames, ignore_index=True)


def divergence_summary(div: pd.DataFrame, by=("task", "feature_map", "method"),
                       level: str | None = "tokens") -> pd.DataFrame:
    """Mean (and max) of the :func:`compare_maps` columns per group, at one ``level`` (None: all)."""
    d = div if level is None else div[div["level"] == level]
    return d.groupby(list(by)).agg(
        rel_l1=("rel_l1", "mean"), rel_l1_max=("rel_l1", "max"), l1_vs_largest_max=("l1_vs_largest", "max"),
        max_token_diff=("max_token_diff", "mean"), shape_l1=("shape_l1", "mean"),
        norm_ratio=("norm_ratio", "mean"), spearman=("spearman", "mean"),
        top1_same=("top1_same", "mean"), max_abs_diff=("max_abs_diff", "max"), n=("rel_l1", "size"))


def loo_study(setups, methods=("attnlrp", "gi", "cp-lrp"), n_boot: int = 200) -> pd.DataFrame:
    """Per-layer agreement of each method and order with LOO (mask removal) at the same layer.

    One row per setup x method x order x layer ``0 .. L-1`` (at layer ``L`` LOO is 0 everywhere):
    mean ``pearson`` / ``spearman`` over examples and the bootstrap interval of the Spearman mean."""
    rows = []
    for s in setups:
        loo = s.maps[("loo", ONCE)]
        for m, o in _pairs(methods):
            for l in range(len(s.models[ORDERS[0]].blocks)):
                a = metrics.agreement(s.maps[(m, o)][f"layer {l}"], loo[f"layer {l}"], n_boot=n_boot)
                rows.append({**s.key, "method": m, "order": o, "layer": l, "pearson": a.pearson,
                             "spearman": a.spearman, "spearman_low": a.spearman_ci[0],
                             "spearman_high": a.spearman_ci[1]})
    return pd.DataFrame(rows)


FAITH_FRACTIONS = np.linspace(0.0, 1.0, 6)


def faithfulness_study(setups, methods=("attnlrp", "gi", "ig", "cp-lrp", "loo"), fractions=FAITH_FRACTIONS,
                       batch_size: int = 50) -> pd.DataFrame:
    """MoRF / LeRF token-removal curves (mask removal, score = the predicted class's logit; [CLS]
    is never removed) for every setup x method x order: one row per curve point (``fraction``,
    mean ``score``) with the curve's ``area`` and ``area_between`` (LeRF area - MoRF area; larger =
    more faithful).  Examples run in length-sorted chunks of ``batch_size``."""
    rows = []
    for s in setups:
        valid = removable(get_adapter(s.models[ORDERS[0]]), s.mask).cpu()
        cache = {}  # the same removal set (e.g. none, all) is scored once per model and chunk
        for m, o in _pairs(methods):
            curves = {"morf": [], "lerf": []}
            for c, (idx, cols) in enumerate(length_batches(s.mask, batch_size)):
                ids, mask, target = s.ids[idx, cols], s.mask[idx, cols], s.target[idx]
                score = lambda rm, ids=ids, mask=mask, t=target, key=(o, c): _cached(  # noqa: E731
                    cache, (*key, rm.cpu().numpy().tobytes()),
                    lambda: logits_without(s.model(key[0]), ids, rm, mask).gather(1, t[:, None])[:, 0])
                rel = torch.nan_to_num(s.maps[(m, o)]["tokens"][idx, cols])
                res = metrics.morf_lerf(score, rel, valid=valid[idx, cols], fractions=fractions)
                curves["morf"].append(res.morf.scores)
                curves["lerf"].append(res.lerf.scores)
            res = metrics.MorfLerf(*(metrics.CurveResult(np.asarray(fractions), np.concatenate(c, 1))
                                     for c in curves.values()))
            for name, curve in (("morf", res.morf), ("lerf", res.lerf)):
                for f, y in zip(curve.fractions, curve.scores.mean(1)):
                    rows.append({**s.key, "method": m, "order": o, "curve": name, "fraction": f,
                                 "score": y, "area": curve.area, "area_between": res.area_between})
    return pd.DataFrame(rows)


def _cached(cache: dict, key, fn):
    if key not in cache:
        cache[key] = fn()
    return cache[key]


def keyword_hits(setups, methods=(*METHODS, "loo")) -> pd.DataFrame:
    """Ground-truth check (keyword task): per example, the fraction of the ``k`` positions with the
    largest ``|R|`` (``k`` = number of keywords, [CLS] excluded) that are keywords.  Mean per setup x
    method x order (column ``precision_at_k``)."""
    rows = []
    for s in (s for s in setups if s.relevant is not None):
        valid = removable(get_adapter(s.models[ORDERS[0]]), s.mask).cpu()
        k = s.relevant.sum(1)
        for m, o in _pairs(methods):
            r = torch.nan_to_num(s.maps[(m, o)]["tokens"]).abs().masked_fill(~valid, -1.0)
            top = torch.argsort(r, dim=1, descending=True, stable=True)
            hit = [s.relevant[b, top[b, :k[b]]].float().mean().item() for b in range(len(r))]
            rows.append({**s.key, "method": m, "order": o, "precision_at_k": float(np.mean(hit))})
    return pd.DataFrame(rows)


def heatmap_rows(setup: Setup, i: int, methods=("attnlrp", "gi", "cp-lrp", "loo")):
    """``(tokens, {"method order": [n]})`` of example ``i`` for :func:`lrp_utils.viz.token_heatmap`
    (LOO's NaN at [CLS] shown as 0)."""
    n = int(setup.mask[i].sum())
    rows = {f"{m} {o}" if o != ONCE else m: torch.nan_to_num(setup.maps[(m, o)]["tokens"][i, :n])
            for m, o in _pairs(methods)}
    return setup.tokens[i], rows


def pick_example(div: pd.DataFrame, setup: Setup, method: str = "attnlrp", lengths=(8, 16),
                 quantile: float = 0.5) -> int:
    """Index of a typical example of ``setup`` for display: the ``quantile`` of ``method``'s token-level
    ``rel_l1`` among examples with ``lengths[0] .. lengths[1]`` tokens (all examples if none)."""
    d = div[(div["level"] == "tokens") & (div["method"] == method)]
    d = d[(d[list(setup.key)] == pd.Series(setup.key)).all(axis=1)]
    n = setup.mask.sum(1).cpu().numpy()[d["example"].to_numpy()]
    inside = d[(n >= lengths[0]) & (n <= lengths[1])]
    d = (inside if len(inside) else d).sort_values(["rel_l1", "example"])
    return int(d["example"].iloc[int(quantile * (len(d) - 1))])


def findings_table(div, agree, faith, hits) -> pd.DataFrame:
    """One row per task x feature map (means over seeds and examples): AttnLRP's divergence between
    the orders (token level), the largest divergence of the invariant methods, Spearman with LOO at
    layer 0 per order, area between the LeRF and MoRF curves per order, keyword precision per order."""
    by = ["task", "feature_map"]
    tok = div[div["level"] == "tokens"]
    att = tok[tok["method"] == "attnlrp"].groupby(by)
    out = pd.DataFrame({"attnlrp_rel_l1": att["rel_l1"].mean(),
                        "attnlrp_max_token_diff": att["max_token_diff"].mean(),
                        "attnlrp_shape_l1": att["shape_l1"].mean(),
                        "attnlrp_norm_ratio": att["norm_ratio"].mean(),
                        "attnlrp_spearman_ab": att["spearman"].mean(),
                        "attnlrp_top1_same": att["top1_same"].mean(),
                        "invariant_max_rel_l1": tok[tok["method"] != "attnlrp"].groupby(by)["rel_l1"].max()})
    a0 = agree[(agree["layer"] == 0) & (agree["method"] == "attnlrp")]
    area = faith[(faith["method"] == "attnlrp") & (faith["curve"] == "morf") & (faith["fraction"] == 0)]
    for o in ORDERS:
        out[f"loo_spearman_L0 {o}"] = a0[a0["order"] == o].groupby(by)["spearman"].mean()
        out[f"area_between {o}"] = area[area["order"] == o].groupby(by)["area_between"].mean()
        if len(hits):
            h = hits[(hits["method"] == "attnlrp") & (hits["order"] == o)]
            out[f"keyword_p@k {o}"] = h.groupby(by)["precision_at_k"].mean()
    return out
