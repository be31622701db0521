"""The claims table ``figures/claims.csv``: one row per claim and model, its verdict computed by a rule.

A verdict is never typed. Each row carries the numbers (``value, ci_low, ci_high, n``) and the text of
a verdict :class:`Rule`; the verdict follows from them, so a test can recompute every verdict from the
committed CSV (:func:`recheck`) and every row from the committed figure CSVs (:func:`builders`).

Rules (in :mod:`lrp_utils.verdicts`, re-exported here; the ``rule`` column is the rule's text, parsed
back by :func:`parse_rule`):

* ``CISide(">", 0.0)``: the CI excludes the threshold on the paper's side -> reproduced; on the other
  side -> contradicted; contains it (or touches it) -> not reproduced. ``"<"`` for claims of a decrease.
* ``Exact(tol)``: ``|value| <= tol`` (an exact identity; value = the largest deviation) -> reproduced,
  else not reproduced.
* ``Threshold(">=", t)``: ``value >= t`` (or ``<=``, ``>``, ``<``) -> reproduced, else not reproduced.
* ``Equivalence(tol, center=0.0)``: the CI lies within ``center +- tol`` -> reproduced, else not reproduced.
* ``Count(m)``: ``k`` of ``m`` comparisons hold. ``value`` = how many hold by the point estimate,
  ``ci_low`` = how many hold significantly, ``ci_high`` = ``m`` - how many are significantly reversed
  (:meth:`Count.tally` computes the three; without intervals all three are equal). All hold
  significantly -> reproduced; every one significantly reversed -> contradicted; some hold
  significantly -> partly; else not reproduced.

CI rules need ``ci_low <= value <= ci_high``. A non-finite ``value`` gives "not reproduced" under every
rule (the number could not be measured). Numbers are rounded to 6 significant digits before the verdict.

A study declares its claims once, computed from the figure CSVs only (never from in-memory state)::

    from lrp_utils import claims
    from lrp_utils.claims import CISide, Claim

    @claims.register("02")
    def claims_from_csvs(figures):                    # figures: Path of the folder with the CSVs
        d = pd.read_csv(figures / "02_paired.csv").set_index("model")
        return [Claim("02", "faithfulness-cp", "Achtibat et al. 2024", "AttnLRP is more faithful than CP-LRP",
                      "LeRF-MoRF area of CP-LRP minus AttnLRP, paired bootstrap 95% CI", model,
                      r["diff"], CISide("<"), r["low"], r["high"], n=r["n"], checked_in_ci=False)
                for model, r in d.iterrows()]

    claims.register_caption("02", "02_cost.png", lambda figures: "...")   # README gallery caption

and the notebook, after writing its CSVs::

    rows = claims.update("02")        # rows from figures/*.csv, rewrites notebook 02's rows of claims.csv
    claims.print_verdicts("02")       # one sentence per claim, read back from claims.csv
    claims.assert_verdicts(rows)      # rows checked in CI: same verdict as the committed full-mode table
"""
from __future__ import annotations

import csv
import importlib
import math
import pkgutil
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

from .paths import ROOT, figure_path, figures_dir
from .verdicts import (RULES, VERDICTS, CISide, Count, Equivalence, Exact, Rule, Threshold,  # noqa: F401
                       _num, fmt, parse_rule)

COLUMNS = ("notebook", "claim_id", "paper", "claim", "measure", "model", "value", "ci_low", "ci_high", "n",
           "rule", "verdict", "checked_in_ci")
FILE = "claims.csv"
#: the committed full-mode table (quick runs write theirs under LRP_UTILS_FIGURES; CI compares against this one)
COMMITTED = ROOT / "figures" / FILE
#: modules outside ``lrp_utils.studies`` that register builders or captions (imported by :func:`discover`)
PROVIDERS = ("lrp_utils.toy",)


# --------------------------------------------------------------------------- claims
_NOTEBOOK = re.compile(r"\d\d")
_CLAIM_ID = re.compile(r"[a-z0-9][a-z0-9.\-]*")


