"""Real browser: `streamlit run workbench/app.py` driven by headless Debian Chromium through every
page; no exception or error box may appear; a screenshot of each page goes to
tests/_artifacts/screenshots/. Skipped (with the reason) only when Chromium is not installed."""

import contextlib
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


def _need_browser() -> None:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"Chromium is not installed ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium "
                    "chromium-driver (make browser-deps)")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")


@contextlib.contextmanager
def _streamlit(checkpoint_dir):
    """``streamlit run workbench/app.py`` on a free port, over the checkpoints in ``checkpoint_dir``."""
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
def server(checkpoint_dir):
    _need_browser()
    with _streamlit(checkpoint_dir) as url:
        yield url


def _chromium():
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
    drv._wb_profile = profile
    return drv


def _close(drv) -> None:
    drv.quit()
    shutil.rmtree(drv._wb_profile, ignore_errors=True)


@pytest.fixture(scope="module")
def driver(server):
    drv = _chromium()
    try:
        yield drv
    finally:
        _close(drv)


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



# ---------------------------------------------------------------- every page × input length × model

LENGTHS = (1, 2, 72, 2048)  # tokens; screenshots at the last two
SHOT_LENGTHS = (72, 2048)
PAGE_SHOTS = REPO / "tests" / "_artifacts" / "screenshots" / "walk"  # <model>-<tokens>/<page>.png (README)


def _texts(folder: Path) -> dict[int, str]:
    """Free texts of exactly 1, 2, 72 and 2,048 tokens from the model's own held-out stories."""
    from pulse.data.task_record import load_task

    task, _ = load_task(folder)
    words: list[str] = []
    for story in task.stories("test", 200):
        words += list(story.tokens)
        if len(words) >= max(LENGTHS):
            break
    return {1: "mary", 2: "mary went", **{n: " ".join(words[:n]) for n in LENGTHS if n > 2}}


def _js_find(drv, selector: str, text: str):
    return drv.execute_script("return Array.from(document.querySelectorAll(arguments[0]))"
                              ".find(e => e.innerText.includes(arguments[1])) || null", selector, text)


def _retry(what: str, fn, timeout: float = 60):
    """Streamlit re-renders widgets while a run finishes: retry an action until it takes."""
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        try:
            out = fn()
            if out is not None and out is not False:
                return out
        except Exception as e:  # noqa: BLE001 - stale elements while re-rendering
            last = e
        time.sleep(0.4)
    raise AssertionError(f"{what}: did not succeed in {timeout} s ({last!r})")


def _choose_checkpoint(drv, name: str, run: int) -> int:
    from selenium.webdriver.common.by import By

    chosen = _retry("read the checkpoint picker", lambda: drv.execute_script(
        "const i = document.querySelector('input[aria-label=\"Checkpoint\"]'); return i ? i.value : null;"))
    if chosen == name:
        return run  # already chosen: choosing it again starts no run

    def open_and_pick():
        box = _js_find(drv, '[data-testid="stSelectbox"]', "Checkpoint")
        if box is None:
            return None
        box.find_element(By.CSS_SELECTOR, "input").click()
        options = [o for o in drv.find_elements(By.CSS_SELECTOR, '[role="option"]') if o.text.strip() == name]
        if not options:
            return None
        options[0].click()
        return True

    _retry(f"choose checkpoint {name}", open_and_pick)
    return _wait_rendered(drv, "Overview", run)


def _set_free_text(drv, text: str, title: str, run: int) -> int:
    from selenium.webdriver.common.keys import Keys

    if drv.execute_script("return !document.querySelector('textarea[aria-label=\"Text\"]')"):
        _retry("pick 'Free text'", lambda: _js_find(drv, '[data-testid="stRadio"] label', "Free text").click() or True)
        run = _wait_rendered(drv, title, run)
    area = _retry("find the text box", lambda: drv.execute_script(
        "return document.querySelector('textarea[aria-label=\"Text\"]')"))
    # React owns the value: set it through the native setter and announce it, then commit (Ctrl+Enter)
    drv.execute_script("const set = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set;"
                       "set.call(arguments[0], arguments[1]);"
                       "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));", area, text)
    area.send_keys(Keys.CONTROL, Keys.ENTER)
    return _wait_rendered(drv, title, run, timeout=180)


