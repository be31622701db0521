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
    """``batch_size`` in the config is the loop's: same table at 2 as at the default; 0 is refused up front."""
    pd.testing.assert_frame_equal(run._sort(run.run_shard("layer_sums", {**CFG, "batch_size": 2}, 0, 6)),
                                  run._sort(run.run_shard("layer_sums", CFG, 0, 6)), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="batch_size must be an integer in >= 1, got 0"):
        run.run_shard("layer_sums", {**CFG, "batch_size": 0}, 0, 6)


# ------------------------------------------------------------------------------------- bad configs (CLI)
TINY = {"model": "tiny", "tiny": {"vocab_size": 40, "d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32,
                                  "max_len": 16}, "n_examples": 2, "max_length": 8, "methods": ["gi"],
        "device": "cpu", "kwargs": {"progress": False}}
SHORT_TABLE = {k: v for k, v in TINY.items() if k != "max_length"}  # random data's default length: 12
BAD = {  # name: (config text, words the one-line message must contain)
    "unparseable": ('{"model": "tiny",', "not valid JSON"),
    "list": ('[{"model": "tiny"}]', "must be a JSON/YAML object"),
    "no_model": (json.dumps({"data": "random"}), "needs a 'model'"),
    "unknown_model": (json.dumps({"model": "gpt-5"}), "unknown model 'gpt-5'; valid: 'tiny', 'minilm-rt'"),
    "unknown_recipe": (json.dumps({"model": "minilm-rt", "recipe": "huge"}),
                       "unknown recipe 'huge'; valid recipes: quick"),
    "unknown_data": (json.dumps({**TINY, "data": "wiki"}), "unknown data 'wiki'; valid: 'rt-test'"),
    "tiny_rt": (json.dumps({**TINY, "data": "rt-test"}), "data 'rt-test' needs a tokenizer"),
    "tiny_natural": (json.dumps({**TINY, "data": "natural"}), "data 'natural' needs a tokenizer"),
    "n_examples_0": (json.dumps({**TINY, "n_examples": 0}), "n_examples must be an integer in >= 1, got 0"),
    "batch_size_neg": (json.dumps({**TINY, "batch_size": -2}), "batch_size must be"),
    "max_length_0": (json.dumps({**TINY, "max_length": 0}), "max_length must be"),
    "max_length_float": (json.dumps({**TINY, "max_length": 8.5}), "max_length must be an integer"),
    "n_examples_bool": (json.dumps({**TINY, "n_examples": True}), "n_examples must be an integer"),
    "tiny_too_long": (json.dumps({**TINY, "max_length": 17}),
                      "max_length 17 exceeds the position table of 'tiny' (16 positions)"),
    "real_too_long": (json.dumps({"model": "minilm-rt", "data": "rt-test", "max_length": 600}),
                      "max_length 600 exceeds the position table of 'minilm-rt' (512 positions)"),
    "unknown_key": (json.dumps({**TINY, "n_exmaples": 3}),
                    "unknown config key(s) 'n_exmaples'; valid keys: model, recipe"),
    "bad_dtype": (json.dumps({**TINY, "dtype": "float31"}), "dtype must name a torch float type"),
    "tiny_field": (json.dumps({**TINY, "tiny": {"colour": 1}}), "colour"),
    "tiny_value": (json.dumps({**TINY, "tiny": {"position": "spiral"}}), "position"),
    "kwargs_list": (json.dumps({**TINY, "kwargs": [1]}), "'kwargs' must be an object"),
    "default_length_too_long": (json.dumps({**SHORT_TABLE, "tiny": {**TINY["tiny"], "max_len": 10}}),
                                "max_length 12 exceeds the position table of 'tiny' (10 positions)"),
    "unknown_method": (json.dumps({**TINY, "methods": ["gi", "lrp-magic"]}),
                       "unknown method(s) 'lrp-magic'; valid: gi"),
    "methods_string": (json.dumps({**TINY, "methods": "gi"}), "methods must be a non-empty list"),
    "seed_for_converted": (json.dumps({"model": "smollm2-135m", "model_seed": 2}), "does not use one"),
}


def _main_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        run.main(argv)
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_is_one_error_line_and_status_2(case, tmp_path, capsys):
    text, words = BAD[case]
    cfg = tmp_path / "cfg.json"
    cfg.write_text(text)
    err = _main_error(capsys, ["layer_sums", "--config", str(cfg), "--out", str(tmp_path / "out.csv")])
    assert any(w in err for w in words.split("|")), err
    assert not (tmp_path / "out.csv").exists()


def test_missing_and_bad_yaml_config_files(tmp_path, capsys):
    err = _main_error(capsys, ["layer_sums", "--config", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o.csv")])
    assert "cannot read config file" in err and "nope.json" in err
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model: [tiny\n")
    err = _main_error(capsys, ["layer_sums", "--config", str(cfg), "--out", str(tmp_path / "o.csv")])
    assert "is not valid YAML" in err


def test_value_errors_while_loading_become_one_error_line(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(TINY))

    def broken(cfg, device):
        raise TypeError("weights of the wrong\nshape")

    monkeypatch.setattr(run, "load_model", broken)
    err = _main_error(capsys, ["layer_sums", "--config", str(cfg), "--out", str(tmp_path / "o.csv")])
    assert err == "error: weights of the wrong shape\n"


def test_validate_config_accepts_the_valid_configs():
    for cfg in (CFG, TINY, {"model": "minilm-rt", "recipe": "quick", "model_seed": 2, "data": "rt-test",
                            "max_length": 512, "dtype": "bfloat16"}):
        assert run.validate_config(cfg) is cfg


def test_bad_config_through_the_real_command_line(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**TINY, "data": "rt-test"}))
    proc = subprocess.run([sys.executable, "-m", "lrp_utils.run", "layer_sums", "--config", str(cfg),
                           "--out", str(tmp_path / "o.csv")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: data 'rt-test' needs a tokenizer") and proc.stderr.count("\n") == 1
