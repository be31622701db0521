"""The README's generated sections: the reproduction-status table and the gallery captions.

Both are computed from the committed ``figures/claims.csv`` and the figure CSVs (captions registered with
:func:`lrp_utils.claims.register_caption`), and written between markers::

    <!-- BEGIN GENERATED: status -->  ...  <!-- END GENERATED: status -->
    <!-- BEGIN GENERATED: gallery --> ...  <!-- END GENERATED: gallery -->

``python -m lrp_utils.notebooks readme`` rewrites them (``make reproduce`` runs it after the notebooks);
``--check`` exits 1 when the README differs from what the CSVs generate, and a test does the same.
Everything outside the markers is left as it is.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from . import claims
from .paths import ROOT

README = ROOT / "README.md"
FIGURES = ROOT / "figures"  # the README links figures/…, so it is always generated from the committed folder
SECTIONS = ("status", "gallery")
#: gallery figure of a notebook without a registered caption
DEFAULT_FIGURES = {"00": "00_methods.png", "01": "01_faithfulness_curves.png", "02": "02_cost.png",
                   "03": "03_toy.png", "04": "04_loo_by_layer.png", "05": "05_conservation.png"}
_HEADER = ("Computed by `python -m lrp_utils.notebooks readme` from [`figures/claims.csv`](figures/claims.csv), "
           "which the notebooks write in full mode (`make reproduce`). Each verdict follows from the row's "
           "numbers by its rule, in code (`lrp_utils/claims.py`); a test recomputes every verdict and every row "
           "from the committed CSVs. Verdicts: **reproduced**, **partly**, **not reproduced**, **contradicted** "
           "(the numbers go the other way). *in CI*: the quick-mode run asserts the same verdict.")


def _cell(text: str) -> str:
    return text.replace("|", r"\|")


def notebook_names(root: Path = ROOT) -> dict[str, str]:
    """``{"00": "00_quickstart", ...}``: the numbered notebooks."""
    return {p.stem[:2]: p.stem for p in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))}


def _measured(r: dict) -> str:
    ci = f" [{r['ci_low']}, {r['ci_high']}]" if r["ci_low"] or r["ci_high"] else ""
    n = f", n = {r['n']}" if r["n"] else ""
    return f"{r['measure']}: {r['value'] or 'nan'}{ci}{n}"


def status(rows: list[dict], names: dict[str, str]) -> str:
    """The status table: one line per claim row, and the notebooks that record no claims yet."""
    lines = [_HEADER, "", "| notebook | paper | claim | model | measured | rule | verdict | in CI |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        nb = names.get(r["notebook"], r["notebook"])
        cells = [f"[{r['notebook']}](notebooks/{nb}.ipynb)", r["paper"], r["claim"], r["model"], _measured(r),
                 r["rule"], f"**{r['verdict']}**", "yes" if r["checked_in_ci"] == "true" else "no"]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    missing = [nb for nb in names if nb not in {r["notebook"] for r in rows}]
    if missing:
        lines += ["", f"No claims recorded yet for notebook{'s' if len(missing) > 1 else ''} {', '.join(missing)}."]
    return "\n".join(lines)


def _tally(rows: list[dict]) -> str:
    counts = Counter(r["verdict"] for r in rows)
    parts = [f"{counts[v]} {v}" for v in claims.VERDICTS if counts[v]]
    return f"{len(rows)} claim{'s' if len(rows) != 1 else ''} in the status table: {', '.join(parts)}."


def gallery(rows: list[dict], names: dict[str, str], figures: Path = FIGURES) -> str:
    """The gallery table: per notebook its figure and a caption computed from the CSVs (registered) or a
    neutral one naming the figure, each followed by the notebook's verdict count."""
    registered = claims.captions()
    lines = ["| | |", "|---|---|"]
    for nb, stem in names.items():
        own = [r for r in rows if r["notebook"] == nb]
        papers = ", ".join(dict.fromkeys(r["paper"] for r in own))
        title = f"**{stem.replace('_', ' ')}**" + (f" ({papers})" if papers else "")
        if nb in registered:
            figure, fn = registered[nb]
            text = fn(figures).strip()
        else:
            figure = DEFAULT_FIGURES.get(nb) or next((p.name for p in sorted(figures.glob(f"{nb}_*.png"))), None)
            if figure is None:
                continue
            text = f"`{figure}`, written by [the notebook](notebooks/{stem}.ipynb)."
        tally = _tally(own) if own else "No claims recorded yet."
        lines.append(f"| ![](figures/{figure}) | {title}: {_cell(text)} {tally} |")
    return "\n".join(lines)


def sections(figures: Path = FIGURES, root: Path = ROOT) -> dict[str, str]:
    """``{"status": ..., "gallery": ...}``: the generated markdown, from the CSVs under ``figures``."""
    rows = claims.read_rows(Path(figures) / claims.FILE)
    names = notebook_names(root)
    return {"status": status(rows, names), "gallery": gallery(rows, names, Path(figures))}


def _marker(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- BEGIN GENERATED: {name} -->\n)(.*?)(<!-- END GENERATED: {name} -->)", re.S)


def render(text: str, generated: dict[str, str]) -> str:
    """``text`` with each section's markers enclosing its generated markdown; missing markers raise."""
    for name, body in generated.items():
        pattern = _marker(name)
        if len(pattern.findall(text)) != 1:
            raise ValueError(f"README needs exactly one '<!-- BEGIN GENERATED: {name} -->' ... "
                             f"'<!-- END GENERATED: {name} -->' block")
        text = pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(3), text)
    return text


def write(path: Path = README, figures: Path = FIGURES) -> bool:
    """Rewrite the generated sections of ``path``; returns whether the file changed."""
    old = Path(path).read_text(encoding="utf-8")
    new = render(old, sections(figures))
    if new != old:
        Path(path).write_text(new, encoding="utf-8")
    return new != old


def is_current(path: Path = README, figures: Path = FIGURES) -> bool:
    """Whether ``path`` already holds what the committed CSVs generate."""
    text = Path(path).read_text(encoding="utf-8")
    return render(text, sections(figures)) == text
