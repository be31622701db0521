"""Layer-wise leave-one-out at every layer against one batched forward and the naive loop, in one run.

    python benchmarks/bench_loo.py [--quick] [--threads N] [--out benchmarks/results_loo.csv]

Models (random weights: cost does not depend on them): a MiniLM-sized BERT (6 x 384), a
SmolLM2-sized LLaMA (576 wide, GQA 9/3) with 8 blocks (the comparison of issue 19) and with
SmolLM2's 30 blocks; 32, 64 and 128 tokens, batch 1.  ``T = S - 1`` removals per layer.

* ``forward``: the Hugging Face model's own forward of the ``T`` removal rows as one batch
  (``[T, S]``; causal LMs compute only the last position's logits), the unit of the ratios.
* ``loo``: ``lrp_utils.loo_by_layer`` at all ``L + 1`` layers (causal prefix reuse on decoders,
  read-out-only last block, see ``lrp_utils.reuse``).
* ``plain``: the same with ``reuse=False`` (every removal runs all positions of the later blocks;
  the implementation before issue 19); skipped where it would take long (``PLAIN_MAX``).
* ``naive``: for every layer and position one full forward of the whole model with the position
  removed.  Its cost per removal does not depend on the position, so it is timed on
  ``NAIVE_SAMPLE`` evenly spaced positions per layer and scaled to all ``T`` (its numbers are
  compared with ``loo`` there).

Floors: the plain path needs ``(L+1)/2`` forwards' worth of block passes, causal reuse about
``(L+1)/4``; the read-out-only last block takes about one block per layer off both.  Timing
interleaves forward, loo and plain for up to 3 rounds (``ROUND_BUDGET_S`` per configuration);
the ratios are medians of per-round ratios.  The 1-minute load average of the machine is recorded.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import minilm_sized, smollm2_sized  # noqa: E402

from lrp_utils import loo_by_layer  # noqa: E402
from lrp_utils.adapters import get_adapter  # noqa: E402
from lrp_utils.loo import run_suffix  # noqa: E402
from lrp_utils.methods import METHODS  # noqa: E402
from lrp_utils.profiling import best_of, paired_ratio, paired_times  # noqa: E402

MODELS = {"MiniLM-sized BERT (6 x 384)": minilm_sized,
          "SmolLM2-sized LLaMA, 8 blocks": lambda: smollm2_sized(n_layers=8),
          "SmolLM2-sized LLaMA (30 x 576)": smollm2_sized}
PLAIN_MAX = 2000  # run the plain path only where blocks x tokens <= this (30 x 128 would take ~20 min)
NAIVE_SAMPLE = 4  # naive removals timed per layer
ROUND_BUDGET_S = 120.0  # stop repeating a configuration after this much time (at least one round)


def forward(model, ids):
    """One batched forward of ``ids [T, S]`` (only the last position's logits for causal LMs)."""
    kw = {"logits_to_keep": 1} if get_adapter(model).task == "causal" else {}
    with torch.no_grad():
        return model(ids, **kw).logits


@torch.no_grad()
def naive(model, ids, positions):
    """``[L+1, S]`` LOO by one full forward per layer and removed position (NaN off ``positions``)."""
    ad = get_adapter(model)
    mask = torch.ones_like(ids)
    out = torch.full((ad.n_layers + 1, ids.shape[1]), float("nan"))
    with ad.session(METHODS["gi"]):
        full = ad.forward(ids, mask)
        t = full.argmax(-1)
        for layer in range(ad.n_layers + 1):
            for i in positions:
                _, h, ctx = ad.start(ids, mask)  # the whole model again, every time
                h = ad.run(h, ctx, end=layer)
                removed = torch.zeros_like(ids, dtype=torch.bool)
                removed[0, i] = True
                out[layer, i] = full[0, t] - run_suffix(ad, h, ctx, layer, removed)[0, t]
    return out


def measure(name, model, S) -> dict:
    ad = get_adapter(model)
    L, T = ad.n_layers, S - 1
    ids = torch.randint(0, 1000, (1, S))
    load = os.getloadavg()[0]
    fns = {"forward": lambda: forward(model, ids.expand(T, S)), "loo": lambda: loo_by_layer(model, ids)}
    if L * S <= PLAIN_MAX:
        fns["plain"] = lambda: loo_by_layer(model, ids, reuse=False)
    times = paired_times(fns, budget_s=ROUND_BUDGET_S, min_rounds=1, max_rounds=3, warm_up=False)
    fast = loo_by_layer(model, ids)
    sample = torch.linspace(0, T - 1, NAIVE_SAMPLE).round().long().unique().tolist()
    naive_s, _ = best_of(lambda: naive(model, ids, sample), repeats=1, warm_up=False)
    naive_s *= T / len(sample)
    slow = naive(model, ids, sample)
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = (fast[:, 0, sample].float() - slow[:, sample]).nan_to_num().abs().max()
    if "plain" in fns:
        diff = max(diff, (fast - loo_by_layer(model, ids, reuse=False)).nan_to_num().abs().max())
    return dict(model=name, blocks=L, tokens=S, threads=torch.get_num_threads(), load=round(load, 1),
                rounds=len(times["forward"]), forward_s=med["forward"], loo_s=med["loo"],
                plain_s=med.get("plain", float("nan")), naive_s=naive_s,
                loo_per_forward=paired_ratio(times, "loo", "forward"), plain_per_forward=paired_ratio(times, "plain", "forward"),
                floor_reuse=(L + 1) / (4 if ad.causal else 2), floor_plain=(L + 1) / 2,
                naive_per_loo=naive_s / med["loo"], max_abs_diff=float(diff))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="32 tokens, the BERT and the 8-block LLaMA only")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results_loo.csv")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = []
    for name, build in list(MODELS.items())[: 2 if a.quick else 3]:
        torch.manual_seed(0)
        model = build()
        loo_by_layer(model, torch.randint(0, 1000, (1, 8)))  # warm-up
        for S in [32] if a.quick else [32, 64, 128]:
            rows.append(measure(name, model, S))
            df = pd.DataFrame(rows)
            print(df.iloc[-1:].to_string(index=False, header=len(rows) == 1, float_format="%.4g"), flush=True)
            df.to_csv(a.out, index=False, float_format="%.4g")


if __name__ == "__main__":
    main()