def _full_page_shot(drv, path: Path) -> None:
    """The whole page, not just the viewport: the window is grown to the main area's height."""
    h = int(drv.execute_script("return document.querySelector('[data-testid=\"stMain\"]').scrollHeight"))
    drv.set_window_size(1500, max(1100, min(h + 120, 12000)))
    time.sleep(0.8)  # Plotly relayouts to the new width/height
    path.parent.mkdir(parents=True, exist_ok=True)
    drv.save_screenshot(str(path))
    drv.set_window_size(1500, 1100)


def _no_error_on_page(drv, where: str) -> None:
    exc = drv.execute_script("return Array.from(document.querySelectorAll('[data-testid=\"stException\"],"
                             "[data-testid=\"stAlertContentError\"]')).map(e => e.innerText)")
    assert not exc, f"{where}: {exc[0][:800]}"


@pytest.fixture(scope="module")
def shipped_dir(tmp_path_factory):
    """Both shipped story models, and a third-party-style folder: a bare save_pretrained folder
    (config, weights, tokenizer; no task.json, no training record, no usage cache)."""
    root = tmp_path_factory.mktemp("shipped")
    for name in ("story-world-bank", "story-world-pulse", "story-world-mamba"):
        (root / name).symlink_to(REPO / "checkpoints" / name, target_is_directory=True)
    bare = root / "third-party"
    bare.mkdir()
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy2(REPO / "checkpoints" / "story-world-bank" / f, bare / f)
    return root


# the bare folder has story-world-bank's weights (already walked at 2,048 tokens); the Mamba's
# reference CPU path is a loop over time, so it is walked up to 72 tokens
WALKS = {"story-world-bank": LENGTHS, "story-world-pulse": LENGTHS, "third-party": (1, 2, 72),
         "story-world-mamba": (1, 2, 72)}


@pytest.mark.slow
@pytest.mark.parametrize("model", list(WALKS))
def test_every_page_every_length_every_model(shipped_dir, model):
    """Every page with 1, 2, 72 and 2,048-token free texts on both shipped story models, and with
    1, 2 and 72 on a bare third-party folder (the default model's weights without its task record)
    and on the shipped Mamba: no exception and no error box anywhere; the buttons of the pages
    that have them are pressed at 72 and 2,048 tokens; full-page screenshots at 72 and 2,048
    tokens go to tests/_artifacts/screenshots/walk/<model>-<tokens>/<page>.png."""
    _need_browser()
    if model == "story-world-mamba":
        pytest.importorskip("transformers", reason="the Mamba checkpoint needs the adapters extra")
    texts = _texts(REPO / "checkpoints" / "story-world-bank")
    assert [len(texts[n].split()) for n in LENGTHS] == list(LENGTHS)
    timings = {}
    with _streamlit(shipped_dir) as url:
        drv = _chromium()
        try:
            drv.get(f"{url}/")
            run = _wait_rendered(drv, "Overview", 0, timeout=180)
            run = _choose_checkpoint(drv, model, run)
            for n in WALKS[model]:
                drv.execute_script("document.querySelector('a[data-testid=\"stSidebarNavLink\"]').click();")
                run = _wait_rendered(drv, "Overview", run - 1)
                run = _set_free_text(drv, texts[n], "Overview", run)
                t0 = time.time()
                for path, title in PAGES:
                    name = path or "overview"
                    if path:
                        drv.execute_script(
                            "document.querySelector('a[data-testid=\"stSidebarNavLink\"][href$=\"/' + "
                            "arguments[0] + '\"]').click();", path)
                        run = _wait_rendered(drv, title, run, timeout=240)
                    where = f"{model}, {n} tokens, {name}"
                    _no_error_on_page(drv, where)
                    if n in SHOT_LENGTHS and name in CLICK:
                        button = _js_find(drv, "button", CLICK[name])
                        if button is not None:  # absent where the page says it does not apply
                            button.click()
                            run = _wait_rendered(drv, title, run, timeout=240)
                            _no_error_on_page(drv, where + " (after its button)")
                    sidebar = drv.execute_script(
                        "return document.querySelector('[data-testid=\"stSidebar\"]').innerText")
                    assert model in sidebar, f"{where}: the sidebar lost the model"
                    if n in SHOT_LENGTHS:
                        _full_page_shot(drv, PAGE_SHOTS / f"{model}-{n}" / f"{name}.png")
                timings[f"{model}-{n}"] = round(time.time() - t0, 1)
        finally:
            _close(drv)
    print("seconds per walk:", timings)
