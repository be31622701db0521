"""Turn the "Try it yourself" exercises of notebooks 00-05 into nbgrader cell pairs (one-off edit, idempotent).

    python tools/add_exercises.py            # rewrites notebooks/0[0-5]_*.ipynb in place

For every exercise it rewrites the prompt (markdown) cell and the answer cell (same cell ids), and puts a
locked test cell right after the answer cell (id ``<answer id>-test``). Every other cell is left exactly
as it is (source, metadata, id, outputs). The answer cells hold the solution between
``### BEGIN SOLUTION`` / ``### END SOLUTION``; the test cells check the stored answers numerically: the
visible part checks their form, the part between ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS``
recomputes the numbers (``make course`` removes it from the student version, the autograder restores it).
Outputs of the changed cells are cleared (``make reproduce`` regenerates them).

After this round the notebooks are the source of truth; the script stays as the record of the edit and
to re-apply it to a notebook whose exercise cells were lost in a merge.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exercise_texts import EXERCISES, INTRO  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def solution_meta(grade_id: str) -> dict:
    return {"grade": False, "grade_id": grade_id, "locked": False, "schema_version": 3, "solution": True,
            "task": False}


def test_meta(grade_id: str, points: int) -> dict:
    return {"grade": True, "grade_id": grade_id, "locked": True, "points": points, "schema_version": 3,
            "solution": False, "task": False}


def apply(path: Path, exercises: list[dict]) -> None:
    nb = nbformat.read(path, as_version=4)
    stem = path.name[:2]
    for k, ex in enumerate(exercises, start=1):
        ids = [c.get("id") for c in nb.cells]
        prompt, answer = nb.cells[ids.index(ex["prompt_id"])], nb.cells[ids.index(ex["code_id"])]
        if k == 1:  # keep the section heading ("## Try it yourself", "## 5. Try it yourself"), add the intro
            heading = prompt.source.splitlines()[0]
            assert heading.startswith("#") and "Try it yourself" in heading, (path.name, heading)
            prompt.source = f"{heading}\n\n{INTRO}\n\n{ex['prompt'].strip()}"
        else:
            prompt.source = ex["prompt"].strip()
        grade_id = f"nb{stem}_ex{k}"
        answer.source = ex["solution"].strip()
        answer.metadata = {"nbgrader": solution_meta(grade_id), "tags": []}
        answer.outputs, answer.execution_count = [], None
        test = nbformat.v4.new_code_cell(ex["test"].strip())
        test.id = f"{ex['code_id']}-test"
        test.metadata = {"nbgrader": test_meta(grade_id + "_test", ex["points"]), "tags": []}
        pos = ids.index(ex["code_id"]) + 1
        if pos < len(nb.cells) and nb.cells[pos].get("id") == test.id:
            nb.cells[pos] = test
        else:
            nb.cells.insert(pos, test)
    nbformat.validate(nb)
    nbformat.write(nb, path)


def main() -> int:
    for stem, exercises in EXERCISES.items():
        (path,) = sorted((ROOT / "notebooks").glob(f"{stem}_*.ipynb"))
        apply(path, exercises)
        print(f"{path.name}: {len(exercises)} exercises")
    return 0


if __name__ == "__main__":
    sys.exit(main())