@dataclass(frozen=True)
class Claim:
    """One row of the claims table. ``rule`` is a :class:`Rule` (or its text); ``verdict`` is computed.

    Text fields are one line each; ``claim`` is the paper's statement (short), ``measure`` what we
    compute, ``model`` the model / data it was measured on. Numbers are rounded to 6 significant digits.
    """

    notebook: str
    claim_id: str
    paper: str
    claim: str
    measure: str
    model: str
    value: float
    rule: Rule
    ci_low: float = math.nan
    ci_high: float = math.nan
    n: int | None = None
    checked_in_ci: bool = False
    verdict: str = field(init=False)

    def __post_init__(self):
        if not _NOTEBOOK.fullmatch(str(self.notebook)):
            raise ValueError(f"notebook must be two digits like '03', got {self.notebook!r}")
        if not _CLAIM_ID.fullmatch(str(self.claim_id)):
            raise ValueError(f"claim_id must be lower-case letters, digits, '-' or '.', got {self.claim_id!r}")
        for name in ("paper", "claim", "measure", "model"):
            text = getattr(self, name)
            if not isinstance(text, str) or not text.strip() or "\n" in text:
                raise ValueError(f"{name} must be a non-empty one-line string, got {text!r}")
        rule = parse_rule(self.rule) if isinstance(self.rule, str) else self.rule
        if not isinstance(rule, Rule):
            raise TypeError(f"rule must be a Rule or its text, got {type(self.rule).__name__}")
        n = None if self.n is None or (isinstance(self.n, float) and math.isnan(self.n)) else int(self.n)
        for name, value in (("rule", rule), ("n", n), ("value", _num(self.value)), ("ci_low", _num(self.ci_low)),
                            ("ci_high", _num(self.ci_high)), ("checked_in_ci", bool(self.checked_in_ci))):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "verdict", rule.verdict(self.value, self.ci_low, self.ci_high, self.n))

    def row(self) -> dict[str, str]:
        """The CSV row: every column as its text."""
        return {"notebook": self.notebook, "claim_id": self.claim_id, "paper": self.paper, "claim": self.claim,
                "measure": self.measure, "model": self.model, "value": fmt(self.value), "ci_low": fmt(self.ci_low),
                "ci_high": fmt(self.ci_high), "n": "" if self.n is None else str(self.n), "rule": self.rule.text,
                "verdict": self.verdict, "checked_in_ci": "true" if self.checked_in_ci else "false"}

    @classmethod
    def from_row(cls, row: dict) -> "Claim":
        """Rebuild a claim from a CSV row; its verdict is recomputed (the row's ``verdict`` is ignored)."""
        if row.get("checked_in_ci") not in ("true", "false"):
            raise ValueError(f"checked_in_ci must be 'true' or 'false', got {row.get('checked_in_ci')!r}")
        init = {f.name for f in fields(cls) if f.init}
        kw = {k: row[k] for k in init if k not in ("n", "checked_in_ci")}
        return cls(**kw, n=int(row["n"]) if row["n"] else None, checked_in_ci=row["checked_in_ci"] == "true")


# --------------------------------------------------------------------------- the CSV
def read_rows(path=None) -> list[dict[str, str]]:
    """The rows of the claims CSV as text (``[]`` when it does not exist yet)."""
    path = Path(path) if path is not None else figure_path(FILE)
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path.name}: columns must be {COLUMNS}, got {reader.fieldnames}")
        return list(reader)


