"""Tasks: tokenised, padded examples with the positions a perturbation may touch and the targets
an explanation explains.

* :class:`Task` (``input_ids, attention_mask, valid [n, S]``, ``target`` / ``contrast [n]``),
  built by :func:`classification_task` (a BERT-style classifier), :func:`next_token_task`
  (prefixes of natural text for a causal LM), :func:`prompt_task` (a zero-shot prompt around a
  text) or :func:`inputs_task` (a padded batch as it comes); :func:`set_targets` fills in the
  model's own prediction (optionally restricted to two answer options: then ``contrast`` is the
  other option).
* :func:`encode`: texts to right-padded ``(input_ids, attention_mask)`` with a tokenizer.
* :class:`WordVocab` and :func:`load_task`: a word-level vocabulary for the package's own
  ``TinyTransformer`` and the train / test splits of Rotten Tomatoes or the synthetic keyword task.

Loading the raw data lives in :mod:`lrp_utils.data`; this module only tokenises and pads.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from . import runner
from .adapters import get_adapter
from .data import keyword_task, rotten_tomatoes
from .loo import removable

PROMPT = "Review: {}\nSentiment (positive or negative):"
OPTIONS = (" positive", " negative")
#: the special words of :class:`WordVocab`: ids 0, 1, 2 (as in :func:`lrp_utils.data.keyword_task`)
SPECIALS = ("[CLS]", "[PAD]", "[UNK]")


def encode(tokenizer, texts, max_length: int = 128):
    """``(input_ids [n, S], attention_mask [n, S])``, right-padded, truncated to ``max_length``."""
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt", padding_side="right")
    return enc["input_ids"], enc["attention_mask"]


def pad(rows: list[list[int]], pad_id: int):
    """``(input_ids [n, S], attention_mask [n, S])`` of token-id lists, right-padded with ``pad_id``."""
    S = max(len(r) for r in rows)
    ids = torch.full((len(rows), S), int(pad_id), dtype=torch.long)
    mask = torch.zeros(len(rows), S, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    return ids, mask


@dataclass
class Task:
    """Tokenised examples of one experiment.  ``input_ids, attention_mask [n, S]`` (right padding);
    ``valid [n, S]`` positions a perturbation may remove; ``target [n]`` the explained class / token;
    ``contrast [n]`` (optional) a second token: the explained score is ``logit[target] -
    logit[contrast]``; ``tokens``: token strings per example (unpadded); ``labels`` (optional)."""

    name: str
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    valid: torch.Tensor
    target: torch.Tensor | None = None
    contrast: torch.Tensor | None = None
    tokens: list = field(default_factory=list)
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def with_target(self, target, contrast=None) -> "Task":
        """A copy with ``target`` (and ``contrast``) set, e.g. from ``Explanation.target``."""
        return replace(self, target=torch.as_tensor(target).long(), contrast=contrast)

    def explain(self, model, methods, batch_size: int = 16, progress: bool = False) -> dict:
        """``{method: Explanation [n, S]}`` of every example (:func:`lrp_utils.runner.explain_many`):
        of ``target`` (None: the first method explains the argmax, the others the same targets),
        or of ``logit[target] - logit[contrast]`` when the task has a contrast."""
        return runner.explain_many(model, self.input_ids, self.attention_mask, methods, self.target, self.contrast,
                                   batch_size=batch_size, progress=progress)

    def subset(self, n: int) -> "Task":
        """The first ``n`` examples."""
        cut = lambda t: None if t is None else t[:n]  # noqa: E731
        return replace(self, input_ids=self.input_ids[:n], attention_mask=self.attention_mask[:n],
                       valid=self.valid[:n], target=cut(self.target), contrast=cut(self.contrast),
                       tokens=self.tokens[:n], labels=cut(self.labels))


def classification_task(tokenizer, texts, labels=None, max_length: int = 64, name: str = "sentiment") -> Task:
    """A BERT-style classification task; ``valid`` excludes [CLS] (read out), [SEP] and padding."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    ids, mask = pad(enc["input_ids"], tokenizer.pad_token_id)
    special = torch.tensor([[t in tokenizer.all_special_ids for t in row] for row in ids.tolist()])
    lab = None if labels is None else torch.as_tensor(list(labels)).long()
    return Task(name, ids, mask, mask.bool() & ~special, tokens=[tokenizer.convert_ids_to_tokens(r)
                                                                  for r in enc["input_ids"]], labels=lab)


