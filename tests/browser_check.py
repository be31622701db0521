"""Real-browser checks in headless Chromium, driven by Selenium: the quickstart in JupyterLab (``lab``),
the static site (``site``, ``make site``) and the Voila demo (``demo``, ``make demo``).

    .venv/bin/python tests/browser_check.py [--only lab,site,demo] [--timeout 900]
        [--screenshot figures/00_jupyterlab.png] [--site-screenshot figures/00_site.png]
        [--demo-screenshot figures/00_demo.png]

The site and demo checks live in ``tests/browser_apps.py`` (their docstrings say what they assert); the
JupyterLab check:

1. copies ``notebooks/00_quickstart.ipynb`` into a temporary root folder with ``quick = True``
   injected (papermill) and its outputs cleared;
2. starts JupyterLab on 127.0.0.1 (a free port, a random token, no browser, fresh settings and
   workspaces, figures written to the temporary folder, not to ``figures/``);
3. opens the notebook in headless Chromium (Debian's ``chromium`` + ``chromium-driver``; installed with
   apt-get when missing), waits for the kernel, runs *Run > Run All Cells* from the menu and waits until
   every code cell has run and the kernel is idle;
4. asserts: every code cell ran, no error output (no stderr output holding a Traceback or an Error),
   the relevance heatmap HTML is there (``lrp_utils.viz`` spans with ``title="R = ..."``), the live
   ipywidgets explorer rendered its heatmap, and picking another method in its dropdown re-renders it;
5. saves a screenshot (default ``figures/00_jupyterlab.png``).

Afterwards Chromium, the driver, JupyterLab, Voila, the site's HTTP server and the kernels are stopped,
always; exit 0 on success / 1 on failure within ``--timeout`` s.

Not collected by pytest (the name does not start with ``test_``). Needs ``selenium`` (pinned in the
Makefile target) and root for the apt-get fallback.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser_apps  # noqa: E402  (the site and demo checks, next to this file)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "00_quickstart.ipynb"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--window-size=1400,1000"]
# JupyterLab user settings: all cells in the DOM (no windowing), no news/update requests
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


class Timeout(Exception):
    pass


def log(msg: str, t0=[time.perf_counter()]) -> None:  # noqa: B006 - start time shared by all calls
    print(f"[{time.perf_counter() - t0[0]:6.1f} s] {msg}", flush=True)


def ensure_chromium() -> None:
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    log("installing Debian packages chromium and chromium-driver")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(tmp: Path) -> Path:
    """A quick-mode copy of the notebook with no outputs, in ``tmp/root``; user settings in ``tmp/settings``."""
    import nbformat
    import papermill as pm

    root = tmp / "root"
    root.mkdir()
    nb_path = root / NOTEBOOK.name
    pm.execute_notebook(str(NOTEBOOK), str(nb_path), parameters={"quick": True}, prepare_only=True,
                        kernel_name="python3", progress_bar=False)
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, nb_path)
    for name, value in LAB_SETTINGS.items():
        path = tmp / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    return nb_path


def start_lab(tmp: Path, port: int, token: str) -> subprocess.Popen:
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"), "LRP_UTILS_FIGURES": str(tmp / "figures"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={tmp / 'root'}", "--LabApp.expose_app_in_browser=True",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
           "--ServerApp.terminals_enabled=False", *(["--allow-root"] if os.geteuid() == 0 else [])]
    logfile = open(tmp / "jupyterlab.log", "w")
    return subprocess.Popen(cmd, env=env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise Timeout(f"timed out after {timeout:.0f} s waiting for {what}")


def server_up(port: int, token: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start_browser(tmp: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in [*CHROME_ARGS, f"--user-data-dir={tmp / 'chromium-profile'}"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console messages for get_log
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp / "chromedriver.log"))
    return webdriver.Chrome(options=options, service=service)


def status(driver) -> str:
    return driver.execute_script(
        "const e = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');"
        "return e ? e.getAttribute('data-status') : '';")


def cell_states(driver) -> dict:
    """Prompts of the code cells: how many there are, ran (``[n]:``), are queued/running (``[*]:``)."""
    return driver.execute_script("""
        const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')]
            .map(p => p.textContent.trim());
        return {total: prompts.length, ran: prompts.filter(p => /\\[\\d+\\]/.test(p)).length,
                busy: prompts.filter(p => p.includes('*')).length};""")


def run_all(driver) -> None:
    """Run > Run All Cells, through the menu bar as a user would."""
    from selenium.webdriver.common.by import By

    menu = [m for m in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item") if m.text.strip() == "Run"]
    if not menu:
        raise AssertionError("no 'Run' menu in the JupyterLab menu bar")
    menu[0].click()
    item = wait_for(lambda: [i for i in driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-item .lm-Menu-itemLabel")
                             if i.text.strip() == "Run All Cells"], 10, "the 'Run All Cells' menu item")
    item[0].click()


def error_outputs(driver) -> list[str]:
    return driver.execute_script("""
        const outs = [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')];
        return outs.map(o => o.textContent).filter(t => /Traceback|Error/.test(t)).map(t => t.slice(0, 2000));""")


def check(driver, port: int, token: str, nb: Path, run_timeout: float, screenshot: Path) -> dict:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    timings = {}
    t = time.perf_counter()
    import nbformat

    n_code = sum(c.cell_type == "code" for c in nbformat.read(nb, as_version=4).cells)
    driver.get(f"http://127.0.0.1:{port}/lab/tree/{nb.name}?reset&token={token}")
    wait_for(lambda: cell_states(driver)["total"] == n_code and status(driver) == "idle", 120,
             f"JupyterLab to show the notebook's {n_code} code cells and the kernel to be idle")
    timings["open notebook + kernel ready"] = time.perf_counter() - t
    log(f"notebook open, kernel idle; {cell_states(driver)['total']} code cells")
    t = time.perf_counter()
    run_all(driver)
    wait_for(lambda: cell_states(driver)["busy"] > 0 or status(driver) == "busy", 30, "execution to start")

    def finished():
        errors = error_outputs(driver)
        if errors:
            raise AssertionError("error output in the notebook:\n" + "\n---\n".join(errors))
        s = cell_states(driver)
        return s["busy"] == 0 and s["ran"] == s["total"] and status(driver) == "idle"

    wait_for(finished, run_timeout, "all cells to run", poll=1.0)
    timings["run all cells"] = time.perf_counter() - t
    log(f"all cells ran in {timings['run all cells']:.0f} s")

    spans = driver.find_elements(By.CSS_SELECTOR, '.jp-OutputArea-output span[title^="R = "]')
    assert len(spans) >= 20, f"expected the relevance heatmap spans (title='R = ...'), found {len(spans)}"
    views = driver.find_elements(By.CSS_SELECTOR, ".jupyter-widgets .widget-html .lrp-explorer-view")
    assert views, "the explorer widget did not render its heatmap (.widget-html .lrp-explorer-view)"
    assert views[0].find_elements(By.CSS_SELECTOR, 'span[title^="R = "]'), "the widget's heatmap has no token spans"
    assert "| attnlrp |" in views[0].text, views[0].text[:300]
    # interact: pick another method in the live panel, the kernel re-renders the HTML
    t = time.perf_counter()
    panel = views[0].find_element(By.XPATH, "ancestor::div[contains(@class, 'widget-vbox')][1]")
    selects = panel.find_elements(By.CSS_SELECTOR, ".widget-dropdown select")
    assert len(selects) == 3, f"expected model, method and layer dropdowns, found {len(selects)}"
    Select(selects[1]).select_by_visible_text("cp-lrp")
    wait_for(lambda: "| cp-lrp |" in panel.find_element(By.CSS_SELECTOR, ".lrp-explorer-view").text, 60,
             "the panel to re-render after choosing cp-lrp")
    timings["widget update"] = time.perf_counter() - t
    log("widget re-rendered after a method change")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", panel)
    time.sleep(1.0)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(screenshot))
    log(f"screenshot: {screenshot}")
    return {"heatmap spans": len(spans), **{k: round(v, 1) for k, v in timings.items()}}


def family(pid: int | None) -> list:
    """``pid`` and all its descendants (kernels run in their own sessions but stay descendants)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except (psutil.NoSuchProcess, TypeError, ValueError):
        return []


def stop(procs: list, grace: float = 10.0) -> None:
    """SIGTERM every process in ``procs``, SIGKILL what is left after ``grace`` seconds."""
    import psutil

    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timeout", type=float, default=900, help="hard limit for all checks, seconds")
    p.add_argument("--only", default="lab,site,demo", help="comma-separated checks to run: lab, site, demo")
    p.add_argument("--screenshot", type=Path, default=None, help="default: figures/00_jupyterlab.png")
    p.add_argument("--site-screenshot", type=Path, default=None, help="default: figures/00_site.png")
    p.add_argument("--demo-screenshot", type=Path, default=None, help="default: figures/00_demo.png")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) for debugging")
    a = p.parse_args(argv)
    from lrp_utils.paths import figure_path

    screenshot = a.screenshot or figure_path("00_jupyterlab.png")
    checks = [c.strip() for c in a.only.split(",") if c.strip()]
    if not checks or set(checks) - {"lab", "site", "demo"}:
        p.error(f"--only takes lab, site, demo; got {a.only!r}")
    start = time.perf_counter()

    def on_alarm(*_):
        raise Timeout(f"the browser check ran past its {a.timeout:.0f} s limit")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(a.timeout))
    tmp = Path(tempfile.mkdtemp(prefix="lrp-browser-check-"))
    lab = driver = driver_proc = None
    try:
        ensure_chromium()
        driver = start_browser(tmp)
        driver_proc = driver.service.process
        log(f"Chromium {driver.capabilities.get('browserVersion')} started; checks: {', '.join(checks)}")
        result = {}
        if "site" in checks:
            result.update(browser_apps.check_site(driver, tmp, a.site_screenshot or figure_path("00_site.png"), helpers))
        if "demo" in checks:
            result.update(browser_apps.check_demo(driver, tmp, a.demo_screenshot or figure_path("00_demo.png"), helpers))
        if "lab" in checks:
            nb = prepare(tmp)
            port, token = free_port(), secrets.token_hex(16)
            lab = start_lab(tmp, port, token)
            wait_for(lambda: server_up(port, token) or lab.poll() is not None, 90, "JupyterLab to start")
            if lab.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {lab.returncode}; see {tmp / 'jupyterlab.log'}")
            log(f"JupyterLab up on 127.0.0.1:{port}")
            remaining = a.timeout - (time.perf_counter() - start) - 60
            result.update(check(driver, port, token, nb, remaining, screenshot))
        print("PASS", json.dumps(result), f"total {time.perf_counter() - start:.0f} s", flush=True)
        return 0
    except Exception as err:  # report, clean up, fail
        print(f"FAIL: {type(err).__name__}: {err}", flush=True)
        if driver is not None:
            try:
                driver.save_screenshot(str(tmp / "failure.png"))
                print(f"failure screenshot: {tmp / 'failure.png'}")
            except Exception:
                pass
        a.keep = True
        return 1
    finally:
        signal.alarm(0)
        browser = family(driver_proc.pid) if driver_proc is not None else []
        if driver is not None:
            try:
                driver.quit()
            except Exception:
                pass
        stop([p for p in browser if p.is_running()])
        stop(family(lab.pid) if lab is not None else [])
        if a.keep:
            print(f"kept {tmp} (jupyterlab.log, voila.log, chromedriver.log)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        log("cleaned up")


helpers = sys.modules[__name__]  # what browser_apps uses: log, wait_for, free_port, family, stop

if __name__ == "__main__":
    sys.exit(main())
