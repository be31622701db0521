"""Verdict rules: a fixed text with parameters, and a function from a claim's numbers to its verdict.

Used through :mod:`lrp_utils.claims` (which re-exports everything here); the rules are described there.
Every rule's text parses back to the same rule (:func:`parse_rule`), so the ``rule`` column of
``figures/claims.csv`` is enough to recompute a verdict.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar

VERDICTS = ("reproduced", "partly", "not reproduced", "contradicted")


# --------------------------------------------------------------------------- numbers
def _num(x) -> float:
    """``x`` rounded to the CSV's 6 significant digits (NaN for None), so verdicts from memory and
    from the written CSV see the same float."""
    if x is None or (isinstance(x, str) and not x.strip()):
        return math.nan
    x = float(x)
    return float(f"{x:.6g}") if math.isfinite(x) else x


def fmt(x) -> str:
    """The CSV text of a number: 6 significant digits, ``""`` for NaN / None."""
    x = _num(x)
    return "" if math.isnan(x) else f"{x:.6g}"


def _param(x: float) -> str:
    """A rule parameter in its text: the shortest text that reads back as the same float."""
    return repr(float(x))


_FLOAT = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf"


# --------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    """A verdict rule: a fixed text with its parameters, and ``verdict(value, ci_low, ci_high, n)``."""

    PATTERN: ClassVar[str] = ""

    @property
    def text(self) -> str:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def decide(self, value: float, ci_low: float, ci_high: float, n) -> str:  # pragma: no cover
        raise NotImplementedError

    def verdict(self, value, ci_low=None, ci_high=None, n=None) -> str:
        """The verdict for these numbers (rounded to the CSV's precision first)."""
        value, ci_low, ci_high = _num(value), _num(ci_low), _num(ci_high)
        if math.isnan(value) or math.isinf(value):
            return "not reproduced"
        return self.decide(value, ci_low, ci_high, n)

    def _ci(self, value: float, ci_low: float, ci_high: float) -> tuple[float, float]:
        if not ci_low <= value <= ci_high:  # also false for NaN bounds
            raise ValueError(f"rule {self.text!r} needs a confidence interval ci_low <= value <= ci_high, "
                             f"got {value} [{ci_low}, {ci_high}]")
        return ci_low, ci_high


@dataclass(frozen=True)
class CISide(Rule):
    """The CI excludes ``threshold`` in the paper's ``direction`` (``">"`` or ``"<"``)."""

    direction: str = ">"
    threshold: float = 0.0
    PATTERN: ClassVar[str] = rf"CI excludes (?P<t>{_FLOAT}) in the paper's direction \((?P<d>[<>]) (?P=t)\)"

    def __post_init__(self):
        if self.direction not in (">", "<"):
            raise ValueError(f"direction must be '>' or '<', got {self.direction!r}")
        object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def text(self) -> str:
        t = _param(self.threshold)
        return f"CI excludes {t} in the paper's direction ({self.direction} {t})"

    @classmethod
    def parse(cls, m):
        return cls(m["d"], float(m["t"]))

    def decide(self, value, ci_low, ci_high, n):
        lo, hi = self._ci(value, ci_low, ci_high)
        above, below = lo > self.threshold, hi < self.threshold
        if not (above or below):
            return "not reproduced"
        return "reproduced" if above == (self.direction == ">") else "contradicted"


@dataclass(frozen=True)
class Exact(Rule):
    """``|value| <= tol``: an identity that holds exactly up to rounding (value = the largest deviation)."""

    tol: float = 0.0
    PATTERN: ClassVar[str] = rf"\|value\| <= (?P<tol>{_FLOAT}) \(exact identity\)"

    def __post_init__(self):
        if not float(self.tol) >= 0:
            raise ValueError(f"tol must be >= 0, got {self.tol!r}")
        object.__setattr__(self, "tol", float(self.tol))

    @property
    def text(self) -> str:
        return f"|value| <= {_param(self.tol)} (exact identity)"

    @classmethod
    def parse(cls, m):
        return cls(float(m["tol"]))

    def decide(self, value, ci_low, ci_high, n):
        return "reproduced" if abs(value) <= self.tol else "not reproduced"


_OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}


