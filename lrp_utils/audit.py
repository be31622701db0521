"""Where the explained logit's relevance goes: per-layer sums, conservation tables, an absorption audit.

* :func:`layer_sums`: total relevance of every residual stream (``Explanation.layer_sums()``) and of
  the word embeddings, against the logit, for several methods (Ali et al. 2022, Fig. 2 style).
* :func:`absorption_audit`: per stage (read-out head, each block, the embeddings) the relevance that
  enters from above (``r_out``), the relevance that leaves below (``r_in``) and their difference
  ``absorbed = r_out - r_in``, split into

  - ``softmax``: lost in the softmax, ``sum R(probs) - sum R(scores)``. Under AttnLRP's Taylor rule
    ``R(x)_j = x_j (R(p)_j - p_j sum_k R(p)_k)`` per query row, so the row loses
    ``sum_j R(p)_j (1 - x_j) + (sum_j p_j x_j) sum_k R(p)_k``: the share of the Taylor expansion's
    bias term (either sign). Measured exactly inside the attention function;
  - ``products``: lost (+) or created (-) at the bilinear products ``q @ k^T`` and ``A @ V`` by the
    method's gradient scales (0 for AttnLRP's uniform rule and for CP-LRP; not 0 for GI, whose
    plain gradient counts each product's relevance twice);
  - ``bias``: absorbed by the biases of linear layers, ``sum_i b_i * g_i`` over every output of
    every ``nn.Linear`` (the epsilon-rule with eps = 0 gives the bias exactly this share);
  - ``other``: the rest: LayerNorm's beta, the position / token-type share at the embeddings,
    non-conservative rules of GI (LayerNorm std, activations), and rounding.

The softmax and product terms are read through the ``on_attention`` callback of
:func:`lrp_utils.ops.session` (every softmax attention reports its q, k, v and output), the bias
terms through forward hooks on the adapter's ``biased_linears()``; both are removed on exit.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import torch

from . import checks, metrics, ops, runner
from .adapters import get_adapter
from .engine import explain
from .methods import get_method


def layer_sums(model, input_ids, attention_mask, methods, target=None, batch_size: int = 16,
               progress: bool = True) -> pd.DataFrame:
    """Per-layer relevance sums against the logit, one row per (method, example, layer).

    ``layer``: ``-1`` = word-embedding tokens (``Explanation.tokens``), ``0 .. L`` = residual
    streams (``layers[0]`` input to block 1, ``layers[l]`` output of block ``l``). Columns ``sum``,
    ``logit`` and ``ratio = sum / logit``. ``target=None`` explains the argmax of the model.
    """
    exps = runner.explain_many(model, input_ids, attention_mask, methods, target, batch_size=batch_size,
                               progress=progress)
    frames = []
    for m, exp in exps.items():
        sums = torch.cat([exp.tokens.sum(-1)[None], exp.layer_sums()])  # [L+2, n]
        n_rows, n = sums.shape
        frames.append(pd.DataFrame({"method": m, "example": np.tile(np.arange(n), n_rows),
                                    "layer": np.repeat(np.arange(-1, n_rows - 1), n), "sum": sums.reshape(-1).numpy(),
                                    "logit": np.tile(exp.logit.numpy(), n_rows)}))
    df = pd.concat(frames, ignore_index=True).sort_values(["method", "layer", "example"], kind="stable")
    return df.assign(ratio=df["sum"] / df["logit"]).reset_index(drop=True)


def conservation_table(sums, logit) -> pd.DataFrame:
    """Per-layer relevance sums against the explained logit.

    Args:
        sums: ``[L + 1, n]`` tensor/array, or a list of ``L + 1`` tensors ``[n]``: total
            relevance at each layer (0 = input) for each example.
        logit: ``[n]`` the explained logit.

    Returns one row per layer: ``layer``, ``mean_sum``, ``mean_logit``, ``mean_ratio`` (mean of
    sum / logit; inf/NaN where a logit is 0), ``median_ratio``, ``mean_abs_error`` (mean
    |sum - logit|), ``max_abs_error`` and ``mean_rel_error`` (mean |sum - logit| / |logit|).
    """
    if isinstance(sums, (list, tuple)):
        sums = np.stack([metrics.to_numpy(s).ravel() for s in sums])
    S, z = metrics.to_numpy(sums), metrics.to_numpy(logit).ravel()
    if S.ndim != 2 or S.shape[1] != z.size:
        raise ValueError(f"sums must be [L+1, n] with n = {z.size}, got shape {S.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio, err = S / z, np.abs(S - z)
        rel = err / np.abs(z)
    return pd.DataFrame({
        "layer": np.arange(len(S)), "mean_sum": S.mean(1), "mean_logit": z.mean(),
        "mean_ratio": ratio.mean(1), "median_ratio": np.median(ratio, axis=1),
        "mean_abs_error": err.mean(1), "max_abs_error": err.max(1), "mean_rel_error": rel.mean(1),
    })


def conservation_tables(sums: pd.DataFrame) -> pd.DataFrame:
    """:func:`conservation_table` of each method of :func:`layer_sums` (layers ``0 .. L``) in one frame."""
    out = []
    for m, g in sums[sums["layer"] >= 0].groupby("method", sort=False):
        wide = g.pivot(index="layer", columns="example", values="sum")
        logit = g.drop_duplicates("example").set_index("example")["logit"].loc[wide.columns]
        out.append(conservation_table(wide.to_numpy(), logit.to_numpy()).assign(method=m))
    return pd.concat(out, ignore_index=True)[["method", *out[0].columns.drop("method")]]


def layer_ratio_summary(sums: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per (method, layer) of :func:`layer_sums`: ``ratio = mean(sum) / mean(logit)`` (the share of
    the logit the layer's relevance adds up to; a ratio of means, robust to examples with a logit
    near 0), its percentile-bootstrap 95% interval over examples (``low``, ``high``) and the median
    of the per-example ratios."""
    rows = []
    for (m, layer), g in sums.groupby(["method", "layer"], sort=False):
        ci = metrics.bootstrap(g[["sum", "logit"]].to_numpy(), "ratio_of_means", n_boot, seed=seed)
        rows.append((m, layer, *ci, float(np.median(g["sum"] / g["logit"]))))
    return pd.DataFrame(rows, columns=["method", "layer", "ratio", "low", "high", "median_ratio"])


