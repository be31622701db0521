"""Where the explained logit's relevance goes: per-layer sums and an absorption audit.

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
from tqdm.auto import tqdm

from .. import metrics, ops
from ..adapters import get_adapter
from ..batching import length_batches
from ..engine import explain
from ..methods import get_method


def layer_sums(model, input_ids, attention_mask, methods, target=None, batch_size: int = 16,
               progress: bool = True) -> pd.DataFrame:
    """Per-layer relevance sums against the logit, one row per (method, example, layer).

    ``layer``: ``-1`` = word-embedding tokens (``Explanation.tokens``), ``0 .. L`` = residual
    streams (``layers[0]`` input to block 1, ``layers[l]`` output of block ``l``). Columns ``sum``,
    ``logit`` and ``ratio = sum / logit``. ``target=None`` explains the argmax of the model.
    """
    dev = get_adapter(model).device
    n = len(input_ids)
    tgt = None if target is None else torch.as_tensor(target).long().reshape(-1).expand(n)
    frames = []
    for m in tqdm(list(methods), desc="layer sums", disable=not progress):
        for idx, cols in length_batches(attention_mask, batch_size):
            exp = explain(model, input_ids[idx, cols].to(dev), m, attention_mask=attention_mask[idx, cols].to(dev),
                          target=None if tgt is None else tgt[idx])
            sums = torch.cat([exp.tokens.sum(-1)[None], exp.layer_sums()]).double()  # [L+2, b]
            layer = np.repeat(np.arange(-1, sums.shape[0] - 1), len(idx))
            frames.append(pd.DataFrame({"method": m, "example": np.tile(idx.numpy(), sums.shape[0]),
                                        "layer": layer, "sum": sums.reshape(-1).numpy(),
                                        "logit": np.tile(exp.logit.double().numpy(), sums.shape[0])}))
    df = pd.concat(frames, ignore_index=True).sort_values(["method", "layer", "example"], kind="stable")
    return df.assign(ratio=df["sum"] / df["logit"]).reset_index(drop=True)


def conservation_tables(sums: pd.DataFrame) -> pd.DataFrame:
    """:func:`lrp_utils.metrics.conservation_table` of each method (layers ``0 .. L``) in one frame."""
    out = []
    for m, g in sums[sums["layer"] >= 0].groupby("method", sort=False):
        wide = g.pivot(index="layer", columns="example", values="sum")
        logit = g.drop_duplicates("example").set_index("example")["logit"].loc[wide.columns]
        out.append(metrics.conservation_table(wide.to_numpy(), logit.to_numpy()).assign(method=m))
    return pd.concat(out, ignore_index=True)[["method", *out[0].columns.drop("method")]]


def layer_ratio_summary(sums: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per (method, layer) of :func:`layer_sums`: ``ratio = mean(sum) / mean(logit)`` (the share of
    the logit the layer's relevance adds up to; a ratio of means, robust to examples with a logit
    near 0), its percentile-bootstrap 95% interval over examples (``low``, ``high``) and the median
    of the per-example ratios."""
    rows = []
    for (m, layer), g in sums.groupby(["method", "layer"], sort=False):
        s, z = g["sum"].to_numpy(), g["logit"].to_numpy()
        idx = np.random.default_rng(seed).integers(0, len(s), (n_boot, len(s)))
        low, high = np.quantile(s[idx].mean(1) / z[idx].mean(1), [0.025, 0.975])
        rows.append((m, layer, s.mean() / z.mean(), low, high, float(np.median(s / z))))
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
    n, L = len(input_ids), adapter.n_layers
    tgt = None if target is None else torch.as_tensor(target).long().reshape(-1).expand(n)
    frames = []
    for idx, cols in tqdm(list(length_batches(attention_mask, batch_size)), desc=f"audit {method}", disable=not progress):
        with _recording(adapter) as rec:
            exp = explain(model, input_ids[idx, cols].to(adapter.device), method, target=None if tgt is None else tgt[idx],
                          attention_mask=attention_mask[idx, cols].to(adapter.device))
        sums = [s.double() for s in exp.layer_sums()]
        ups = [exp.logit.double(), *sums[::-1]]  # logit, layers[L], ..., layers[0]
        downs = [*sums[::-1], exp.tokens.sum(-1).double()]
        for j, (up, down) in enumerate(zip(ups, downs)):
            key = "readout" if j == 0 else (L - j if j <= L else None)
            zero = torch.zeros(len(idx), dtype=torch.float64)
            terms = {t: rec.terms.get((t, key), zero) if key is not None else zero
                     for t in ("softmax", "products", "bias")}
            frames.append(pd.DataFrame({
                "example": idx.numpy(), "stage_index": L + 1 - j,
                "stage": "readout" if j == 0 else ("embeddings" if j > L else f"block {L + 1 - j}"),
                "r_out": up.numpy(), "r_in": down.numpy(), "absorbed": (up - down).numpy(),
                **{t: v.numpy() for t, v in terms.items()}, "logit": exp.logit.double().numpy()}))
    df = pd.concat(frames, ignore_index=True)
    df["other"] = df["absorbed"] - df["softmax"] - df["products"] - df["bias"]
    return df.sort_values(["stage_index", "example"], ascending=[False, True], kind="stable").reset_index(drop=True)


def audit_summary(audit: pd.DataFrame) -> pd.DataFrame:
    """Per stage: each term summed over examples divided by the summed logit (a ratio of means: the
    share of the explained logit, robust to examples with a logit near 0)."""
    cols = ["r_out", "r_in", "absorbed", "softmax", "products", "bias", "other"]
    g = audit.groupby(["stage_index", "stage"], sort=False)
    return g[cols].sum().div(g["logit"].sum(), axis=0).reset_index()