@dataclass(frozen=True)
class Threshold(Rule):
    """``value op threshold`` on the point estimate (``op`` one of ``>=, <=, >, <``)."""

    op: str = ">="
    threshold: float = 0.0
    PATTERN: ClassVar[str] = rf"value (?P<op>>=|<=|>|<) (?P<t>{_FLOAT})"

    def __post_init__(self):
        if self.op not in _OPS:
            raise ValueError(f"op must be one of {tuple(_OPS)}, got {self.op!r}")
        object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def text(self) -> str:
        return f"value {self.op} {_param(self.threshold)}"

    @classmethod
    def parse(cls, m):
        return cls(m["op"], float(m["t"]))

    def decide(self, value, ci_low, ci_high, n):
        return "reproduced" if _OPS[self.op](value, self.threshold) else "not reproduced"


@dataclass(frozen=True)
class Equivalence(Rule):
    """The CI lies inside ``[center - tol, center + tol]`` (e.g. "no difference", "ratio = 1")."""

    tol: float = 0.0
    center: float = 0.0
    PATTERN: ClassVar[str] = rf"CI within (?P<c>{_FLOAT}) \+- (?P<tol>{_FLOAT}) \(equivalence\)"

    def __post_init__(self):
        if not float(self.tol) >= 0:
            raise ValueError(f"tol must be >= 0, got {self.tol!r}")
        object.__setattr__(self, "tol", float(self.tol))
        object.__setattr__(self, "center", float(self.center))

    @property
    def text(self) -> str:
        return f"CI within {_param(self.center)} +- {_param(self.tol)} (equivalence)"

    @classmethod
    def parse(cls, m):
        return cls(float(m["tol"]), float(m["c"]))

    def decide(self, value, ci_low, ci_high, n):
        lo, hi = self._ci(value, ci_low, ci_high)
        inside = self.center - self.tol <= lo and hi <= self.center + self.tol
        return "reproduced" if inside else "not reproduced"


@dataclass(frozen=True)
class Count(Rule):
    """``k`` of ``m`` comparisons hold (value = by point estimate; CI = [significant, not reversed])."""

    m: int = 1
    PATTERN: ClassVar[str] = (r"k of (?P<m>\d+) comparisons hold \(CI: significant \.\. not significantly "
                              r"reversed\); all -> reproduced, some -> partly, all reversed -> contradicted")

    def __post_init__(self):
        if not isinstance(self.m, int) or self.m < 1:
            raise ValueError(f"m must be a positive int, got {self.m!r}")

    @property
    def text(self) -> str:
        return (f"k of {self.m} comparisons hold (CI: significant .. not significantly reversed); "
                "all -> reproduced, some -> partly, all reversed -> contradicted")

    @classmethod
    def parse(cls, m):
        return cls(int(m["m"]))

    def decide(self, value, ci_low, ci_high, n):
        lo = value if math.isnan(ci_low) else ci_low
        hi = value if math.isnan(ci_high) else ci_high
        if not 0 <= lo <= value <= hi <= self.m or any(x != int(x) for x in (lo, value, hi)):
            raise ValueError(f"rule {self.text!r} needs counts 0 <= ci_low <= value <= ci_high <= {self.m}, "
                             f"got {lo}, {value}, {hi}")
        if lo == self.m:
            return "reproduced"
        if hi == 0:
            return "contradicted"
        return "partly" if lo > 0 else "not reproduced"

    @staticmethod
    def tally(diffs, lows=None, highs=None, direction: str = ">") -> dict:
        """``{"value", "ci_low", "ci_high"}`` of a :class:`Count` row from per-comparison differences
        ``diffs [m]`` (paper's direction ``">"``: the claim says diff > 0) and optional CIs ``lows, highs [m]``."""
        sign = 1.0 if direction == ">" else -1.0
        d = [sign * float(x) for x in diffs]
        if lows is None or highs is None:
            k = sum(x > 0 for x in d)
            return {"value": k, "ci_low": k, "ci_high": k}
        lo = [sign * float(a) for a in (lows if sign > 0 else highs)]
        hi = [sign * float(b) for b in (highs if sign > 0 else lows)]
        return {"value": sum(x > 0 for x in d), "ci_low": sum(x > 0 for x in lo),
                "ci_high": len(d) - sum(x < 0 for x in hi)}


RULES: tuple[type[Rule], ...] = (CISide, Exact, Threshold, Equivalence, Count)


def parse_rule(text: str) -> Rule:
    """The :class:`Rule` whose text is ``text`` (``parse_rule(r.text) == r`` for every rule)."""
    for cls in RULES:
        m = re.fullmatch(cls.PATTERN, text)
        if m:
            return cls.parse(m)
    raise ValueError(f"unknown rule text {text!r}; rules are built by {', '.join(c.__name__ for c in RULES)}")
