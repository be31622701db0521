"""Batched leave-one-out at every layer versus the naive loop, in the same run.

    python benchmarks/bench_loo.py [--quick] [--out benchmarks/results_loo.csv]

MiniLM-sized BERT (random weights), sequence lengths 32..128.  ``naive``: for every layer l and
every position i, one full forward of the whole model with i masked from layer l on (what a
straightforward implementation does).  ``batched``: ``lrp_utils.loo_by_layer`` (prefix computed
once, removals batched through the remaining blocks).  Both give the same numbers (checked here).
Goal: naive / batched >= 10.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import minilm_sized  # noqa: E402

from lrp_utils import loo_by_layer  # noqa: E402
from lrp_utils.adapters import get_adapter  # noqa: E402
from lrp_utils.loo import run_suffix  # noqa: E402
from lrp_utils.profiling import Clock  # noqa: E402


@torch.no_grad()
def naive(model, ids):
    ad = get_adapter(model)
    mask = torch.ones_like(ids)
    ctx = ad.prepare(ids, mask)
    full = ad.forward(ids, mask)
    t = full.argmax(-1)
    out = torch.full((ad.n_layers + 1, ids.shape[1]), float("nan"))
    with ad.attention_function():
        for layer in range(ad.n_layers + 1):
            for i in range(1, ids.shape[1]):
                h = ad.combine(ad.embed_parts(ids, ctx))  # whole model again, every time
                for j in range(layer):
                    h = ad.block(j, h, ctx)
                removed = torch.zeros_like(ids, dtype=torch.bool)
                removed[0, i] = True
                out[layer, i] = full[0, t] - run_suffix(ad, h, ctx, layer, removed)[0, t]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results_loo.csv")
    a = p.parse_args()
    torch.manual_seed(0)
    model = minilm_sized()
    rows = []
    for S in ([32] if a.quick else [32, 64, 128]):
        ids = torch.randint(0, 1000, (1, S))
        clock = Clock()
        fast = clock("batched", lambda: loo_by_layer(model, ids, batch_size=64))
        slow = clock("naive", lambda: naive(model, ids))
        t_fast, t_slow = clock.wall["batched"], clock.wall["naive"]
        err = float((fast[:, 0].float() - slow).nan_to_num().abs().max())
        rows.append(dict(seq=S, layers=fast.shape[0], batched_s=t_fast, naive_s=t_slow,
                         speedup=t_slow / t_fast, max_abs_diff=err))
        print(pd.DataFrame(rows[-1:]).round(4).to_string(index=False, header=len(rows) == 1), flush=True)
    df = pd.DataFrame(rows)
    df.round(4).to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
