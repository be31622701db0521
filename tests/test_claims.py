"""The claims table: verdict rules on hand-made rows (passing and failing), the CSV round trip, and the
committed ``figures/claims.csv`` against its own rows and against the committed figure CSVs."""
import csv
import math

import pandas as pd
import pytest

from lrp_utils import claims, toy
from lrp_utils.claims import CISide, Claim, Count, Equivalence, Exact, Threshold
from lrp_utils.paths import ROOT
from tolerances import TOY_IG_ABS

FIGURES = ROOT / "figures"


def claim(rule, value, lo=None, hi=None, **kw):
    base = dict(notebook="99", claim_id="c", paper="P", claim="a claim", measure="m", model="toy",
                value=value, rule=rule, ci_low=lo, ci_high=hi, n=10)
    return Claim(**{**base, **kw})


# ----------------------------------------------------------------------------- rules
@pytest.mark.parametrize("rule, value, lo, hi, verdict", [
    (CISide(">"), 0.3, 0.1, 0.5, "reproduced"),
    (CISide(">"), -0.3, -0.5, -0.1, "contradicted"),
    (CISide(">"), 0.3, -0.1, 0.5, "not reproduced"),
    (CISide("<"), -0.3, -0.5, -0.1, "reproduced"),
    (CISide("<"), 0.3, 0.1, 0.5, "contradicted"),
    (CISide(">", 1.0), 1.2, 1.05, 1.3, "reproduced"),
    (CISide(">", 1.0), 1.2, 0.95, 1.3, "not reproduced"),
    (CISide(">"), 0.3, 0.0, 0.5, "not reproduced"),  # a bound on the threshold does not exclude it
    (Exact(1e-8), 3e-9, None, None, "reproduced"),
    (Exact(1e-8), -3e-9, None, None, "reproduced"),
    (Exact(1e-8), 2e-8, None, None, "not reproduced"),
    (Threshold(">=", 0.9), 0.9, None, None, "reproduced"),
    (Threshold(">", 0.9), 0.9, None, None, "not reproduced"),
    (Threshold("<", 0.2), 0.25, None, None, "not reproduced"),
    (Threshold("<=", 0.2), 0.1, None, None, "reproduced"),
    (Equivalence(0.05, 1.0), 1.0, 0.97, 1.04, "reproduced"),
    (Equivalence(0.05, 1.0), 1.0, 0.90, 1.04, "not reproduced"),
    (Equivalence(0.05, 1.0), 0.2, 0.15, 0.25, "not reproduced"),
    (Count(3), 3, 3, 3, "reproduced"),
    (Count(3), 3, 1, 3, "partly"),
    (Count(3), 2, 0, 3, "not reproduced"),
    (Count(3), 0, 0, 0, "contradicted"),
    (Count(3), 1, None, None, "partly"),  # comparisons without intervals: the point count decides
    (Count(3), 0, None, None, "contradicted"),
])
def test_rule_verdicts(rule, value, lo, hi, verdict):
    assert claim(rule, value, lo, hi).verdict == verdict


@pytest.mark.parametrize("rule", [CISide(">"), Exact(1e-6), Threshold("<=", 0.1), Equivalence(0.1, 1.0), Count(5)])
def test_non_finite_value_is_not_reproduced(rule):
    assert rule.verdict(math.nan, -1, 1) == rule.verdict(math.inf, -1, 1) == "not reproduced"


@pytest.mark.parametrize("rule", [CISide(">"), CISide("<", -2.5), Exact(1e-12), Exact(0.0), Threshold(">=", 0.123456789),
                                  Threshold("<", -1e-300), Equivalence(0.05), Equivalence(0.1, 1.0), Count(1), Count(12)])
def test_rule_text_parses_back(rule):
    assert claims.parse_rule(rule.text) == rule


@pytest.mark.parametrize("text", ["", "value >= ", "value => 1.0", "|value| <= 1e-8", "CI excludes 0.0 in the "
                                  "paper's direction (> 1.0)", "k of 0 comparisons hold"])
def test_unknown_rule_text_raises(text):
    with pytest.raises(ValueError):
        claims.parse_rule(text)


@pytest.mark.parametrize("make", [
    lambda: claim(CISide(">"), 0.3),                    # CI rule without an interval
    lambda: claim(CISide(">"), 0.3, 0.5, 0.1),          # inverted interval
    lambda: claim(Equivalence(0.1), 0.0, None, 0.1),
    lambda: claim(Count(3), 4),                         # more than m
    lambda: claim(Count(3), 2, 3, 3),                   # value below the sure count
    lambda: claim(Count(3), 1.5),
    lambda: CISide("!="), lambda: Threshold("=="), lambda: Exact(-1.0), lambda: Count(0),
    lambda: claim(Exact(0.1), 0.0, notebook="3"),
    lambda: claim(Exact(0.1), 0.0, claim_id="Has Space"),
    lambda: claim(Exact(0.1), 0.0, claim="two\nlines"),
    lambda: claim(Exact(0.1), 0.0, measure=""),
    lambda: claim("not a rule", 0.0),
])
def test_bad_claims_raise(make):
    with pytest.raises(ValueError):
        make()


def test_count_tally_from_comparisons():
    assert Count.tally([0.2, 0.1, -0.3]) == {"value": 2, "ci_low": 2, "ci_high": 2}
    t = Count.tally([0.2, 0.1, -0.3], lows=[0.1, -0.1, -0.5], highs=[0.3, 0.3, -0.1])
    assert t == {"value": 2, "ci_low": 1, "ci_high": 2}  # one significant, one reversed
    assert claim(Count(3), **{"value": t["value"], "lo": t["ci_low"], "hi": t["ci_high"]}).verdict == "partly"
    t = Count.tally([-0.2, -0.1], lows=[-0.3, -0.2], highs=[-0.1, -0.05], direction="<")
    assert t == {"value": 2, "ci_low": 2, "ci_high": 2}


