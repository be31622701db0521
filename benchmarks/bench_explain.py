"""Cost of one explanation relative to a plain forward + backward, in the same run.

    python benchmarks/bench_explain.py [--quick] [--out benchmarks/results_explain.csv]

For a MiniLM-sized BERT and a SmolLM2-sized LLaMA (random weights: cost does not depend on the
weights) and sequence lengths 32..512, prints the median time of
* ``plain``: the Hugging Face model's own forward + ``autograd.grad`` of the target logit to the
  input embeddings (the cheapest way to get Gradient x Input),
* ``explain(attnlrp)`` and ``explain(cp-lrp)`` (which also return every layer's relevance),
and the ratios, plus the ratio of peak tensor memory (torch profiler).  Goal: attnlrp / plain <= 1.15.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import minilm_sized, peak_memory, smollm2_sized, timeit  # noqa: E402

from lrp_utils import explain  # noqa: E402


def plain(model, ids):
    emb = model.get_input_embeddings()(ids).detach().requires_grad_()
    out = model(inputs_embeds=emb).logits
    logit = out[:, -1] if out.dim() == 3 else out
    torch.autograd.grad(logit.max(-1).values.sum(), emb)


def run(quick: bool) -> pd.DataFrame:
    torch.manual_seed(0)
    lengths = [32, 128] if quick else [32, 64, 128, 256, 512]
    rows = []
    for name, build in [("MiniLM-sized BERT", minilm_sized), ("SmolLM2-sized LLaMA", smollm2_sized)]:
        model = build()
        for S in lengths:
            ids = torch.randint(0, 1000, (1, S))
            reps = 3 if S <= 128 else 2
            t = {"plain": timeit(lambda: plain(model, ids), reps)}
            for m in ("attnlrp", "cp-lrp"):
                t[m] = timeit(lambda: explain(model, ids, m), reps)
            mem_plain = peak_memory(lambda: plain(model, ids))
            mem_lrp = peak_memory(lambda: explain(model, ids, "attnlrp"))
            rows.append(dict(model=name, seq=S, plain_s=t["plain"], attnlrp_s=t["attnlrp"],
                             cp_lrp_s=t["cp-lrp"], attnlrp_ratio=t["attnlrp"] / t["plain"],
                             cp_lrp_ratio=t["cp-lrp"] / t["plain"], peak_mem_ratio=mem_lrp / mem_plain))
            print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False, header=len(rows) == 1), flush=True)
    return pd.DataFrame(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results_explain.csv")
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    df = run(a.quick)
    print("\n" + df.round(3).to_markdown(index=False) if hasattr(df, "to_markdown") else df.round(3))
    df.round(4).to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
