"""The project's own plumbing: pins mirrored in environment.yml, the two commands, CI entry."""
from __future__ import annotations

import tomllib

import yaml

from lrp_utils.paths import ROOT


def _pins():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return set(deps)


def test_every_dependency_is_pinned():
    assert all("==" in d for d in _pins())
    assert "torch==2.13.0" in _pins()


def test_environment_yml_mirrors_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(p for p in pip if not p.startswith("-e")) == _pins()
    assert "python=3.11" in env["dependencies"]


def test_ci_only_runs_make_test_offline():
    run = (ROOT / ".ci" / "run").read_text()
    commands = [l for l in run.splitlines() if l.strip() and not l.startswith("#")]
    assert commands[-1].strip() == "exec make test" and "HF_HUB_OFFLINE=1" in run


def test_makefile_has_the_front_door_targets():
    text = (ROOT / "Makefile").read_text()
    for target in ("reproduce:", "test:", "figures:", "lab:", "bench:"):
        assert target in text
    assert "torch==2.13.0" in (ROOT / "pyproject.toml").read_text()


def test_notebooks_are_numbered_and_have_parameters():
    import nbformat

    nbs = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert nbs, "no notebooks"
    for path in nbs:
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1 and "quick" in tagged[0].source, path.name


def test_scrub_removes_the_machine_path_from_a_notebook(tmp_path):
    import nbformat

    from lrp_utils.notebooks import scrub
    from lrp_utils.paths import ROOT

    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"input_path": f"{ROOT}/notebooks/x.ipynb", "output_path": f"{ROOT}/notebooks/x.ipynb"}
    cell = nbformat.v4.new_code_cell("viz.save(fig, 'x.png')")
    cell.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": f"PosixPath('{ROOT}/figures/x.png')"}),
                    nbformat.v4.new_output("stream", text=f"wrote {ROOT}/figures/x.csv\n")]
    nb.cells.append(cell)
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    scrub(path)
    text = path.read_text()
    assert str(ROOT) not in text
    assert "notebooks/x.ipynb" in text and "PosixPath('figures/x.png')" in text and "wrote figures/x.csv" in text
