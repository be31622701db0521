"""The README's generated sections equal what the committed CSVs generate; markers and tables."""
import shutil

import pytest

from lrp_utils import claims, readme, toy
from lrp_utils.claims import CISide, Claim, Exact

NAMES = {"03": "03_toy_notebook", "07": "07_alpha", "08": "08_beta"}  # 07, 08: no default figure


def test_committed_readme_is_generated_from_the_committed_csvs():
    assert readme.is_current(), "README.md is stale: run python -m lrp_utils.notebooks readme"


def test_every_result_sentence_of_the_gallery_is_generated():
    text = readme.README.read_text()
    gallery = text[text.index("## Gallery"):]
    assert gallery.index("<!-- BEGIN GENERATED: gallery -->") < gallery.index("![](figures/")
    assert gallery.index("![](figures/") < gallery.index("<!-- END GENERATED: gallery -->")


def test_render_replaces_only_between_markers():
    text = ("intro\n<!-- BEGIN GENERATED: status -->\nold\n<!-- END GENERATED: status -->\nmiddle\n"
            "<!-- BEGIN GENERATED: gallery -->\n<!-- END GENERATED: gallery -->\nend\n")
    out = readme.render(text, {"status": "new table", "gallery": "pics\n"})
    assert out == ("intro\n<!-- BEGIN GENERATED: status -->\nnew table\n<!-- END GENERATED: status -->\nmiddle\n"
                   "<!-- BEGIN GENERATED: gallery -->\npics\n<!-- END GENERATED: gallery -->\nend\n")
    assert readme.render(out, {"status": "new table", "gallery": "pics"}) == out
    with pytest.raises(ValueError, match="status"):
        readme.render("no markers", {"status": "x"})
    with pytest.raises(ValueError):
        readme.render(text + text, {"status": "x"})


def rows():
    return [Claim("08", "ordering", "Achtibat et al. 2024", "AttnLRP beats CP-LRP", "area diff", "MiniLM-RT",
                  -0.04, CISide(">"), -0.067, -0.013, n=100, checked_in_ci=False).row(),
            Claim("08", "lxt", "Achtibat et al. 2024", "equal to lxt", "max rel. error", "BERT", 3e-7,
                  Exact(1e-4), n=3, checked_in_ci=True).row()]


def test_status_table_from_rows():
    table = readme.status(rows(), NAMES)
    line = next(l for l in table.splitlines() if "ordering" in l or "AttnLRP beats" in l)
    assert "**contradicted**" in line and "[-0.067, -0.013], n = 100" in line and line.endswith("| no |")
    assert r"\|value\| <= 0.0001" in table  # pipes escaped inside cells
    assert "No claims recorded yet for notebooks 03, 07." in table


def test_gallery_captions_registered_and_neutral(tmp_path):
    (tmp_path / "07_x.png").write_bytes(b"")
    (tmp_path / "08_y.png").write_bytes(b"")
    shutil.copy(readme.FIGURES / toy.TOY_CSV, tmp_path)
    lines = readme.gallery(rows(), NAMES, tmp_path).splitlines()
    assert lines[2].startswith("| ![](figures/03_toy.png) | **03 toy notebook**: y = x1 x2 x3")  # registered
    assert "AttnLRP gives (6, 6, 12)" in lines[2] and lines[2].endswith("No claims recorded yet. |")
    assert lines[3].startswith("| ![](figures/07_x.png) | **07 alpha**: `07_x.png`, written by")  # neutral
    assert "**08 beta** (Achtibat et al. 2024)" in lines[4]
    assert "2 claims in the status table: 1 reproduced, 1 contradicted." in lines[4]


def test_write_only_touches_the_generated_sections(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("# t\n<!-- BEGIN GENERATED: status -->\n<!-- END GENERATED: status -->\n"
                    "<!-- BEGIN GENERATED: gallery -->\n<!-- END GENERATED: gallery -->\n## Speed\nhand\n")
    assert readme.write(path) is True and readme.write(path) is False
    text = path.read_text()
    assert text.startswith("# t\n") and text.endswith("## Speed\nhand\n") and claims.FILE in text
