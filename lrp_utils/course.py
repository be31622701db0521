"""Course pack: an nbgrader course directory built from the numbered notebooks (``make course``).

    python -m lrp_utils.course [--out build/course]

Every notebook with graded exercises (cell pairs carrying nbgrader metadata: an answer cell, then a locked test cell)
becomes one assignment named after it (``00_quickstart`` ...). The course directory holds

* ``source/<assignment>/<assignment>.ipynb``: the notebook as committed (solutions, hidden tests, outputs);
* ``release/<assignment>/<assignment>.ipynb``: the student version written by ``nbgrader
  generate_assignment``: solutions replaced by ``raise NotImplementedError()``, hidden tests removed,
  outputs cleared; then the figures (image outputs of the cells outside the exercises) are put back,
  because the text discusses them and a student should see them before re-running a long notebook;
* ``gradebook.db`` (the assignments, their graded cells and checksums) and ``nbgrader_config.py``.

Grading a class is plain nbgrader from inside the folder: collect the students' notebooks into
``submitted/<student>/<assignment>/`` and run ``nbgrader autograde <assignment>`` (it executes each notebook,
restores the locked test cells and their hidden tests, and writes the scores to the gradebook).
:func:`grade_both` is what the test suite uses to check that the pack grades as it should.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import shutil
import sys
from pathlib import Path

import nbformat

from .paths import ROOT

COURSE_ID = "lrp-transformers"
#: written to ``build/course/nbgrader_config.py``; read back by :func:`api` so the CLI and this module agree
CONFIG = f'''c = get_config()  # noqa: F821 (nbgrader's config loader provides it)
c.CourseDirectory.course_id = "{COURSE_ID}"
# full-mode cells run for minutes on a laptop CPU (nbgrader's default: 30 s per cell)
c.Execute.timeout = 7200
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
'''


def is_graded(cell) -> bool:
    """Whether a cell belongs to an exercise (nbgrader solution, test or locked cell)."""
    return "nbgrader" in cell.get("metadata", {})


def graded_notebooks(folder: Path | None = None) -> list[Path]:
    """The numbered notebooks that hold at least one nbgrader cell."""
    paths = sorted((folder or ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    return [p for p in paths if any(is_graded(c) for c in nbformat.read(p, as_version=4).cells)]


def api(root: Path):
    """An ``nbgrader`` API object for the course folder ``root`` (config read from its ``nbgrader_config.py``)."""
    from nbgrader.apps import NbGraderAPI
    from traitlets.config.loader import PyFileConfigLoader

    # nbgrader runs the `alembic` command of its environment; find it when the venv is not activated
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    config.CourseDirectory.root = str(root)
    config.Exchange.root = str(root / "exchange")  # unused here; the default (/usr/local/share) may be unwritable
    return NbGraderAPI(config=config)


def _check(result: dict, what: str) -> None:
    if not result.get("success"):
        raise RuntimeError(f"nbgrader {what} failed:\n{result.get('log', '')}\n{result.get('error', '')}")


def keep_figures(release: Path, source: Path) -> None:
    """Put the image outputs of the non-exercise cells of ``source`` back into ``release`` (same cell ids);
    everything else stays cleared. Cell-level run metadata (papermill, execution times) is dropped."""
    rel, src = nbformat.read(release, as_version=4), nbformat.read(source, as_version=4)
    outputs = {c.get("id"): c.get("outputs", []) for c in src.cells if not is_graded(c)}
    for cell in rel.cells:
        for key in ("papermill", "execution"):
            cell.metadata.pop(key, None)
        if cell.cell_type != "code" or is_graded(cell):
            continue
        cell.outputs = [o for o in outputs.get(cell.get("id"), [])
                        if o.output_type == "display_data" and any(k.startswith("image/") for k in o.data)]
    nbformat.write(rel, release)


def build(out: Path | None = None, notebooks: list[Path] | None = None) -> Path:
    """Write the course folder (default ``build/course``, replaced) and return its path."""
    root = Path(out or ROOT / "build" / "course").resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "nbgrader_config.py").write_text(CONFIG)
    names = []
    for nb in notebooks or graded_notebooks():
        (root / "source" / nb.stem).mkdir(parents=True)
        shutil.copy(nb, root / "source" / nb.stem / nb.name)
        names.append(nb.stem)
    grader = api(root)
    for name in names:
        with _quiet():
            _check(grader.generate_assignment(name, force=True, create=True), f"generate_assignment {name}")
        keep_figures(release_path(root, name), source_path(root, name))
    return root


def source_path(root: Path, assignment: str) -> Path:
    return root / "source" / assignment / f"{assignment}.ipynb"


def release_path(root: Path, assignment: str) -> Path:
    return root / "release" / assignment / f"{assignment}.ipynb"


def submitted_path(root: Path, assignment: str, student: str) -> Path:
    return root / "submitted" / student / assignment / f"{assignment}.ipynb"


@contextlib.contextmanager
def _quiet():
    """nbgrader logs every file it touches at INFO level; keep the build's output short."""
    import logging

    logger = logging.getLogger("traitlets")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def grades(root: Path, assignment: str, student: str) -> dict[str, tuple[float, float]]:
    """``{grade cell id: (score, max score)}`` of one autograded submission, read from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", COURSE_ID) as gb:
        sub = gb.find_submission_notebook(assignment, assignment, student)
        return {g.name: (float(g.score), float(g.max_score)) for g in sub.grades}


def autograde(root: Path, assignment: str, student: str, execute: bool = True) -> dict[str, tuple[float, float]]:
    """``nbgrader autograde`` one submitted notebook; returns :func:`grades`.

    ``execute=False`` grades the outputs the submitted notebook already holds (nbgrader's ``Execute`` and
    ``ClearOutput`` steps switched off); everything else (restoring the locked cells, scoring) is unchanged.
    """
    grader = api(root)
    if not execute:
        grader.config.Execute.enabled = False
        grader.config.ClearOutput.enabled = False
    with _quiet():
        _check(grader.autograde(assignment, student, force=True, create=True), f"autograde {assignment} {student}")
    return grades(root, assignment, student)


def _with_parameters(path: Path, parameters: dict) -> nbformat.NotebookNode:
    """The notebook at ``path`` with papermill ``parameters`` injected and its outputs cleared."""
    import tempfile

    import papermill as pm

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / path.name
        pm.execute_notebook(str(path), str(out), parameters=parameters, prepare_only=True,
                            kernel_name="python3", progress_bar=False)
        nb = nbformat.read(out, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = "injected-parameters"  # papermill draws a new id each time; both versions must agree
    nb.metadata.pop("widgets", None)
    return nb


def execute_both(root: Path, assignment: str, parameters: dict, cwd: Path, timeout: int = 3600):
    """Run the source notebook and its student version in ONE kernel; returns ``(source, student)``
    notebooks with their outputs, ready to be graded without re-execution.

    Both versions differ only in their exercise cells, and the exercises come after the cells they read.
    So the kernel runs every cell of the student version in order (the ``raise NotImplementedError()``
    answers and the full locked tests, hidden part included, as the autograder would run them), then the
    source's exercise cells once more. The student version gets the outputs of the first pass, the source
    version the same outputs outside the exercises and the second pass's inside them. This costs one run of
    the notebook instead of two; it is sound because an unanswered cell defines nothing (its stub raises
    first) and the answers are stored under names no other cell uses.
    """
    from nbclient import NotebookClient

    source = _with_parameters(source_path(root, assignment), parameters)
    student = _with_parameters(release_path(root, assignment), parameters)
    full_tests = {c.id: c.source for c in source.cells if is_graded(c)}
    first = copy.deepcopy(student.cells)
    for cell in first:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade") and cell.id in full_tests:
            cell.source = full_tests[cell.id]  # what autograde's OverwriteCells restores
    second = [copy.deepcopy(c) for c in source.cells if is_graded(c) and c.cell_type == "code"]
    for cell in second:
        cell.id = f"{cell.id}-again"[:64]
    run = copy.deepcopy(source)
    run.cells = first + second
    NotebookClient(run, timeout=timeout, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    outputs = {c.id: (c.get("outputs", []), c.get("execution_count")) for c in run.cells[:len(first)]}
    again = {c.id[: -len("-again")]: (c.outputs, c.execution_count) for c in run.cells[len(first):]}
    for nb, override in ((student, {}), (source, again)):
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = override.get(cell.id) or outputs.get(cell.id, ([], None))
    return source, student


def grade_both(root: Path, assignment: str, parameters: dict | None = None, cwd: Path | None = None) -> dict:
    """Submit the source notebook as student ``solution`` and the unmodified student version as student
    ``blank``, run them (:func:`execute_both`), autograde both without re-executing, and return
    ``{"solution": grades, "blank": grades, "notebooks": {student: executed notebook}}``."""
    source, student = execute_both(root, assignment, parameters or {}, cwd or ROOT / "notebooks")
    result = {"notebooks": {"solution": source, "blank": student}}
    for name, nb in result["notebooks"].items():
        path = submitted_path(root, assignment, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)
        result[name] = autograde(root, assignment, name, execute=False)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "build" / "course")
    a = p.parse_args(argv)
    root = build(a.out)
    for nb in sorted((root / "release").glob("*/*.ipynb")):
        print(f"release/{nb.parent.name}/{nb.name}")
    print(f"course folder: {root} (gradebook.db, nbgrader_config.py; grade with: cd {root} && nbgrader autograde NAME)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
