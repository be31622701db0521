"""lrp_utils.studies.attnlrp (notebook 02: faithfulness driver, paired table, scaling table, claims from
the CSVs), lrp_utils.profiling (timing, saved-tensor bytes) and the lxt agreement table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import hf_model
from tolerances import LXT_MAX_REL_ERR, LXT_MIN_COSINE

from lrp_utils import claims, explain, lxt, profiling, tasks
from lrp_utils.studies import attnlrp as study


def test_scaling_table_columns_and_extrapolation():
    model = hf_model("llama")
    df = study.scaling_table(model, lengths=(16, 8), n_loo=3, repeats=1, progress=False)
    assert list(df.seq_len) == [8, 16]
    assert (df[["t_forward", "t_gradient", "t_explain", "t_loo_per_removal", "saved_mb"]] > 0).all().all()
    assert ((df.t_loo - (df.seq_len - 1) * df.t_loo_per_removal).abs() < 1e-12).all()
    assert np.allclose(df.explain_over_gradient, df.cpu_explain / df.cpu_gradient, rtol=1e-12, atol=0)
    assert df.saved_mb.iloc[1] > df.saved_mb.iloc[0]  # longer input, more saved activations
    assert "peak_rss_mb" not in df and (df.load_1min >= 0).all()  # a process high-water mark says nothing per call


def test_saved_bytes_counts_only_autograd_tensors():
    model = hf_model("bert")
    ids = torch.randint(3, 60, (1, 6))
    with torch.no_grad():
        assert profiling.saved_bytes(model, lambda: model(ids)) == 0  # no graph: nothing saved
    assert profiling.saved_bytes(model, lambda: model(ids)) > 0  # parameters require grad
    assert profiling.saved_bytes(model, lambda: explain(model, ids, "attnlrp")) > 6 * 32 * 8


def test_saved_bytes_counts_storages_freed_during_the_call():
    """Three graphs built and dropped one after the other: each saves its own 4 kB input, whose address
    the allocator may hand to the next one; all three are counted, and repeat calls agree exactly."""
    def fn():
        for _ in range(3):
            x = torch.randn(1000, dtype=torch.float32, requires_grad=True)
            (x * x).sum()  # saves x for the backward; graph and x are freed at the next iteration

    model = torch.nn.Linear(1, 1)
    assert profiling.saved_bytes(model, fn) == 3 * 1000 * 4
    model = hf_model("llama")
    ids = torch.randint(3, 60, (1, 7))
    runs = {profiling.saved_bytes(model, lambda: explain(model, ids, "cp-lrp")) for _ in range(3)}
    assert len(runs) == 1


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


# ----------------------------------------------------------------------------- faithfulness
def test_task_faithfulness_ig_on_a_subset_only():
    model = hf_model("llama")
    ids = torch.randint(3, 60, (5, 7))
    mask = torch.ones_like(ids)
    mask[3, 5:] = 0
    task = tasks.set_targets(model, tasks.inputs_task(model, ids, mask))
    res, seconds = study.task_faithfulness(model, task, ["random", "gi", "ig", "attnlrp"], [0, 0.5, 1], n_ig=2,
                                           ig_steps=4, score="logprob")
    a = res.areas[res.areas.metric == "LeRF-MoRF"]
    assert sorted(a[a.method == "ig"].example) == [0, 1]  # IG: the first n_ig examples only
    assert all(sorted(a[a.method == m].example) == list(range(5)) for m in ["random", "gi", "attnlrp"])
    assert "ig" not in set(res.curves.method) and {"gi", "ig", "perturbation"} <= set(seconds)
    # log-probabilities are <= 0: every curve point is
    assert (res.curves["mean"] <= 1e-12).all()


def _areas(diffs: dict, n=40, seed=0):
    """Per-example areas: attnlrp ~ N(1, 0.3); method m = attnlrp - diffs[m] + small noise."""
    rng = np.random.default_rng(seed)
    base = 1 + 0.3 * rng.standard_normal(n)
    rows = [("toy", "attnlrp", i, v) for i, v in enumerate(base)]
    for m, (d, k) in diffs.items():
        rows += [("toy", m, i, base[i] - d + 0.05 * rng.standard_normal()) for i in range(k)]
    df = pd.DataFrame(rows, columns=["model", "method", "example", "value"])
    return df.assign(metric="LeRF-MoRF")[["model", "method", "metric", "example", "value"]]


def test_paired_table_pairs_on_common_examples():
    areas = _areas({"gi": (0.5, 40), "ig": (-0.5, 10)})
    p = study.paired_table(areas).set_index("method")
    w = areas.pivot(index="example", columns="method", values="value")
    assert p.loc["ig", "n"] == 10 and p.loc["gi", "n"] == 40
    want = float((w.attnlrp[:10] - w.ig[:10]).mean())
    assert abs(p.loc["ig", "diff"] - want) < 1e-12 and p.loc["ig", "high"] < 0  # IG ahead on its subset
    assert p.loc["gi", "low"] > 0 and p.loc["gi", "low"] <= p.loc["gi", "diff"] <= p.loc["gi", "high"]


# ----------------------------------------------------------------------------- claims
def _write_csvs(folder, diffs, lxt_err=1e-7, cp_absorbed=0.0):
    _areas(diffs).to_csv(folder / study.AREAS_CSV, index=False)
    stages = [("readout", 3), ("block 2", 2), ("block 1", 1), ("embeddings", 0)]
    rows = []
    for m, soft in [("attnlrp", 0.1), ("cp-lrp", 0.0), ("gi", 0.2)]:
        for stage, i in stages:
            ab = soft if m != "cp-lrp" else cp_absorbed
            rows.append({"stage": stage, "stage_index": i, "r_out": 1.0, "r_in": 1.0 - ab, "absorbed": ab,
                         "softmax": soft, "products": 0.0, "bias": 0.0, "other": ab - soft, "model": "toy",
                         "method": m})
    pd.DataFrame(rows).to_csv(folder / "02_audit.csv", index=False)
    pd.DataFrame({"seq_len": [16, 32, 64], "explain_over_gradient": [1.1, 1.2, 1.3],
                  "loo_over_explain": [3.0, 8.0, 20.0]}).to_csv(folder / "02_cost.csv", index=False)
    pd.DataFrame({"model": ["llama_gqa", "llama_gqa", "bert"], "method": ["attnlrp", "gi", "attnlrp"],
                  "cosine": 1.0, "max_rel_error": [lxt_err, 0.0, 1e-15]}).to_csv(folder / "02_lxt_agreement.csv",
                                                                                  index=False)


def test_claims_from_csvs_verdicts(tmp_path):
    _write_csvs(tmp_path, {"cp-lrp": (0.0, 40), "gi": (0.5, 40), "ig": (-0.5, 10), "random": (1.0, 40)})
    rows = {(c.claim_id, c.model): c for c in study.claims_from_csvs(tmp_path)}
    assert rows["faithful-vs-gi", "toy"].verdict == "reproduced"
    assert rows["faithful-vs-ig", "toy"].verdict == "contradicted" and rows["faithful-vs-ig", "toy"].n == 10
    assert rows["faithful-vs-cp-lrp", "toy"].verdict == "not reproduced"
    assert rows["audit-softmax-absorbs", "toy"].verdict == "reproduced"
    assert rows["audit-only-softmax", "toy"].verdict == "reproduced"  # absorbed == softmax for attnlrp
    assert rows["audit-cp-conserves", "toy"].verdict == "reproduced"
    assert rows["cost-vs-gradient", "smollm2-135m (random ids)"].value == 1.2
    assert rows["cost-vs-loo", "smollm2-135m (random ids)"].verdict == "reproduced"
    assert rows["lxt-equal", "lxt fixture llama_gqa"].verdict == "reproduced"
    assert all(isinstance(c, claims.Claim) and c.notebook == "02" for c in rows.values())


def test_claims_from_csvs_can_fail(tmp_path):
    _write_csvs(tmp_path, {"gi": (-0.5, 40)}, lxt_err=1e-3, cp_absorbed=0.2)
    rows = {(c.claim_id, c.model): c for c in study.claims_from_csvs(tmp_path)}
    assert rows["faithful-vs-gi", "toy"].verdict == "contradicted"
    assert rows["lxt-equal", "lxt fixture llama_gqa"].verdict == "not reproduced"
    assert rows["audit-cp-conserves", "toy"].verdict == "not reproduced"


def test_claims_builder_is_registered():
    assert claims.builders()["02"] is study.claims_from_csvs


def test_areas_frame_and_stage_ticks():
    res = study.F.Faithfulness(areas=pd.DataFrame({"method": ["gi", "gi"], "metric": ["MoRF", "LeRF-MoRF"],
                                                   "example": [0, 0], "value": [1.0, 0.123456789]}),
                               curves=pd.DataFrame(), summary=pd.DataFrame())
    df = study.areas_frame({"m": res})
    assert list(df.columns) == ["model", "method", "metric", "example", "value"] and len(df) == 1
    assert df.value[0] == 0.123457
    pos, labels = study.stage_ticks(30)
    assert pos[0] == 31 and labels[0] == "head" and pos[-1] == 0 and labels[-1] == "emb"
    assert "25" in labels and "5" in labels and "30" not in labels and "1" not in labels  # no clash with head / emb
    assert study.stage_ticks(6) == ([7, 6, 5, 4, 3, 2, 1, 0], ["head", "6", "5", "4", "3", "2", "1", "emb"])


@pytest.mark.parametrize("max_words", [None, 5])
def test_rt_sentences(max_words):
    pairs = study.rt_sentences(7, max_words)
    assert len(pairs) == 7 and all(y in (0, 1) for _, y in pairs)
    assert max_words is None or all(len(t.split()) <= max_words for t, _ in pairs)


def test_faithfulness_caption(tmp_path):
    _write_csvs(tmp_path, {"cp-lrp": (0.0, 40), "gi": (0.5, 40), "ig": (-0.5, 10)})
    text = study.faithfulness_caption(tmp_path)
    assert "toy: AttnLRP ahead of gi (n = 40); behind ig (n = 10); tied with cp-lrp (n = 40)" in text
    assert claims.captions()["02"][0] == "02_faithfulness.png"
