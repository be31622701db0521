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
``loo_variants``            04        :func:`lrp_utils.studies.loo_variants.variant_table`
``positional_budget``       05        :func:`lrp_utils.studies.positional.budget_table`
``positional_faithfulness`` 05        :func:`lrp_utils.studies.positional.faithfulness_table`
==========================  ========  ===============================================================

Config (JSON or YAML) keys, all optional but ``model``:

* ``model``: a name for :func:`lrp_utils.models.load` (``"minilm-rt"``, ``"smollm2-135m"``,
  ``"smollm2-rt"``) or ``"tiny"`` with ``tiny`` (TinyConfig fields), ``tiny_seed`` and ``tiny_std``
  (random weights).
* ``recipe``, ``model_seed`` (training seed of a trained model, default 0), ``device`` (``"auto"`` =
  this process's accelerator), ``dtype`` (``"float32"``, ``"bfloat16"``, ...), ``device_map`` (e.g.
  ``"auto"`` for models larger than one device).
* ``data``: ``"rt-test"`` (Rotten Tomatoes test split), ``"natural"`` (natural sentences for
  next-token prediction) or ``"random"`` (random ids, for tests); ``n_examples``, ``max_length``,
  ``seed``.
* ``methods``, ``batch_size`` and the experiment's own keyword arguments under ``kwargs``.

A bad config (unreadable, not an object, unknown keys or values, text data for the tiny model,
non-positive sizes, ``max_length`` beyond the model's position table, or a bad value met while
loading the model and inputs) prints one line ``error: ...`` to stderr and exits with status 2,
as argparse does; :func:`validate_config` does the up-front checks.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

EXPERIMENTS = {
    "layer_sums": ("lrp_utils.audit", "layer_sums"),
    "loo_agreement": ("lrp_utils.studies.loo_layers", "loo_agreement"),
    "loo_variants": ("lrp_utils.studies.loo_variants", "variant_table"),
    "faithfulness": ("lrp_utils.perturbation", "run_faithfulness"),
    "positional_budget": ("lrp_utils.studies.positional", "budget_table"),
    "positional_faithfulness": ("lrp_utils.studies.positional", "faithfulness_table"),
}


DATA = ("rt-test", "natural", "random")
#: Every top-level config key (anything else is refused, so a typo cannot silently fall back to a default).
KEYS = ("model", "recipe", "model_seed", "tiny", "tiny_seed", "tiny_std", "device", "dtype", "device_map",
        "data", "n_examples", "max_length", "seed", "methods", "batch_size", "kwargs")


class ConfigError(ValueError):
    """A bad ``--config``: :func:`main` prints ``error: <message>`` and exits with status 2."""


def read_config(path) -> dict:
    """The config file as a dict (JSON, or YAML for ``.yml`` / ``.yaml``); :class:`ConfigError` if unreadable."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config file {str(path)!r}: {err.strerror or err}") from None
    is_yaml = str(path).endswith((".yml", ".yaml"))
    try:
        if is_yaml:
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except Exception as err:  # json.JSONDecodeError, yaml.YAMLError
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"config file {str(path)!r} is not valid {'YAML' if is_yaml else 'JSON'}: {reason}") from None


def _positive(cfg: dict, key: str) -> None:
    if key in cfg:
        from .checks import positive_int

        try:
            positive_int(key, cfg[key])
        except (TypeError, ValueError) as err:
            raise ConfigError(str(err)) from None


def _max_positions(cfg: dict) -> int:
    """Length of the configured model's position table (tiny: ``max_len``; real: ``max_position_embeddings``)."""
    if cfg["model"] == "tiny":
        from .models import TinyConfig

        return TinyConfig(**cfg.get("tiny", {})).max_len
    from .models import zoo

    return zoo.model_config(cfg["model"]).max_position_embeddings


def _check_types(cfg: dict) -> None:
    """``tiny`` / ``kwargs`` objects, ``dtype`` a torch float type, ``methods`` a list of known names."""
    from .methods import METHODS, OTHER_METHODS

    for key in ("tiny", "kwargs"):
        if not isinstance(cfg.get(key, {}), dict):
            raise ConfigError(f"{key!r} must be an object (key: value), got {cfg[key]!r}")
    dtype = cfg.get("dtype", "float32")
    if not isinstance(dtype, str) or not isinstance(getattr(torch, dtype, None), torch.dtype) \
            or not getattr(torch, dtype).is_floating_point:
        raise ConfigError(f"dtype must name a torch float type (e.g. 'float32', 'bfloat16'), got {dtype!r}")
    methods, valid = cfg.get("methods", ["gi"]), [*METHODS, *OTHER_METHODS]
    if not isinstance(methods, list) or not methods:
        raise ConfigError(f"methods must be a non-empty list of method names, got {methods!r}")
    unknown = [m for m in methods if not isinstance(m, str) or m.lower() not in valid]
    if unknown:
        raise ConfigError(f"unknown method(s) {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")