def test_numbers_are_rounded_before_the_verdict():
    c = claim(Threshold(">=", 0.5), 0.4999999)  # 6 significant digits: 0.5
    assert c.value == 0.5 and c.verdict == "reproduced" and c.row()["value"] == "0.5"
    assert claims.fmt(None) == claims.fmt(math.nan) == "" and claims.fmt(1234567.0) == "1.23457e+06"


# ----------------------------------------------------------------------------- the CSV
def test_record_rewrites_only_its_notebook(tmp_path):
    path = tmp_path / "claims.csv"
    a = [claim(Exact(0.1), 0.0, notebook="05", claim_id="x"), claim(Exact(0.1), 0.5, notebook="05", claim_id="y")]
    b = [claim(CISide(">"), 0.2, 0.1, 0.3, notebook="01", claim_id="z", checked_in_ci=True)]
    claims.record("05", a, path)
    claims.record("01", b, path)
    assert [r["claim_id"] for r in claims.read_rows(path)] == ["z", "x", "y"]  # by notebook, then as given
    claims.record("05", a[1:], path)
    rows = claims.read_rows(path)
    assert [(r["notebook"], r["claim_id"], r["verdict"]) for r in rows] == [("01", "z", "reproduced"),
                                                                         ("05", "y", "not reproduced")]
    assert rows[0]["checked_in_ci"] == "true" and rows[1]["ci_low"] == "" and claims.recheck(path) == []
    first = path.read_bytes()
    claims.record("05", a[1:], path)
    assert path.read_bytes() == first
    with pytest.raises(ValueError):
        claims.record("05", a + a[:1], path)  # duplicate (claim_id, model)
    with pytest.raises(ValueError):
        claims.record("01", a, path)  # rows of another notebook


def _tamper(path, column, value):
    rows = claims.read_rows(path)
    rows[0][column] = value
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=claims.COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


@pytest.mark.parametrize("column, value", [("verdict", "reproduced"), ("value", "0.05"), ("ci_high", "0.01"),
                                           ("rule", "value >= 0.9"), ("rule", "a typed verdict"), ("value", "1e-1"),
                                           ("checked_in_ci", "yes")])
def test_recheck_finds_tampered_rows(tmp_path, column, value):
    path = tmp_path / "claims.csv"
    claims.record("02", [claim(CISide(">"), -0.02, -0.04, -0.01, notebook="02")], path)
    assert claims.recheck(path) == []
    _tamper(path, column, value)
    assert len(claims.recheck(path)) == 1


def test_wrong_columns_are_refused(tmp_path):
    path = tmp_path / "claims.csv"
    path.write_text("notebook,verdict\n01,reproduced\n")
    with pytest.raises(ValueError):
        claims.read_rows(path)


def test_verdict_lines_come_from_the_file(tmp_path, capsys):
    path = tmp_path / "claims.csv"
    claims.record("04", [claim(CISide(">"), -0.02, -0.04, -0.01, notebook="04", model="MiniLM-RT")], path)
    (line,) = claims.verdict_lines("04", path)
    assert line.startswith("04 c (MiniLM-RT): CONTRADICTED. a claim.") and "[-0.04, -0.01] (n = 10)" in line
    claims.print_verdicts("01", path)
    assert "no claims recorded" in capsys.readouterr().out


def test_assert_verdicts_against_a_committed_table(tmp_path):
    path = tmp_path / "committed.csv"
    full = claim(CISide(">"), 0.2, 0.1, 0.3, checked_in_ci=True)
    claims.record("99", [full], path)
    claims.assert_verdicts([claim(CISide(">"), 0.1, 0.05, 0.2, checked_in_ci=True)], committed=path)
    claims.assert_verdicts([claim(CISide(">"), 0.1, -0.05, 0.2)], committed=path)  # not checked in CI
    with pytest.raises(AssertionError, match="99 c"):
        claims.assert_verdicts([claim(CISide(">"), 0.1, -0.05, 0.2, checked_in_ci=True)], committed=path)
    with pytest.raises(AssertionError):
        claims.assert_verdicts([claim(CISide(">"), 0.1, 0.05, 0.2, claim_id="new", checked_in_ci=True)], committed=path)


def test_registry_refuses_a_second_builder():
    claims.builders()
    with pytest.raises(ValueError):
        claims.register("03")(lambda figures: [])
    claims.register("03")(claims.builders()["03"])  # the same function again is fine
    with pytest.raises(KeyError):
        claims.build("98")


# ----------------------------------------------------------------------------- the committed table
def test_committed_verdicts_follow_from_their_numbers():
    assert claims.read_rows(claims.COMMITTED), "figures/claims.csv is empty"
    assert claims.recheck(claims.COMMITTED) == []


def test_committed_claims_equal_what_the_committed_figure_csvs_give():
    committed = claims.read_rows(claims.COMMITTED)
    registered = claims.builders()
    assert {r["notebook"] for r in committed} <= set(registered), "rows without a registered builder"
    for notebook in registered:
        rows = [c.row() for c in claims.build(notebook, FIGURES)]
        assert rows == [r for r in committed if r["notebook"] == notebook], notebook


def test_committed_toy_csv_is_what_the_toy_gives():
    committed = pd.read_csv(FIGURES / toy.TOY_CSV)
    fresh = toy.toy_table()
    assert committed[["method", "order", "input"]].equals(fresh[["method", "order", "input"]])
    assert (committed.relevance - fresh.relevance).abs().max() <= TOY_IG_ABS