def next_token_task(tokenizer, texts, seed: int = 0, min_prefix: int = 5, name: str = "next-token") -> Task:
    """Next-token prediction on prefixes of natural text: each text (no special tokens added) is cut
    after ``k`` tokens, ``k`` drawn uniformly from ``[max(min_prefix, n // 2), n - 1]`` (seeded), so
    the prefix is a mid-sentence context.  ``valid`` excludes the last position (read out)."""
    rng = np.random.default_rng(seed)
    rows = []
    for text in texts:
        full = tokenizer(text, add_special_tokens=False)["input_ids"]
        lo = min(max(min_prefix, len(full) // 2), len(full) - 1)
        rows.append(full[: int(rng.integers(lo, len(full)))] if len(full) > 1 else full)
    ids, mask = pad(rows, tokenizer.pad_token_id)
    valid = mask.bool().clone()
    valid[torch.arange(len(rows)), mask.sum(1) - 1] = False
    return Task(name, ids, mask, valid, tokens=[tokenizer.convert_ids_to_tokens(r) for r in rows])


def prompt_task(tokenizer, texts, labels=None, template: str = PROMPT, name: str = "prompt-sentiment") -> Task:
    """A zero-shot prompt ``template.format(text)`` for a causal LM; ``valid`` = the tokens inside
    ``text`` (the template stays in place).  Targets come from :func:`set_targets` with ``options``."""
    prompts = [template.format(t) for t in texts]
    enc = tokenizer(prompts, add_special_tokens=False, return_offsets_mapping=True)
    start = template.index("{}")
    ids, mask = pad(enc["input_ids"], tokenizer.pad_token_id)
    valid = torch.zeros_like(mask, dtype=torch.bool)
    for i, (offsets, text) in enumerate(zip(enc["offset_mapping"], texts)):
        for j, (a, b) in enumerate(offsets):
            valid[i, j] = b > a and a < start + len(text) and b > start
    lab = None if labels is None else torch.as_tensor(list(labels)).long()
    return Task(name, ids, mask, valid, tokens=[tokenizer.convert_ids_to_tokens(r) for r in enc["input_ids"]],
                labels=lab)


def set_targets(model, task: Task, options=None, tokenizer=None, batch_size: int = 32) -> Task:
    """The model's own prediction as ``task.target`` (argmax of the read-out logits).  With
    ``options`` (strings, e.g. :data:`OPTIONS`, single tokens of ``tokenizer``) the prediction is
    restricted to them: ``target`` = the higher option, ``contrast`` = the other (two options)."""
    logits = runner.predict(model, task.input_ids, task.attention_mask, batch_size)
    if options is None:
        return replace(task, target=logits.argmax(-1), contrast=None)
    opt = torch.tensor(option_ids(tokenizer, options))
    if len(opt) != 2:
        raise ValueError(f"need exactly two options for a contrast, got {len(opt)}")
    pick = logits[:, opt].argmax(-1)
    return replace(task, target=opt[pick], contrast=opt[1 - pick])


def option_ids(tokenizer, options=OPTIONS) -> list[int]:
    """Token ids of single-token answer ``options`` (raises if one is several tokens)."""
    return [_single_token(tokenizer, o) for o in options]


def _single_token(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"option {text!r} is {len(ids)} tokens; options must be single tokens")
    return ids[0]


def accuracy(task: Task, options_are_labels=None) -> float:
    """Share of examples whose ``target`` equals the label (``options_are_labels``: token id of
    each label value, e.g. ``{1: id(" positive"), 0: id(" negative")}``)."""
    if task.labels is None or task.target is None:
        return float("nan")
    want = task.labels if options_are_labels is None else torch.tensor(
        [options_are_labels[int(y)] for y in task.labels])
    return float((task.target == want).double().mean())


def inputs_task(model, input_ids, attention_mask, name: str = "inputs") -> Task:
    """A :class:`Task` from right-padded ``input_ids, attention_mask [n, S]`` as they come (a
    dataset slice): ``valid`` = every position but padding and the read-out position."""
    mask = attention_mask.long().cpu()
    return Task(name, input_ids.cpu(), mask, removable(get_adapter(model), mask))


@dataclass
class WordVocab:
    """Word-level vocabulary: ``[CLS]``, ``[PAD]``, ``[UNK]`` then words by decreasing frequency."""

    words: list

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, texts, size: int = 5000) -> "WordVocab":
        """The ``size`` most frequent whitespace words of ``texts`` (ties broken alphabetically)."""
        counts = Counter(w for t in texts for w in t.split())
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]
        return cls([*SPECIALS, *(w for w, _ in top)])

    def encode(self, texts, max_len: int = 32):
        """``(input_ids [N, S], attention_mask [N, S])``: ``[CLS]`` + words (unknown -> ``[UNK]``),
        truncated to ``max_len``, right-padded with ``[PAD]`` to the longest sequence."""
        return pad([[0, *(self.index.get(w, 2) for w in t.split())][:max_len] for t in texts], 1)

    def decode(self, ids) -> list:
        return [self.words[int(i)] for i in ids]


def load_task(task: str, n_examples: int, n_train: int | None = None, vocab_size: int = 5000,
              max_len: int = 32) -> dict:
    """Train and test data: ``{"train": (ids, mask, labels), "test": (ids, mask, labels, relevant),
    "vocab_size", "decode", "encode"}`` for ``"rt"`` (Rotten Tomatoes; word-level vocabulary of the
    training split, ``max_len`` tokens with [CLS]; the first ``n_examples`` test sentences of 3+
    words) or ``"keyword"`` (synthetic, length 16, vocabulary 32; train seed 0, test seed 1).
    ``n_train``: training examples (default: every RT training sentence, 3000 keyword sequences)."""
    if task == "keyword":
        tr, te = keyword_task(n_train or 3000, seed=0), keyword_task(n_examples, seed=1)
        names = [*SPECIALS[:2], "+A", "+B", "-A", "-B", *(f"w{i}" for i in range(6, 32))]
        ones = torch.ones_like
        return {"train": (tr.input_ids, ones(tr.input_ids), tr.labels),
                "test": (te.input_ids, ones(te.input_ids), te.labels, te.relevant), "vocab_size": 32,
                "decode": lambda ids: [names[int(i)] for i in ids], "encode": None}
    if task != "rt":
        raise ValueError(f"unknown task {task!r}; valid: 'rt', 'keyword'")
    train_set = rotten_tomatoes("train")[:n_train]
    test_set = [(t, y) for t, y in rotten_tomatoes("test") if len(t.split()) >= 3][:n_examples]
    vocab = WordVocab.build([t for t, _ in train_set], vocab_size)
    labels = lambda data: torch.tensor([y for _, y in data])  # noqa: E731
    return {"train": (*vocab.encode([t for t, _ in train_set], max_len), labels(train_set)),
            "test": (*vocab.encode([t for t, _ in test_set], max_len), labels(test_set), None),
            "vocab_size": len(vocab.words), "decode": vocab.decode,
            "encode": lambda texts: vocab.encode(texts, max_len)}