class _Recorder:
    """Collects per-example absorbed relevance ``[B]`` per stage while one explanation runs."""

    def __init__(self, adapter):
        self.adapter = adapter
        self.terms: dict = {}

    def add(self, term, module, value):
        block = self.adapter.block_index(module)
        key = (term, "readout" if block is None else block)
        self.terms[key] = self.terms.get(key, 0) + value.detach().double().cpu()

    def linear_hook(self, module, inputs, out):
        if out.requires_grad:
            dims = tuple(range(1, out.dim()))
            out.register_hook(lambda g: self.add("bias", module, (g * module.bias).sum(dims)))

    def attention(self, call: ops.AttentionCall):
        """``on_attention`` callback: softmax and product terms from the gradient ``g`` at the
        attention output (scores and probabilities recomputed from q, k by the call)."""
        if call.out.requires_grad:
            x, p, v = call.scores(), call.probs(), ops.repeat_kv(call.v.detach(), call.n_rep)
            call.out.register_hook(lambda g: self.add_attention(call, g, x, p, v))

    def add_attention(self, call, g, x, p, v):
        m = call.method
        out = torch.matmul(p, v)
        gp = m.attn * torch.matmul(g, v.transpose(-1, -2))  # gradient reaching the probabilities
        gx = p * (gp - (p * gp).sum(-1, keepdim=True))  # through the softmax (Taylor rule)
        r_out, r_p = (out * g).sum((1, 2, 3)), (p * gp).sum((1, 2, 3))
        r_x = torch.where(p > 0, x * gx, torch.zeros_like(x)).sum((1, 2, 3))
        self.add("softmax", call.module, r_p - r_x)
        self.add("products", call.module, -(m.attn + m.value - 1) * r_out - (2 * m.qk - 1) * r_x)


