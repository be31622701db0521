"""The static site (``make site``, :mod:`lrp_utils.site`): pages and index are written, nothing is loaded from
outside the machine, the claims table is shown when ``figures/claims.csv`` exists and a note otherwise.
(The real-browser check of the same pages is ``tests/browser_apps.py``, run by ``make test-browser``.)"""
from __future__ import annotations

import base64
import re

import nbformat
import pandas as pd
import pytest

from lrp_utils import site

# a 1x1 PNG
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
EXTERNAL = re.compile(r"<(?:script|img|iframe)[^>]*\ssrc=\"https?://|<link[^>]*\shref=\"https?://", re.I)


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("plot()")
    code.outputs = [nbformat.v4.new_output("display_data", {"image/png": base64.b64encode(PNG).decode(),
                                                             "text/plain": "<Figure>"})]
    nb.cells = [nbformat.v4.new_markdown_cell("# 07 · A test notebook\n\nConservation: $\\sum_i R_i = f(x)$."), code]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def inputs(tmp_path):
    figures = tmp_path / "figures"
    figures.mkdir()
    for name in ("07_curves.png", "07_heatmap.png", "00_site.png"):
        (figures / name).write_bytes(PNG)
    return _notebook(tmp_path / "07_test.ipynb"), figures


def test_pages_and_index_without_claims(inputs, tmp_path):
    nb, figures = inputs
    out = site.build(tmp_path / "site", notebooks=[nb], figures=figures)
    page = (out / "07_test.html").read_text()
    assert site.MATHJAX_URL in page and (out / "mathjax" / "MathJax.js").exists()
    assert not EXTERNAL.search(page), EXTERNAL.search(page).group(0)
    assert 'href="index.html"' in page and "data:image/png;base64," in page
    assert "widget-state" not in page  # no widget manager, whose scripts come from a CDN
    index = (out / "index.html").read_text()
    assert not EXTERNAL.search(index)
    assert '<a href="07_test.html">07 · A test notebook</a>' in index
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["07_curves.png", "07_heatmap.png"]
    assert index.count("<img ") == 2 and "00_site.png" not in index  # screenshots are not results
    assert 'class="note"' in index and 'id="claims"' not in index


def test_index_shows_the_claims_table(inputs, tmp_path):
    nb, figures = inputs
    rows = [dict(notebook="07", claim_id="c1", paper="X 2025", claim="A beats B", measure="AUAC", model="m",
                 value=0.12345678, ci_low=0.1, ci_high=0.2, n=50, rule="CI excludes 0", verdict="reproduced",
                 checked_in_ci=True),
            dict(notebook="07", claim_id="c2", paper="X 2025", claim="<b>bold</b>", measure="r", model="m",
                 value=-0.5, ci_low=None, ci_high=None, n=10, rule="r > 0", verdict="not reproduced",
                 checked_in_ci=False)]
    pd.DataFrame(rows).to_csv(figures / "claims.csv", index=False)
    index = (site.build(tmp_path / "site", notebooks=[nb], figures=figures) / "index.html").read_text()
    table = index[index.index('<table id="claims">'):]
    assert table.count("<tr>") == 3 and "not reproduced: 1" in index and "reproduced: 1" in index
    assert '<td class="verdict-reproduced">reproduced</td>' in table
    assert '<td class="verdict-not-reproduced">not reproduced</td>' in table
    assert "0.1235" in table and "&lt;b&gt;bold&lt;/b&gt;" in table and "<b>bold</b>" not in table
    assert 'class="note"' not in index


@pytest.mark.slow
def test_the_collection_builds_offline(tmp_path):
    out = site.build(tmp_path / "site")
    pages = sorted(p.name for p in out.glob("[0-9][0-9]_*.html"))
    assert pages == [p.stem + ".html" for p in sorted(site.ROOT.joinpath("notebooks").glob("[0-9][0-9]_*.ipynb"))]
    for name in [*pages, "index.html"]:
        text = (out / name).read_text()
        assert not EXTERNAL.search(text), (name, EXTERNAL.search(text).group(0))
