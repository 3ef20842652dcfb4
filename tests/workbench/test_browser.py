"""Real browser: `streamlit run workbench/app.py` driven by headless Debian Chromium through every
page; no exception or error box may appear; a screenshot of each page goes to
tests/_artifacts/screenshots/. Skipped (with the reason) only when Chromium is not installed."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from workbench_paths import APP, REPO

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = REPO / "tests" / "_artifacts" / "screenshots"
# (url path, page title): url paths follow the page file names (st.navigation)
PAGES = [("", "Overview"), ("routing", "Token → state routing"), ("gates", "Gates over time"),
         ("importance", "State importance & pruning"), ("attention", "Decay-weighted attention"),
         ("memory", "Memory reads"), ("attribution", "Attribution"), ("interventions", "Interventions"),
         ("compare", "Compare runs"), ("claims", "Claims"), ("export", "Export")]


CLICK = {"importance": "Prune", "interventions": "Apply intervention", "claims": "Run the claim checks"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(checkpoint_dir):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"Chromium is not installed ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium "
                    "chromium-driver (make browser-deps)")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
    port = _free_port()
    env = dict(os.environ, PULSE_WORKBENCH_CHECKPOINT_DIR=str(checkpoint_dir), PYTHONPATH=str(REPO))
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", APP, "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                pytest.fail(f"streamlit did not start:\n{log.read().decode(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def driver(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="wb-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1500,1100"):
        opts.add_argument(flag)
    # an explicit Service: Selenium Manager never looks for (or downloads) a driver
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


_LAST_RUN = ("return Math.max(0, ...Array.from(document.querySelectorAll('.wb-run-done'))"
             ".map(e => +e.dataset.run))")


def _last_run(drv) -> int:
    """The number of the app's last finished script run in this session (workbench.state.mark_done)."""
    return int(drv.execute_script(_LAST_RUN))


def _wait_rendered(drv, title: str, after: int, timeout: float = 90) -> int:
    """Wait for the app's own done marker of a run later than ``after`` under the page's title,
    with nothing left running; return that run's number. No fixed sleeps: a loaded machine only
    makes this slower, never wrong."""
    deadline = time.time() + timeout
    h1 = []
    while time.time() < deadline:
        # read through JavaScript: elements come and go while Streamlit re-renders
        h1 = drv.execute_script("return Array.from(document.querySelectorAll('h1')).map(e => e.innerText)")
        running = drv.execute_script("return !!document.querySelector("
                                     "'[data-testid=\"stSpinner\"], [data-testid=\"stStatusWidget\"]')")
        exc = drv.execute_script("return Array.from(document.querySelectorAll('[data-testid=\"stException\"]'))"
                                 ".map(e => e.innerText)")
        assert not exc, f"page {title!r}: exception: {exc[0][:800]}"
        run = _last_run(drv)
        if run > after and any(title in t for t in h1) and not running:
            return run
        time.sleep(0.3)
    raise AssertionError(f"page {title!r} did not finish a run after #{after} in {timeout} s "
                         f"(last finished run #{_last_run(drv)}); headings: {h1}")


def test_every_page_in_chromium(server, driver):
    from selenium.webdriver.common.by import By

    SHOTS.mkdir(parents=True, exist_ok=True)
    timings = {}
    for path, title in PAGES:
        t0 = time.time()
        name = path or "overview"
        before = _last_run(driver) if path else 0
        if not path:
            driver.get(f"{server}/")  # the default page: a fresh session
        else:  # the other pages through the sidebar navigation, in the same session (no reload)
            driver.execute_script(
                "document.querySelector('a[data-testid=\"stSidebarNavLink\"][href$=\"/' + arguments[0] + '\"]')"
                ".click();", path)
        done = _wait_rendered(driver, title, before)
        if name in CLICK:  # pages whose charts appear after pressing their button
            button = ("Array.from(document.querySelectorAll('button'))"
                      ".find(b => b.innerText.includes(arguments[0]))")
            deadline = time.time() + 60
            while not driver.execute_script(f"return !!{button};", CLICK[name]):  # renders after the trace
                assert time.time() < deadline, f"{name}: no button {CLICK[name]!r} after 60 s"
                time.sleep(0.5)
            driver.execute_script(f"{button}.click();", CLICK[name])
            _wait_rendered(driver, title, done)
        timings[name] = round(time.time() - t0, 1)
        driver.save_screenshot(str(SHOTS / f"{name}.png"))
        exc = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        assert not exc, f"{name}: exception on the page: {exc[0].text[:500]}"
        errors = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stAlertContentError"]')
        assert not errors, f"{name}: error box: {errors[0].text[:500]}"
        sidebar = driver.execute_script("return document.querySelector('[data-testid=\"stSidebar\"]').innerText")
        assert "Checkpoint" in sidebar and "tiny-a" in sidebar, f"{name}: the sidebar lost the model picker"
        if name != "export":
            assert driver.find_elements(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"]'), f"{name}: no chart"
    print("seconds per page:", timings)

