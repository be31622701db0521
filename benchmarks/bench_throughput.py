"""Throughput of the experiment loops, on one process and on two data-parallel processes.

    python benchmarks/bench_throughput.py [--quick] [--out benchmarks/results_throughput.csv]

Runs the real models (MiniLM-RT, its quick recipe: cost does not depend on how long it was
fine-tuned, on Rotten Tomatoes test sentences; SmolLM2-135M on natural sentences; both built and
cached on first use) through ``python -m lrp_utils.run``, exactly as a
user would, with

* ``layer_sums`` / ``attnlrp``: explanations per second (one explanation per example, all layers),
* ``loo_agreement`` / ``attnlrp``: layer-wise LOO at every layer plus the explanation, examples per
  second,

first as one process (all cores to PyTorch's threads), then through
``accelerate launch --multi_gpu --num_processes 2`` (one thread per process; on a machine
without GPUs the processes run on the CPU and gather through gloo).  The time is that of the loop
alone (model loading excluded), the slowest shard's; ``speedup`` = 2-process throughput / 1-process.
Both runs write the same table up to float32 rounding (batches are formed within each shard, so
padding and summation order differ): ``max_rel_diff`` is the largest difference of a numeric
column relative to that column's largest magnitude.  On a GPU machine the same command runs one
process per GPU.
"""
from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

CASES = [  # (model, data, experiment, n_examples full, n_examples quick, max_length)
    ("minilm-rt", "rt-test", "layer_sums", 256, 32, 64),
    ("minilm-rt", "rt-test", "loo_agreement", 32, 8, 64),
    ("smollm2-135m", "natural", "layer_sums", 64, 8, 32),
    ("smollm2-135m", "natural", "loo_agreement", 8, 2, 32),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(experiment: str, cfg: Path, out: Path, processes: int) -> float:
    """Loop seconds reported by ``lrp_utils.run`` on ``processes`` processes."""
    tail = ["-m", "lrp_utils.run", experiment, "--config", str(cfg), "--out", str(out)]
    if processes == 1:
        cmd = [sys.executable, *tail]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
               str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), *tail]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return float(re.search(r"loop ([0-9.]+) s", proc.stdout).group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results_throughput.csv")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model, data, experiment, n_full, n_quick, max_length in CASES:
            n = n_quick if a.quick else n_full
            cfg = {"model": model, "recipe": "quick", "data": data, "n_examples": n, "max_length": max_length,
                   "methods": ["attnlrp"], "device": "cpu", "kwargs": {"progress": False}}
            path = tmp / "cfg.json"
            path.write_text(json.dumps(cfg))
            secs = {k: _run(experiment, path, tmp / f"{k}.csv", k) for k in (1, 2)}
            one, two = pd.read_csv(tmp / "1.csv"), pd.read_csv(tmp / "2.csv")
            num = one.select_dtypes("number").columns
            diff = ((one[num] - two[num]).abs().max() / one[num].abs().max().clip(lower=1e-12)).max()
            rows.append(dict(model=model, experiment=experiment, n_examples=n,
                             per_s_1proc=n / secs[1], per_s_2proc=n / secs[2], speedup=secs[1] / secs[2],
                             max_rel_diff=float(diff)))
            print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False, header=len(rows) == 1), flush=True)
    df = pd.DataFrame(rows)
    df.round(4).to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
