"""A static site of the executed notebooks (``make site``): ``python -m lrp_utils.site [--out build/site]``.

Writes, offline:

* ``<NN_name>.html`` per numbered notebook: nbconvert's bundled ``lab`` template, figures embedded as the
  notebook holds them (base64 PNG), formulas typeset by a local MathJax 2.7 (copied from the
  ``jupyter-server-mathjax`` package into ``mathjax/``; the template's default loads MathJax from a CDN)
  as the browser's native MathML (no web fonts needed; the HTML-CSS output is pointed at the STIX fonts the
  package ships so that it requests no missing file), no
  require.js and no widget manager (both come from CDNs; the notebooks show static HTML next to their
  widgets);
* ``index.html``: the reproduction status (``figures/claims.csv`` as a table when it exists, a note
  otherwise), then a gallery: per notebook its title, a link to its page and its figures
  (``figures/NN_*.png``, copied to ``figures/``).

Nothing is executed: the pages show the committed outputs (``make reproduce`` writes them).
"""
from __future__ import annotations

import argparse
import html
import shutil
import sys
from pathlib import Path

import nbformat

from .paths import ROOT

#: screenshots of the tools themselves, not results: left out of the gallery
SCREENSHOTS = ("00_jupyterlab.png", "00_site.png", "00_demo.png")
CLAIM_COLUMNS = ["notebook", "claim_id", "paper", "claim", "measure", "model", "value", "ci_low", "ci_high", "n",
                 "rule", "verdict", "checked_in_ci"]
MATHJAX_URL = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
#: nbconvert's lab page without its CDN scripts (require.js; mermaid, which no notebook uses), with a link back
PAGE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}<link rel="icon" href="data:,">
<style>/* MathJax's MathML output points these at TeX web fonts the local copy lacks: use the browser's */
[mathvariant], [class^="MJX-tex-"] { font-family: serif !important; }</style>
{%- endblock extra_css -%}
{%- block html_head_js_mathjax -%}
<script type="text/x-mathjax-config">
MathJax.Hub.Config({menuSettings: {renderer: "NativeMML"},
                   "HTML-CSS": {availableFonts: ["STIX-Web"], preferredFont: "STIX-Web", webFont: "STIX-Web", imageFont: null}});
</script>
{{ super() }}
{%- endblock html_head_js_mathjax -%}
{%- block body_header -%}
{{ super() }}
<nav class="lrp-nav" style="padding: 8px 16px; font-family: sans-serif;"><a href="index.html">&larr; all notebooks</a></nav>
{%- endblock body_header -%}
"""
STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 85%; }
th, td { border: 1px solid #ccc; padding: 3px 6px; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.verdict-reproduced { background: #dff0d8; } td.verdict-partly { background: #fcf8e3; }
td.verdict-not-reproduced, td.verdict-contradicted { background: #f2dede; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
.gallery figure { margin: 0; width: 370px; } .gallery img { width: 100%; border: 1px solid #ddd; }
.gallery figcaption { font-size: 80%; color: #555; }
.note { background: #f7f7f7; border-left: 4px solid #999; padding: 0.5em 1em; }
"""


def notebook_title(nb) -> str:
    """The first markdown heading of a notebook (without the leading ``#``)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def copy_mathjax(out: Path) -> None:
    import jupyter_server_mathjax

    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(static, out / "mathjax", dirs_exist_ok=True)


def exporter():
    """nbconvert's HTML exporter with the ``lab`` template, the local MathJax and the page template above."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exp = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"lrp_page.html.j2": PAGE_TEMPLATE})])
    exp.template_file = "lrp_page.html.j2"
    exp.mathjax_url = MATHJAX_URL
    return exp


def render_notebook(path: Path, out: Path, exp=None) -> str:
    """Write ``out/<stem>.html`` for the notebook at ``path``; returns its title."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)  # no widget manager (CDN); the static views stay
    body, _ = (exp or exporter()).from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
    (out / f"{path.stem}.html").write_text(body, encoding="utf-8")
    return notebook_title(nb)


def claims_html(path: Path) -> str:
    """The claims table as HTML, or a note saying it is missing."""
    if not path.exists():
        return ('<p class="note">No reproduction status yet: <code>figures/claims.csv</code> is written by the '
                "notebooks in full mode (<code>make reproduce</code>).</p>")
    import pandas as pd

    df = pd.read_csv(path)
    cols = [c for c in CLAIM_COLUMNS if c in df.columns] + [c for c in df.columns if c not in CLAIM_COLUMNS]
    counts = df["verdict"].value_counts() if "verdict" in df.columns else pd.Series(dtype=int)
    summary = ", ".join(f"{html.escape(str(v))}: {n}" for v, n in counts.items())
    rows = []
    for _, r in df[cols].iterrows():
        cells = []
        for c in cols:
            v = r[c]
            text = "" if pd.isna(v) else (f"{v:.4g}" if isinstance(v, float) else str(v))
            cls = f' class="verdict-{text.replace(" ", "-")}"' if c == "verdict" else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    return (f"<p>{len(df)} claims ({summary}), from <code>figures/claims.csv</code>; each verdict is computed "
            f'from the numbers by the rule in its row.</p>\n<table id="claims"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def index_html(pages: list[tuple[str, str]], figures: Path, claims: Path) -> str:
    """The index page: status table, then per notebook its link and figures (``pages``: (stem, title))."""
    parts = []
    for stem, title in pages:
        imgs = [p.name for p in sorted(figures.glob(f"{stem[:2]}_*.png")) if p.name not in SCREENSHOTS]
        gallery = "".join(f'<figure><a href="figures/{n}"><img src="figures/{n}" alt="{html.escape(n)}"></a>'
                          f"<figcaption>{html.escape(n)}</figcaption></figure>" for n in imgs)
        parts.append(f'<h3><a href="{stem}.html">{html.escape(title or stem)}</a></h3>\n'
                     f'<div class="gallery">{gallery}</div>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>lrp-transformers: notebooks and reproduction status</title>
<style>{STYLE}</style></head>
<body>
<h1>lrp-transformers</h1>
<p>Layer-wise Relevance Propagation for transformers: the executed notebooks of the collection (full-mode runs,
<code>make reproduce</code>), each reproducing one paper's claims, and the status of every claim.</p>
<h2 id="status">Reproduction status</h2>
{claims_html(claims)}
<h2 id="notebooks">Notebooks</h2>
{''.join(parts)}
</body></html>
"""


def build(out: Path | None = None, notebooks: list[Path] | None = None, figures: Path | None = None) -> Path:
    """Write the site (default ``build/site``, replaced) and return its folder."""
    out = Path(out or ROOT / "build" / "site").resolve()
    figures = Path(figures or ROOT / "figures")
    shutil.rmtree(out, ignore_errors=True)
    (out / "figures").mkdir(parents=True)
    copy_mathjax(out)
    exp = exporter()
    pages = [(p.stem, render_notebook(p, out, exp))
             for p in notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
    for png in figures.glob("[0-9][0-9]_*.png"):
        if png.name not in SCREENSHOTS:
            shutil.copy(png, out / "figures" / png.name)
    (out / "index.html").write_text(index_html(pages, figures, figures / "claims.csv"), encoding="utf-8")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "build" / "site")
    a = p.parse_args(argv)
    out = build(a.out)
    print(f"site: {out / 'index.html'} ({len(list(out.glob('*.html')))} pages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
