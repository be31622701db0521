"""lrp_utils.run: the same table from one process and from two data-parallel processes (accelerate)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pandas as pd
import pytest

from lrp_utils import run

CFG = {"model": "tiny", "tiny": {"vocab_size": 40, "d_model": 16, "n_layers": 2, "n_heads": 2, "d_ff": 32},
       "dtype": "float64", "data": "random", "n_examples": 6, "max_length": 8,
       "methods": ["gi", "attnlrp"], "device": "cpu", "kwargs": {"progress": False}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_give_the_single_process_table(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(CFG))
    run.main(["layer_sums", "--config", str(cfg), "--out", str(tmp_path / "single.csv")])
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    cmd = [*accelerate, "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "lrp_utils.run", "layer_sums", "--config", str(cfg), "--out", str(tmp_path / "multi.csv")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 2 process(es)" in proc.stdout
    single, multi = pd.read_csv(tmp_path / "single.csv"), pd.read_csv(tmp_path / "multi.csv")
    assert single.shape == multi.shape == (2 * 6 * 4, 6)
    pd.testing.assert_frame_equal(single, multi, rtol=1e-12, atol=1e-12)


def test_shards_are_reindexed_to_global_examples():
    cfg = dict(CFG)
    whole = run.run_shard("layer_sums", cfg, 0, 6)
    part = run.run_shard("layer_sums", cfg, 3, 6)
    assert sorted(part["example"].unique()) == [3, 4, 5]
    merged = whole[whole["example"] >= 3].sort_values(["method", "layer", "example"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(merged, part.sort_values(["method", "layer", "example"]).reset_index(drop=True),
                                  rtol=1e-12, atol=1e-12)


def test_unknown_experiment_and_data_are_clear_errors():
    with pytest.raises(ValueError, match="valid: layer_sums"):
        run.run_shard("nope", CFG, 0, 1)
    with pytest.raises(ValueError, match="unknown data"):
        run.load_inputs({**CFG, "data": "wiki"}, None, None)


@pytest.mark.parametrize("name", ["positional_budget", "positional_faithfulness"])
def test_notebook05_loops_run_sharded(name):
    """Notebook 05's loops through lrp_utils.run: two shards together give the whole table."""
    cfg = {**CFG, "tiny": {**CFG["tiny"], "position": "learned"}, "methods": ["attnlrp", "pa-lrp"]}
    whole = run._sort(run.run_shard(name, cfg, 0, 6))
    parts = run._sort(pd.concat([run.run_shard(name, cfg, 0, 3), run.run_shard(name, cfg, 3, 6)]))
    assert set(whole["method"]) == {"attnlrp", "pa-lrp"} and sorted(whole["example"].unique()) == list(range(6))
    pd.testing.assert_frame_equal(whole, parts, rtol=1e-12, atol=1e-12)
    if name == "positional_budget":  # learned PE: the positions' share is what the tokens miss
        pa = whole[whole.method == "pa-lrp"]
        assert (pa["positions"].abs() > 0).all()


def test_config_batch_size_reaches_the_loop():
    """``batch_size`` in the config is the loop's: same table at 2 as at the default; 0 is refused there."""
    pd.testing.assert_frame_equal(run._sort(run.run_shard("layer_sums", {**CFG, "batch_size": 2}, 0, 6)),
                                  run._sort(run.run_shard("layer_sums", CFG, 0, 6)), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="batch_size must be an integer in >= 1"):
        run.run_shard("layer_sums", {**CFG, "batch_size": 0}, 0, 6)