def _write_rows(rows: list[dict[str, str]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def record(notebook: str, rows: list[Claim], path=None) -> Path:
    """Rewrite ``notebook``'s rows of the claims CSV with ``rows``; other notebooks' rows stay as they are.

    Rows are ordered by notebook, then as given; ``(claim_id, model)`` must be unique within a notebook.
    Returns the path written (default ``figures/claims.csv`` via ``lrp_utils.paths.figure_path``).
    """
    path = Path(path) if path is not None else figure_path(FILE)
    keys = [(c.claim_id, c.model) for c in rows]
    if any(c.notebook != notebook for c in rows):
        raise ValueError(f"every row must belong to notebook {notebook!r}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate (claim_id, model) in notebook {notebook!r}: {sorted(keys)}")
    kept = [r for r in read_rows(path) if r["notebook"] != notebook]
    new = kept + [c.row() for c in rows]
    order = sorted({r["notebook"] for r in new})
    _write_rows([r for nb in order for r in new if r["notebook"] == nb], path)
    return path


def recheck(path=None) -> list[str]:
    """Problems of a claims CSV: rows whose stored verdict differs from the one its numbers and rule give,
    or that cannot be read as a claim. ``[]`` means every verdict follows from its row."""
    problems = []
    for i, row in enumerate(read_rows(path), start=2):
        where = f"line {i} ({row.get('notebook')} {row.get('claim_id')}, {row.get('model')})"
        try:
            claim = Claim.from_row(row)
        except (ValueError, TypeError) as err:
            problems.append(f"{where}: {err}")
            continue
        if claim.row() != row:
            diff = {k: (row[k], v) for k, v in claim.row().items() if row[k] != v}
            problems.append(f"{where}: stored vs recomputed {diff}")
    return problems


# --------------------------------------------------------------------------- verdict sentences
def sentence(row: dict[str, str]) -> str:
    """The verdict sentence of one CSV row: verdict, claim, model, the number with its interval, the rule."""
    ci = f" [{row['ci_low']}, {row['ci_high']}]" if row["ci_low"] or row["ci_high"] else ""
    n = f" (n = {row['n']})" if row["n"] else ""
    return (f"{row['notebook']} {row['claim_id']} ({row['model']}): {row['verdict'].upper()}. "
            f"{row['claim'].rstrip('.')}. Measured: {row['measure']} = {row['value'] or 'nan'}{ci}{n}; "
            f"rule: {row['rule']}.")


def verdict_lines(notebook: str, path=None) -> list[str]:
    """:func:`sentence` for every row of ``notebook`` in the claims CSV (read back from the file)."""
    return [sentence(r) for r in read_rows(path) if r["notebook"] == notebook]


def print_verdicts(notebook: str, path=None) -> None:
    """Print :func:`verdict_lines`: how every notebook states its verdicts."""
    lines = verdict_lines(notebook, path)
    print("\n".join(lines) if lines else f"notebook {notebook}: no claims recorded")


def assert_verdicts(rows: list[Claim], committed=None) -> None:
    """Raise ``AssertionError`` unless every row with ``checked_in_ci`` has the verdict the committed
    full-mode table gives the same ``(notebook, claim_id, model)``. What quick mode asserts."""
    table = {(r["notebook"], r["claim_id"], r["model"]): r["verdict"] for r in read_rows(committed or COMMITTED)}
    bad = []
    for c in rows:
        if c.checked_in_ci:
            want = table.get((c.notebook, c.claim_id, c.model))
            if want != c.verdict:
                bad.append(f"{c.notebook} {c.claim_id} ({c.model}): {c.verdict}, committed: {want}")
    assert not bad, "claims checked in CI differ from the committed table:\n" + "\n".join(bad)


# --------------------------------------------------------------------------- registries
Builder = Callable[[Path], list]
Caption = Callable[[Path], str]
_BUILDERS: dict[str, Builder] = {}
_CAPTIONS: dict[str, tuple[str, Caption]] = {}


def _put(registry: dict, notebook: str, entry, what: str) -> None:
    if not _NOTEBOOK.fullmatch(str(notebook)):
        raise ValueError(f"notebook must be two digits like '03', got {notebook!r}")
    if registry.get(notebook, entry) != entry:
        raise ValueError(f"notebook {notebook} already has a {what}: {registry[notebook]!r}")
    registry[notebook] = entry


def register(notebook: str):
    """Decorator: ``fn(figures_dir: Path) -> list[Claim]`` computes ``notebook``'s claims from the figure
    CSVs under ``figures_dir`` (and nothing else: no models, no in-memory state). One per notebook."""
    def deco(fn: Builder) -> Builder:
        _put(_BUILDERS, notebook, fn, "claims builder")
        return fn
    return deco


def register_caption(notebook: str, figure: str, fn: Caption | None = None):
    """Register the README gallery entry of ``notebook``: ``figure`` (a file name under ``figures/``) and
    ``fn(figures_dir) -> str``, a caption computed from the figure CSVs. Usable as a decorator."""
    def deco(f: Caption) -> Caption:
        _put(_CAPTIONS, notebook, (figure, f), "caption")
        return f
    return deco(fn) if fn is not None else deco


def discover() -> None:
    """Import :data:`PROVIDERS` and every module of ``lrp_utils.studies`` so their registrations run."""
    names = list(PROVIDERS)
    try:
        studies = importlib.import_module("lrp_utils.studies")
        names += [f"lrp_utils.studies.{m.name}" for m in pkgutil.iter_modules(studies.__path__)]
    except ModuleNotFoundError:
        pass
    for name in sorted(names):
        importlib.import_module(name)


def builders() -> dict[str, Builder]:
    """``{notebook: builder}`` of every registered claims builder, by notebook."""
    discover()
    return dict(sorted(_BUILDERS.items()))


def captions() -> dict[str, tuple[str, Caption]]:
    """``{notebook: (figure, caption_fn)}`` of every registered gallery caption."""
    discover()
    return dict(sorted(_CAPTIONS.items()))


def build(notebook: str, figures=None) -> list[Claim]:
    """The registered builder of ``notebook`` run on ``figures`` (default: the current figures folder)."""
    table = builders()
    if notebook not in table:
        raise KeyError(f"no claims builder registered for notebook {notebook!r}; registered: {list(table)}")
    rows = table[notebook](Path(figures) if figures is not None else figures_dir())
    if any(c.notebook != notebook for c in rows):
        raise ValueError(f"the builder of notebook {notebook} returned rows of another notebook")
    return rows


def update(notebook: str, figures=None, path=None) -> list[Claim]:
    """:func:`build` then :func:`record`: the one call a notebook makes after writing its figure CSVs."""
    rows = build(notebook, figures)
    record(notebook, rows, path)
    return rows
