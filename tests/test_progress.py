"""Progress bars: one deterministic text line per loop when headless, tqdm.auto otherwise."""
import io

import pytest
from tqdm.auto import tqdm as auto_tqdm

from lrp_utils import progress


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)
    return monkeypatch


def test_mode_from_the_environment(env):
    assert progress.mode() == "widget"
    env.setenv("CI", "true")
    assert progress.mode() == "text"
    env.setenv(progress.ENV, "Widget")
    assert progress.mode() == "widget"
    env.setenv(progress.ENV, "bars")
    with pytest.raises(ValueError, match=progress.ENV):
        progress.mode()


def test_text_mode_prints_one_final_line_without_timings(env):
    env.setenv(progress.ENV, "text")
    out = io.StringIO()
    assert list(progress.tqdm(range(7), desc="explaining", file=out)) == list(range(7))
    assert out.getvalue() == "\rexplaining: 100%|##########| 7/7\n"
    out = io.StringIO()
    with progress.tqdm(total=4, desc="manual", file=out) as bar:
        bar.update(2)
    assert out.getvalue().strip() == "manual:  50%|#####     | 2/4"
    out = io.StringIO()
    for _ in progress.tqdm(iter(range(3)), desc="stream", file=out):
        pass
    assert out.getvalue().strip() == "stream: 3 it"


def test_text_mode_silent_bars(env):
    env.setenv(progress.ENV, "text")
    out = io.StringIO()
    for _ in progress.tqdm(range(3), desc="inner", leave=False, file=out):
        pass
    for _ in progress.tqdm(range(3), desc="off", disable=True, file=out):
        pass
    assert out.getvalue() == ""


def test_widget_and_off_modes(env):
    out = io.StringIO()
    bar = progress.tqdm(range(2), file=out)
    assert type(bar) is auto_tqdm and not isinstance(bar, progress.TextBar)
    bar.close()
    env.setenv(progress.ENV, "off")
    for _ in progress.tqdm(range(2), desc="x", file=out):
        pass
    assert "x" not in out.getvalue()


def test_the_notebook_runner_sets_text_mode(env):
    from lrp_utils import notebooks

    notebooks.headless()
    assert progress.mode() == "text"
