"""Notebook 02: AttnLRP (Achtibat et al. 2024): the cost of one explanation against leave-one-out.

* :func:`scaling_table`: wall time of one forward pass, of one explanation (one forward + one
  modified backward) and of leave-one-out (LOO: one forward per removable position) as the
  sequence grows, with random token ids. LOO is not run in full: ``n_loo`` removals are timed as
  one batch (the same code :func:`lrp_utils.loo.loo` runs) and the time per removal is multiplied
  by the number of removable positions ``S - 1``. Memory: the bytes an explanation keeps alive for
  its backward pass (:func:`lrp_utils.profiling.saved_bytes`: tensors saved by autograd,
  parameters excluded, each storage once).  Peak resident memory per call is measured by
  ``benchmarks/`` in fresh processes (a process's high-water mark is meaningless here).

The notebook's other pieces are library calls: the conservation audit (:mod:`lrp_utils.audit`),
MoRF / LeRF faithfulness (:mod:`lrp_utils.perturbation`) and equality with lxt (:mod:`lrp_utils.lxt`).
"""
from __future__ import annotations

import pandas as pd
import torch
from ..progress import tqdm

from .. import profiling
from ..adapters import get_adapter
from ..engine import explain
from ..loo import logits_without


def scaling_table(model, lengths=(16, 32, 64, 128, 256, 512), method: str = "attnlrp", n_loo: int = 4,
                  repeats: int = 3, seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """Time and memory of one explanation vs one forward vs LOO, per sequence length.

    One row per length ``S`` (random ids, batch 1), wall seconds ``t_*`` and CPU seconds ``cpu_*``:
    ``forward`` (one forward through the same adapter path LOO uses), ``explain``
    (``explain(model, ids, method)``), ``t_loo_per_removal`` (a batch of ``n_loo`` removals divided by
    ``n_loo``) and ``loo = (S - 1) * per removal`` (extrapolated); the ratios
    ``explain_in_forwards`` and ``loo_over_explain`` (from CPU seconds) and ``saved_mb`` (memory kept
    for the backward, see module doc). Times are the fastest of ``repeats`` runs
    after a warm-up run (``S >= 128``: one run; ``S >= 256``: no warm-up, the shorter lengths have
    warmed every code path; the explanation is warmed up by the memory measurement).
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
        removed[torch.arange(k), torch.arange(k) + (1 if adapter.task == "classify" else 0)] = True
        r, warm = (1, S < 256) if S >= 128 else (repeats, True)
        mem = profiling.saved_bytes(model, lambda: explain(model, ids, method))  # also the explanation's warm-up
        t_fwd, c_fwd = profiling.best_of(lambda: logits_without(model, ids, none), r, warm)
        t_exp, c_exp = profiling.best_of(lambda: explain(model, ids, method), r, warm_up=False)
        t_row, c_row = (t / k for t in profiling.best_of(lambda: logits_without(model, loo_ids, removed), r, warm))
        rows.append({"seq_len": S, "t_forward": t_fwd, "t_explain": t_exp, "t_loo_per_removal": t_row,
                     "t_loo": (S - 1) * t_row, "cpu_forward": c_fwd, "cpu_explain": c_exp,
                     "cpu_loo": (S - 1) * c_row, "explain_in_forwards": c_exp / c_fwd,
                     "loo_over_explain": (S - 1) * c_row / c_exp, "saved_mb": mem / 2**20})
    return pd.DataFrame(rows)
