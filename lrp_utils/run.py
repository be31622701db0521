"""Run an experiment loop over a dataset, on one process or data-parallel with ``accelerate``.

    python -m lrp_utils.run loo_agreement --config cfg.json --out results.csv
    accelerate launch --multi_gpu --num_processes 2 -m lrp_utils.run loo_agreement --config cfg.json --out results.csv

(``--multi_gpu`` starts the processes with torchrun; on a machine without GPUs they run on the CPU
and talk through gloo, which is how the test runs it.)

Each process takes its contiguous shard of the examples, runs the same library function the
notebooks call, the per-example tables are gathered, re-indexed to global example numbers, sorted,
and written once by the main process: the result is identical to the single-process table.

Experiments (the per-dataset loops of the notebooks, each a library function returning a tidy
DataFrame with a global ``example`` column):

==========================  ========  ===============================================================
name                        notebook  function
==========================  ========  ===============================================================
``layer_sums``              01, 02    :func:`lrp_utils.audit.layer_sums`
``faithfulness``            01, 02    :func:`lrp_utils.perturbation.run_faithfulness` (areas)
``loo_agreement``           04        :func:`lrp_utils.studies.loo_layers.loo_agreement`
``positional_budget``       05        :func:`lrp_utils.studies.positional.budget_table`
``positional_faithfulness`` 05        :func:`lrp_utils.studies.positional.faithfulness_table`
==========================  ========  ===============================================================

Config (JSON or YAML) keys, all optional but ``model``:

* ``model``: a name for :func:`lrp_utils.models.load` (``"minilm-rt"``, ``"smollm2-135m"``) or
  ``"tiny"`` with ``tiny`` (TinyConfig fields), ``tiny_seed`` and ``tiny_std`` (random weights).
* ``recipe``, ``device`` (``"auto"`` = this process's accelerator), ``dtype`` (``"float32"``,
  ``"bfloat16"``, ...), ``device_map`` (e.g. ``"auto"`` for models larger than one device).
* ``data``: ``"rt-test"`` (Rotten Tomatoes test split), ``"natural"`` (natural sentences for
  next-token prediction) or ``"random"`` (random ids, for tests); ``n_examples``, ``max_length``,
  ``seed``.
* ``methods``, ``batch_size`` and the experiment's own keyword arguments under ``kwargs``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

EXPERIMENTS = {
    "layer_sums": ("lrp_utils.audit", "layer_sums"),
    "loo_agreement": ("lrp_utils.studies.loo_layers", "loo_agreement"),
    "faithfulness": ("lrp_utils.perturbation", "run_faithfulness"),
    "positional_budget": ("lrp_utils.studies.positional", "budget_table"),
    "positional_faithfulness": ("lrp_utils.studies.positional", "faithfulness_table"),
}


def read_config(path) -> dict:
    text = Path(path).read_text()
    if str(path).endswith((".yml", ".yaml")):
        import yaml

        return yaml.safe_load(text)
    return json.loads(text)


def load_model(cfg: dict, device):
    """``(model, tokenizer or None)`` as the config says."""
    dtype = getattr(torch, cfg.get("dtype", "float32"))
    if cfg["model"] == "tiny":
        from .models import TinyConfig, TinyTransformer

        model = TinyTransformer(TinyConfig(**cfg.get("tiny", {})))
        model.reset_parameters(cfg.get("tiny_std", 0.5), seed=cfg.get("tiny_seed", 0))
        return model.to(device=device, dtype=dtype).eval(), None
    from .models import load

    kwargs = {"device_map": cfg["device_map"]} if cfg.get("device_map") else {"device": device}
    return load(cfg["model"], recipe=cfg.get("recipe", "full"), dtype=dtype, **kwargs)


def load_inputs(cfg: dict, model, tokenizer):
    """``(input_ids [N, S], attention_mask [N, S])`` (right-padded) for the configured data."""
    n, seed = cfg.get("n_examples", 100), cfg.get("seed", 0)
    if cfg.get("data", "random") == "random":
        gen = torch.Generator().manual_seed(seed)
        vocab = model.config.vocab_size
        ids = torch.randint(1, vocab, (n, cfg.get("max_length", 12)), generator=gen)
        mask = torch.ones_like(ids)
        lengths = torch.randint(ids.shape[1] // 2, ids.shape[1] + 1, (n,), generator=gen)
        mask[torch.arange(ids.shape[1])[None] >= lengths[:, None]] = 0
        return ids * mask, mask
    from . import data

    if cfg["data"] == "rt-test":
        texts = [t for t, _ in data.rotten_tomatoes("test", seed=seed)][:n]
    elif cfg["data"] == "natural":
        texts = data.natural_sentences(n, seed=seed)
    else:
        raise ValueError(f"unknown data {cfg['data']!r}; valid: 'rt-test', 'natural', 'random'")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                    max_length=cfg.get("max_length", 64))
    return enc["input_ids"], enc["attention_mask"]


def run_shard(name: str, cfg: dict, start: int, stop: int, device="cpu") -> pd.DataFrame:
    """Run experiment ``name`` on examples ``start:stop``; ``example`` numbers are global."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    module, fn_name = EXPERIMENTS[name]
    fn = getattr(__import__(module, fromlist=[fn_name]), fn_name)
    torch.manual_seed(cfg.get("seed", 0))
    model, tok = load_model(cfg, device)
    ids, mask = load_inputs(cfg, model, tok)
    t0 = time.perf_counter()
    kwargs = {**({"batch_size": cfg["batch_size"]} if "batch_size" in cfg else {}), **cfg.get("kwargs", {})}
    out = fn(model, ids[start:stop], mask[start:stop], methods=cfg.get("methods", ["gi", "cp-lrp", "attnlrp"]),
             **kwargs)
    seconds = time.perf_counter() - t0
    df = out[0].areas if isinstance(out, tuple) else out  # faithfulness returns (result, relevance)
    df = df.assign(example=df["example"] + start) if "example" in df else df
    df.attrs["loop_s"] = seconds  # wall time of the loop alone (no model loading)
    return df


def _sort(df: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ("method", "metric", "removal", "layer", "example") if c in df]
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", choices=sorted(EXPERIMENTS))
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    cfg = read_config(a.config)
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState(cpu=not torch.cuda.is_available())
    n = cfg.get("n_examples", 100)
    bounds = [round(i * n / state.num_processes) for i in range(state.num_processes + 1)]
    start, stop = bounds[state.process_index], bounds[state.process_index + 1]
    device = state.device if cfg.get("device", "auto") == "auto" else cfg["device"]
    df = run_shard(a.experiment, cfg, start, stop, device)
    shards = [(df, df.attrs["loop_s"])]
    shards = gather_object(shards) if state.num_processes > 1 else shards
    if state.is_main_process:
        result = _sort(pd.concat([d for d, _ in shards], ignore_index=True))
        a.out.parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(a.out, index=False)
        loop_s = max(t for _, t in shards)  # the slowest shard decides the wall time
        print(f"{a.experiment}: {len(result)} rows from {n} examples on {state.num_processes} "
              f"process(es) -> {a.out}; loop {loop_s:.2f} s, {n / loop_s:.3f} examples/s")
    state.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