def validate_config(cfg) -> dict:
    """Check a run config up front; return it unchanged or raise :class:`ConfigError` naming the problem.

    Checked: an object (not a list), only known keys (:data:`KEYS`), ``model`` present and known,
    ``recipe`` / ``model_seed`` valid for it, ``data`` known and, for text data, a model with a
    tokenizer, ``n_examples`` / ``batch_size`` / ``max_length`` positive integers, ``max_length``
    (or its default) within the model's position table, ``dtype`` a torch float type, ``methods``
    known names, ``tiny`` / ``kwargs`` objects.
    """
    from .models import zoo

    if not isinstance(cfg, dict):
        raise ConfigError(f"the config must be a JSON/YAML object (key: value), got a {type(cfg).__name__}")
    unknown = sorted(set(cfg) - set(KEYS))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(KEYS)}")
    if "model" not in cfg:
        raise ConfigError(f"the config needs a 'model': 'tiny' or one of {', '.join(zoo.MODELS)}")
    model, data = cfg["model"], cfg.get("data", "random")
    if model != "tiny" and model not in zoo.MODELS:
        raise ConfigError(f"unknown model {model!r}; valid: 'tiny', {', '.join(map(repr, zoo.MODELS))}")
    if data not in DATA:
        raise ConfigError(f"unknown data {data!r}; valid: {', '.join(map(repr, DATA))}")
    if model == "tiny" and data != "random":
        raise ConfigError(f"data {data!r} needs a tokenizer; the tiny model has none (use data 'random')")
    _check_types(cfg)
    for key in ("n_examples", "batch_size", "max_length"):
        _positive(cfg, key)
    try:
        if model != "tiny":
            zoo.checkpoint_dir(model, cfg.get("recipe", "full"), cfg.get("model_seed", 0))
        limit = _max_positions(cfg)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    length = cfg.get("max_length", _default_length(cfg))
    if length > limit:
        raise ConfigError(f"max_length {length} exceeds the position table of {model!r} ({limit} positions)")
    return cfg


def _default_length(cfg: dict) -> int:
    return 12 if cfg.get("data", "random") == "random" else 64


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
    return load(cfg["model"], recipe=cfg.get("recipe", "full"), seed=cfg.get("model_seed", 0), dtype=dtype, **kwargs)


def load_inputs(cfg: dict, model, tokenizer):
    """``(input_ids [N, S], attention_mask [N, S])`` (right-padded) for the configured data."""
    n, seed = cfg.get("n_examples", 100), cfg.get("seed", 0)
    if cfg.get("data", "random") == "random":
        gen = torch.Generator().manual_seed(seed)
        vocab = model.config.vocab_size
        ids = torch.randint(1, vocab, (n, cfg.get("max_length", _default_length(cfg))), generator=gen)
        mask = torch.ones_like(ids)
        lengths = torch.randint(ids.shape[1] // 2, ids.shape[1] + 1, (n,), generator=gen)
        mask[torch.arange(ids.shape[1])[None] >= lengths[:, None]] = 0
        return ids * mask, mask
    from . import data

    if cfg["data"] == "rt-test":
        texts = [t for t, _ in data.rotten_tomatoes("test", seed=seed)][:n]
        if len(texts) < n:
            raise ValueError(f"n_examples {n} exceeds the {len(texts)} sentences of the RT test split")
    elif cfg["data"] == "natural":
        texts = data.natural_sentences(n, seed=seed)
    else:
        raise ValueError(f"unknown data {cfg['data']!r}; valid: 'rt-test', 'natural', 'random'")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                    max_length=cfg.get("max_length", _default_length(cfg)))
    return enc["input_ids"], enc["attention_mask"]


def run_shard(name: str, cfg: dict, start: int, stop: int, device="cpu") -> pd.DataFrame:
    """Run experiment ``name`` on examples ``start:stop``; ``example`` numbers are global."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    module, fn_name = EXPERIMENTS[name]
    fn = getattr(__import__(module, fromlist=[fn_name]), fn_name)
    torch.manual_seed(validate_config(cfg).get("seed", 0))
    model, ids, mask, tok = _load(cfg, device)
    t0 = time.perf_counter()
    kwargs = {**({"batch_size": cfg["batch_size"]} if "batch_size" in cfg else {}), **cfg.get("kwargs", {})}
    params = inspect.signature(fn).parameters
    if "tokenizer" in params:  # functions that need the tokenizer or all examples (not just the shard's)
        kwargs["tokenizer"] = tok
    if "reference" in params:
        kwargs["reference"] = (ids, mask)
    out = fn(model, ids[start:stop], mask[start:stop], methods=cfg.get("methods", ["gi", "cp-lrp", "attnlrp"]),
             **kwargs)
    seconds = time.perf_counter() - t0
    df = out[0].areas if isinstance(out, tuple) else out  # faithfulness returns (result, relevance)
    df = df.assign(example=df["example"] + start) if "example" in df else df
    df.attrs["loop_s"] = seconds  # wall time of the loop alone (no model loading)
    return df


def _load(cfg: dict, device):
    """``(model, input_ids, attention_mask, tokenizer)``; a bad value met while loading raises :class:`ConfigError`."""
    from .models.zoo import CacheError

    try:
        model, tok = load_model(cfg, device)
        return (model, *load_inputs(cfg, model, tok), tok)
    except (ValueError, TypeError, CacheError) as err:
        raise ConfigError(str(err)) from err


def _fail(err: Exception):
    """Exit like argparse: one line ``error: ...`` on stderr, status 2, no traceback."""
    print("error: " + " ".join(str(err).split()), file=sys.stderr)
    raise SystemExit(2)


def _sort(df: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ("method", "metric", "removal", "output", "positions", "relevance_point", "loo", "layer",
                        "example") if c in df]
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", choices=sorted(EXPERIMENTS))
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    try:
        cfg = validate_config(read_config(a.config))
    except ConfigError as err:
        _fail(err)
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState(cpu=not torch.cuda.is_available())
    n = cfg.get("n_examples", 100)
    bounds = [round(i * n / state.num_processes) for i in range(state.num_processes + 1)]
    start, stop = bounds[state.process_index], bounds[state.process_index + 1]
    device = state.device if cfg.get("device", "auto") == "auto" else cfg["device"]
    try:
        df = run_shard(a.experiment, cfg, start, stop, device)
    except ConfigError as err:
        _fail(err)
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