@contextlib.contextmanager
def _recording(adapter):
    rec = _Recorder(adapter)
    handles = [mod.register_forward_hook(rec.linear_hook) for mod in adapter.biased_linears()]
    try:
        with ops.session(on_attention=rec.attention):
            yield rec
    finally:
        for h in handles:
            h.remove()


def absorption_audit(model, input_ids, attention_mask, method: str = "attnlrp", target=None,
                     batch_size: int = 8, progress: bool = True) -> pd.DataFrame:
    """Relevance absorbed per stage and per cause (see module doc), one row per (example, stage).

    Stages top-down: ``stage_index`` ``L+1`` = read-out head (``r_out`` = logit, ``r_in`` =
    ``sum layers[L]``), ``l = L .. 1`` = block ``l`` (``r_out = sum layers[l]``, ``r_in = sum
    layers[l-1]``), ``0`` = embeddings (``r_in`` = word-embedding tokens). Columns ``absorbed``,
    ``softmax``, ``products``, ``bias``, ``other`` (the remainder) and ``logit``; divide by ``logit``
    for shares. Hugging Face models only.
    """
    adapter = get_adapter(model)
    if get_method(method).positions:
        raise ValueError("absorption_audit does not split position relevance; use a method without it")
    tgt = checks.per_example(target, len(input_ids))
    frames = []
    for b in runner.batches(model, input_ids, attention_mask, batch_size, progress, f"audit {method}"):
        with _recording(adapter) as rec:
            exp = explain(model, b.input_ids, method, target=None if tgt is None else tgt[b.rows],
                          attention_mask=b.attention_mask)
        frames += _audit_rows(rec, exp, b.rows, adapter.n_layers)
    df = pd.concat(frames, ignore_index=True)
    df["other"] = df["absorbed"] - df["softmax"] - df["products"] - df["bias"]
    return df.sort_values(["stage_index", "example"], ascending=[False, True], kind="stable").reset_index(drop=True)


def _audit_rows(rec, exp, rows, L: int) -> list:
    """One frame per stage of one batch (see :func:`absorption_audit`)."""
    sums = [s.double() for s in exp.layer_sums()]
    ups = [exp.logit.double(), *sums[::-1]]  # logit, layers[L], ..., layers[0]
    downs = [*sums[::-1], exp.tokens.sum(-1).double()]
    frames = []
    for j, (up, down) in enumerate(zip(ups, downs)):
        key = "readout" if j == 0 else (L - j if j <= L else None)
        zero = torch.zeros(len(rows), dtype=torch.float64)
        terms = {t: rec.terms.get((t, key), zero) if key is not None else zero for t in ("softmax", "products", "bias")}
        frames.append(pd.DataFrame({
            "example": rows.numpy(), "stage_index": L + 1 - j,
            "stage": "readout" if j == 0 else ("embeddings" if j > L else f"block {L + 1 - j}"),
            "r_out": up.numpy(), "r_in": down.numpy(), "absorbed": (up - down).numpy(),
            **{t: v.numpy() for t, v in terms.items()}, "logit": exp.logit.double().numpy()}))
    return frames


def audit_summary(audit: pd.DataFrame) -> pd.DataFrame:
    """Per stage: each term summed over examples divided by the summed logit (a ratio of means: the
    share of the explained logit, robust to examples with a logit near 0)."""
    cols = ["r_out", "r_in", "absorbed", "softmax", "products", "bias", "other"]
    g = audit.groupby(["stage_index", "stage"], sort=False)
    return g[cols].sum().div(g["logit"].sum(), axis=0).reset_index()
