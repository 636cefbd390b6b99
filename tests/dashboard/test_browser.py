"""`flexiq dashboard` end to end: its one-line refusals, and the study page in a real headless Chromium.

The server is started as a user would (`flexiq dashboard --db URL --port P`, on 127.0.0.1). Chromium
is driven over its DevTools protocol: its `--screenshot` flag fires at the page's load event, before
a Streamlit page (drawn from websocket messages) shows anything. The screenshot is kept under
build/screenshots/ (a CI artifact). Without /usr/bin/chromium the browser test skips, unless
FLEXIQ_REQUIRE_BROWSER=1 (CI), which makes it fail.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from websockets.sync.client import connect

from .conftest import ROOT, SEARCHED

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "build" / "screenshots"
WINDOW = (1400, 1800)
D3_BLUE, D3_ORANGE = (31, 119, 180), (255, 127, 14)  # the first two backends' colours (charts.PALETTE)
RENDER_STATE = """(() => {
  const chart = document.querySelector('[data-testid="stPlotlyChart"]');
  const box = chart ? chart.getBoundingClientRect() : null;
  return {
    points: chart ? chart.querySelectorAll('.scatterlayer .point').length : 0,
    running: document.querySelector('[data-testid^="stStatusWidgetRunning"]') !== null,
    chart: box ? [box.left, box.top, box.right, box.bottom] : null,
    exceptions: document.querySelectorAll('[data-testid="stException"]').length,
    text: document.body.innerText,
  };
})()"""


def flexiq(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flexiq_search.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=120)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    pytest.fail(f"{what} within {seconds:.0f} s")


class HeadlessChromium(contextlib.ExitStack):
    """Chromium headless, one page, driven over the DevTools protocol (websocket on 127.0.0.1);
    a context manager that ends the browser."""

    def __init__(self, profile: Path) -> None:
        super().__init__()
        try:
            self._start(profile)
        except BaseException:  # a browser that never got going is ended all the same
            self.close()
            raise

    def _start(self, profile: Path) -> None:
        self.process = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--remote-debugging-port=0",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.callback(self.end_process)
        port_file = profile / "DevToolsActivePort"
        port = int(wait_until(lambda: port_file.is_file() and port_file.read_text().split("\n")[0],
                              30, "Chromium opened no DevTools port"))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            page = next(target for target in json.load(answer) if target["type"] == "page")
        self.socket = self.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10))
        self.calls = 0
        self.call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1], deviceScaleFactor=1,
                  mobile=False)

    def call(self, method: str, **params) -> dict:
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:  # events arrive in between; the answer carries our id
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == self.calls:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def end_process(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.is_file():
        message = f"no {CHROMIUM} for the browser test (apt-get install chromium)"
        if os.environ.get("FLEXIQ_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
def dashboard_server(search_db, tmp_path):
    """`flexiq dashboard` on a free port of 127.0.0.1, until the test ends; its base URL."""
    port = free_port()
    log = tmp_path / "dashboard.log"
    with open(log, "w") as output:
        server = subprocess.Popen([sys.executable, "-m", "flexiq_search.cli", "dashboard", "--db", search_db,
                                   "--port", str(port)], stdout=output, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, HF_HUB_OFFLINE="1"))
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if server.poll() is not None:
            pytest.fail(f"flexiq dashboard exited with {server.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as answer:
                return answer.read() == b"ok"
        except OSError:
            return False

    try:
        wait_until(healthy, 60, "the dashboard did not answer its health check")
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def pixels_near(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 40) -> int:
    """How many pixels (an H x W x 3 array) are within `tolerance` of `colour` in every channel."""
    return int((np.abs(pixels.astype(int) - colour) <= tolerance).all(axis=-1).sum())


def test_the_study_page_renders_its_pareto_chart_in_chromium(chromium, dashboard_server, study_ids, tmp_path):
    with HeadlessChromium(tmp_path / "chromium-profile") as browser:
        browser.call("Page.navigate", url=f"{dashboard_server}/study?study={study_ids[SEARCHED]}")
        wait_until(lambda: (s := browser.evaluate(RENDER_STATE)) and s["points"] and not s["running"],
                   90, "the Pareto chart did not draw its points")
        time.sleep(1.0)  # let Plotly finish its transitions before the picture
        state = browser.evaluate(RENDER_STATE)
        png = browser.screenshot()
        dom = browser.evaluate("document.documentElement.outerHTML")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "study.png").write_bytes(png)
    (SCREENSHOTS / "study.html").write_text(dom)

    assert SEARCHED in state["text"] and "Accuracy vs latency" in dom
    assert state["exceptions"] == 0 and "Traceback" not in state["text"] and "Error" not in state["text"]
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == WINDOW
    left, top, right, bottom = (round(v) for v in state["chart"])
    assert bottom <= WINDOW[1], "the Pareto chart is above the fold"
    plot = np.asarray(image.crop((left, top, right, bottom)))
    drawn = (plot.min(axis=-1) < 200).mean()
    assert drawn > 0.01, f"the plot area is blank ({drawn:.2%} of its pixels drawn)"
    assert pixels_near(plot, D3_BLUE) > 50 and pixels_near(plot, D3_ORANGE) > 50, \
        "both backends' points and fronts are drawn in their colours"


def test_dashboard_refuses_an_empty_database_in_one_line(empty_db):
    result = flexiq("dashboard", "--db", empty_db, "--port", str(free_port()))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"flexiq: error: database {empty_db} is empty (no flexiq store)"]


def test_dashboard_refuses_an_unreachable_server_without_showing_its_password():
    result = flexiq("dashboard", "--db", "postgresql://flexiq:hunter2-secret@127.0.0.1:1/flexiq")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "flexiq:***@127.0.0.1:1" in result.stderr and "hunter2" not in result.stderr + result.stdout
