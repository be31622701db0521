"""lrp_utils.studies.attnlrp (the scaling table), lrp_utils.profiling (timing, saved-tensor bytes) and
the lxt agreement table."""
from __future__ import annotations

import torch
from conftest import hf_model
from tolerances import LXT_MAX_REL_ERR, LXT_MIN_COSINE

from lrp_utils import explain, lxt, profiling
from lrp_utils.studies import attnlrp as cost


def test_scaling_table_columns_and_extrapolation():
    model = hf_model("llama")
    df = cost.scaling_table(model, lengths=(16, 8), n_loo=3, repeats=1, progress=False)
    assert list(df.seq_len) == [8, 16]
    assert (df[["t_forward", "t_explain", "t_loo_per_removal", "saved_mb"]] > 0).all().all()
    assert ((df.t_loo - (df.seq_len - 1) * df.t_loo_per_removal).abs() < 1e-12).all()
    assert df.saved_mb.iloc[1] > df.saved_mb.iloc[0]  # longer input, more saved activations
    assert "peak_rss_mb" not in df  # a process high-water mark says nothing per call (benchmarks/ measure it)


def test_saved_bytes_counts_only_autograd_tensors():
    model = hf_model("bert")
    ids = torch.randint(3, 60, (1, 6))
    with torch.no_grad():
        assert profiling.saved_bytes(model, lambda: model(ids)) == 0  # no graph: nothing saved
    assert profiling.saved_bytes(model, lambda: model(ids)) > 0  # parameters require grad
    assert profiling.saved_bytes(model, lambda: explain(model, ids, "attnlrp")) > 6 * 32 * 8


def test_lxt_agreement_table():
    df = lxt.agreement()
    assert set(df.model) == set(lxt.NAMES) and "attnlrp" in set(df.method) and "cp-lrp" in set(df.method)
    assert (df.cosine >= LXT_MIN_COSINE).all() and (df.max_rel_error <= LXT_MAX_REL_ERR).all()


def test_clock_and_best_of():
    clock = profiling.Clock()
    assert clock("a", lambda: sum(range(10_000))) == sum(range(10_000))
    with clock.measure("a"):
        sum(range(10_000))
    assert set(clock.wall) == set(clock.cpu) == {"a"} and clock.wall["a"] > 0
    calls = []
    wall, cpu = profiling.best_of(lambda: calls.append(1), repeats=3)
    assert len(calls) == 4 and 0 <= wall and 0 <= cpu  # one warm-up + three timed runs
    times = profiling.paired_times({"x": lambda: None, "y": lambda: sum(range(1000))}, budget_s=0.01, min_rounds=3)
    assert len(times["x"]) == len(times["y"]) >= 3 and profiling.paired_ratio(times, "y", "y") == 1.0
