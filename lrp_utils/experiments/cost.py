"""Cost of one explanation versus leave-one-out, and equality with the reference library lxt.

* :func:`scaling_table`: wall time of one forward pass, of one explanation (one forward + one
  modified backward) and of leave-one-out (LOO: one forward per removable position) as the
  sequence grows, with random token ids. LOO is not run in full: ``n_loo`` removals are timed as
  one batch (the same code :func:`lrp_utils.loo.loo` runs) and the time per removal is multiplied
  by the number of removable positions ``S - 1``. Memory: the bytes an explanation keeps alive for
  its backward pass (tensors saved by autograd, parameters excluded, each storage once; counted
  with ``torch.autograd.graph.saved_tensors_hooks``) and the process's peak resident memory
  (``resource.getrusage``, a high-water mark: lengths are run in increasing order).
* :func:`lxt_agreement`: our explanations against the committed lxt fixtures
  (``tests/fixtures/lxt_*.pt``), cosine similarity and max error per model and method.
"""
from __future__ import annotations

import importlib.util
import resource
import time

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..adapters import get_adapter
from ..engine import explain
from ..loo import logits_without
from ..paths import ROOT


def _seconds(fn, repeats: int, warm_up: bool = True) -> tuple[float, float]:
    """``(wall, cpu)``: the fastest of ``repeats`` runs of ``fn()`` (after an untimed warm-up run) in
    wall seconds and in CPU seconds of this process (all threads; robust to other jobs on the machine)."""
    if warm_up:
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def saved_bytes(model, fn) -> int:
    """Bytes of the tensors autograd saves for the backward while ``fn()`` runs (each storage
    counted once, the model's parameters excluded)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = max(seen.get(s.data_ptr(), 0), s.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def scaling_table(model, lengths=(16, 32, 64, 128, 256, 512), method: str = "attnlrp", n_loo: int = 4,
                  repeats: int = 3, seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """Time and memory of one explanation vs one forward vs LOO, per sequence length.

    One row per length ``S`` (random ids, batch 1), wall seconds ``t_*`` and CPU seconds ``cpu_*``:
    ``forward`` (one forward through the same adapter path LOO uses), ``explain``
    (``explain(model, ids, method)``), ``t_loo_per_removal`` (a batch of ``n_loo`` removals divided by
    ``n_loo``) and ``loo = (S - 1) * per removal`` (extrapolated); the ratios
    ``explain_in_forwards`` and ``loo_over_explain`` (from CPU seconds); ``saved_mb`` (memory kept for
    the backward, see module doc) and ``peak_rss_mb``. Times are the fastest of ``repeats`` runs
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
        mem = saved_bytes(model, lambda: explain(model, ids, method))  # also the explanation's warm-up
        t_fwd, c_fwd = _seconds(lambda: logits_without(model, ids, none), r, warm)
        t_exp, c_exp = _seconds(lambda: explain(model, ids, method), r, warm_up=False)
        t_row, c_row = (t / k for t in _seconds(lambda: logits_without(model, loo_ids, removed), r, warm))
        rows.append({"seq_len": S, "t_forward": t_fwd, "t_explain": t_exp, "t_loo_per_removal": t_row,
                     "t_loo": (S - 1) * t_row, "cpu_forward": c_fwd, "cpu_explain": c_exp,
                     "cpu_loo": (S - 1) * c_row, "explain_in_forwards": c_exp / c_fwd,
                     "loo_over_explain": (S - 1) * c_row / c_exp, "saved_mb": mem / 2**20,
                     "peak_rss_mb": _peak_rss_mb()})
    return pd.DataFrame(rows)


def _lxt_loader():
    path = ROOT / "tests" / "fixtures" / "lxt_loader.py"
    spec = importlib.util.spec_from_file_location("lxt_loader", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lxt_agreement(names=("llama_gqa", "bert", "gpt2")) -> pd.DataFrame:
    """Our token relevance vs lxt's on the committed fixtures, one row per (model, method):
    ``cosine`` (all tokens of the batch flattened), ``max_rel_error`` (max |ours - lxt| / max |lxt|)
    and ``logit_abs_error``; the fixtures hold float64 tiny random models (see ``tests/fixtures``)."""
    loader = _lxt_loader()
    rows = []
    for name in names:
        model, fix = loader.load_lxt_fixture(loader.fixture_path(name))
        for method, ref in fix["relevance"].items():
            exp = explain(model, fix["input_ids"], method, target=fix["target"], attention_mask=fix["attention_mask"])
            ours, ref = exp.tokens.flatten().double(), ref.flatten().double()
            rows.append({"model": name, "method": method, "lxt_version": fix.get("lxt_version"),
                         "cosine": float(torch.nn.functional.cosine_similarity(ours, ref, dim=0)),
                         "max_rel_error": float((ours - ref).abs().max() / ref.abs().max()),
                         "logit_abs_error": float((exp.logit.double() - fix["logit"].double()).abs().max())})
    return pd.DataFrame(rows)
