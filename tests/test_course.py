"""The course pack (``make course``, :mod:`lrp_utils.course`): nbgrader grades the committed solutions with
full marks and the untouched student versions with zero, and the student versions hold no solution.

How the grading is checked, and why this way. ``nbgrader autograde`` executes a whole notebook; doing
that for the source and for the student version of all six notebooks would run every notebook twice
more on top of the nbval run of ``make test`` (one quick-mode pass of the six notebooks: 481 CPU s
under nbval, measured on the 2-core machine). Instead :func:`lrp_utils.course.execute_both` runs each notebook once,
in quick mode (``quick=True`` injected by papermill), forking only at the exercises: one kernel runs the
student version cell by cell (stub answers, full locked tests), then the source's exercise cells again.
Both executed notebooks are then submitted and graded by ``nbgrader autograde`` itself, with its
execution step off (it grades the outputs they hold) and its other steps on (restoring locked cells and
hidden tests from the gradebook, scoring, writing the gradebook). The checks can fail: a solution that
no longer passes its test, a test that passes without an answer (a value left over from an earlier
cell), an error anywhere outside the exercises of either version, a cell that did not run, or a
solution line that leaks into the student version all fail here. Cost: the six grading tests take
469 CPU s, one pass; nbgrader's own executing autograde was checked to give the same grades (03). The
same run is a superset of nbval's ``--nbval-lax`` check of the notebooks (any error in any cell fails).
"""
from __future__ import annotations

import re

import nbformat
import pytest

from lrp_utils import course

# nbgrader 0.9 with SQLAlchemy 2 warns about session cascades it does not rely on
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")
ASSIGNMENTS = [p.stem for p in course.graded_notebooks()]
SOLUTION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    return course.build(tmp_path_factory.mktemp("course") / "course")


def _cells(path):
    return nbformat.read(path, as_version=4).cells


def test_every_notebook_is_an_assignment_with_graded_exercises():
    assert ASSIGNMENTS == [p.stem for p in sorted(course.ROOT.joinpath("notebooks").glob("0[0-5]_*.ipynb"))]
    for name in ASSIGNMENTS:
        cells = _cells(course.ROOT / "notebooks" / f"{name}.ipynb")
        graded = [c for c in cells if course.is_graded(c)]
        answers = [c for c in graded if c.metadata.nbgrader["solution"]]
        tests = [c for c in graded if c.metadata.nbgrader["grade"]]
        assert len(answers) == len(tests) >= 3, name
        for cell in tests:  # locked, worth points, with a recomputation the student does not see
            meta = cell.metadata.nbgrader
            assert meta["locked"] and meta["points"] > 0 and HIDDEN.search(cell.source), (name, meta["grade_id"])
            assert "assert" in HIDDEN.search(cell.source).group(1)
        for cell in answers:
            assert SOLUTION.search(cell.source), (name, cell.metadata.nbgrader)
        ids = [c.metadata.nbgrader["grade_id"] for c in graded]
        assert len(ids) == len(set(ids))


def _leak_lines(cells, pattern) -> list[list[str]]:
    """Per graded cell: the lines inside ``pattern``'s region that no other (ungraded) cell contains."""
    elsewhere = "\n".join(c.source for c in cells if not course.is_graded(c))
    out = []
    for cell in cells:
        for region in pattern.findall(cell.source) if course.is_graded(cell) else []:
            out.append([l.strip() for l in region.splitlines() if len(l.strip()) > 12 and l.strip() not in elsewhere])
    return out


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_release_holds_no_solution_and_no_hidden_test(pack, name):
    source, release = course.source_path(pack, name), course.release_path(pack, name)
    text = "\n".join(c.source for c in _cells(release))  # decoded sources: JSON escapes quotes
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    stubs = [c for c in _cells(release) if c.cell_type == "code" and "raise NotImplementedError()" in c.source]
    assert len(stubs) == 3 and all(course.is_graded(c) and c.metadata.nbgrader["solution"] for c in stubs)
    for pattern in (SOLUTION, HIDDEN):
        regions = _leak_lines(_cells(source), pattern)
        assert regions and all(regions), f"{name}: every region has lines of its own to look for"
        leaked = [l for lines in regions for l in lines if l in text]
        assert not leaked, f"{name}: {leaked}"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_release_keeps_figures_only(pack, name):
    cells = _cells(course.release_path(pack, name))
    outputs = [o for c in cells if c.cell_type == "code" for o in c.outputs]
    assert all(o.output_type == "display_data" and any(k.startswith("image/") for k in o.data) for o in outputs)
    assert not any(c.outputs for c in cells if course.is_graded(c) and c.cell_type == "code")
    source_figures = sum(1 for c in _cells(course.source_path(pack, name)) if not course.is_graded(c)
                         for o in c.get("outputs", []) if any(k.startswith("image/") for k in o.get("data", {})))
    assert len(outputs) == source_figures


@pytest.mark.slow
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_autograde_solution_full_marks_student_version_zero(pack, name, tmp_path, monkeypatch):
    monkeypatch.setenv("LRP_UTILS_FIGURES", str(tmp_path / "figures"))
    result = course.grade_both(pack, name, {"quick": True})
    solution, blank = result["solution"], result["blank"]
    assert len(solution) >= 3 and set(blank) == set(solution)
    assert all(score == top > 0 for score, top in solution.values()), solution
    assert all(score == 0 for score, _ in blank.values()), blank
    for who, nb in result["notebooks"].items():
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in code), f"{who}: a cell did not run"
        errors = {c.id: o.ename for c in code for o in c.outputs if o.output_type == "error"}
        outside = {k: v for k, v in errors.items() if not course.is_graded(next(c for c in code if c.id == k))}
        assert not outside, f"{who}: errors outside the exercises: {outside}"
        if who == "solution":
            assert not errors, errors
        else:  # every test cell failed on a missing answer, every answer cell on its stub
            tests = [c for c in code if course.is_graded(c) and c.metadata.nbgrader["grade"]]
            assert all(c.id in errors for c in tests), errors
