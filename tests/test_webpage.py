"""The web page in headless Chromium: upload a clip, see predictions, animation, explanation.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``; CI installs them; override with ``PROTOSKEL_CHROMIUM`` /
``PROTOSKEL_CHROMEDRIVER``) and selenium. The server runs as ``protoskel serve`` in a subprocess
on a free loopback port.
"""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _tiny import tiny_recipe
from conftest import dataset_dir
from protoskel.data.readers import write_generic_npz
from protoskel.data.store import open_store
from protoskel.data.synthetic import write_synthetic_store
from protoskel.training.config import config_from_dict
from protoskel.training.trainer import train

CHROMIUM = os.environ.get("PROTOSKEL_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PROTOSKEL_CHROMEDRIVER", "/usr/bin/chromedriver")
# Without the background-networking flags Chromium keeps trying Google hosts, which this
# machine's closed network refuses.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,1400",
)
TINY = tiny_recipe(head="prototype", head_kwargs={"window": 2, "proto_dim": 8})

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
    pytest.skip(
        f"headless browser tests need {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium "
        "and chromium-driver; CI installs them)",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny prototype model on the synthetic set and a synthetic sample clip."""
    root = tmp_path_factory.mktemp("web")
    store = write_synthetic_store(root / "store", n_train_per_class=4, n_val_per_class=2)
    train(config_from_dict(copy.deepcopy(TINY)), store, root / "run", progress=False)
    sample = open_store(store).split("val").get(3)
    return {
        "checkpoint": root / "run" / "last.pt",
        "synthetic": write_generic_npz(sample, root / "synthetic_clip.npz"),
        "root": root,
    }


@pytest.fixture(scope="module")
def server(model: dict[str, Path]) -> Iterator[str]:
    """``protoskel serve`` in a subprocess; yields its base URL once /health answers."""
    port = _free_port()
    cmd = [
        sys.executable, "-m", "protoskel.cli", "serve", str(model["checkpoint"]),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    log = (model["root"] / "server.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (model["root"] / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "protoskel serve did not come up"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium through chromedriver, with a fresh profile folder."""
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _open(browser: Any, url: str) -> None:
    browser.get(url)
    # The layout list is filled from /models once the page has loaded.
    WebDriverWait(browser, 30).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#layout option")) > 1
    )


def _upload(browser: Any, path: Path, button: str) -> None:
    browser.find_element(By.ID, "file").send_keys(str(path))
    browser.find_element(By.ID, button).click()


def _wait_done(browser: Any, name: str) -> None:
    def done(d: Any) -> bool:
        status = d.find_element(By.ID, "status")
        if "error" in (status.get_attribute("class") or ""):
            raise AssertionError(f"page shows an error: {status.text}")
        return status.text == f"done: {name}"

    WebDriverWait(browser, 60).until(done)


def _predictions(browser: Any) -> list[tuple[str, float]]:
    items = browser.find_elements(By.CSS_SELECTOR, "#predictions li.prediction")
    return [(i.get_attribute("data-label"), float(i.get_attribute("data-prob"))) for i in items]


def _canvas_state(browser: Any) -> dict[str, Any]:
    return browser.execute_script(
        """
        const c = document.getElementById('skeleton');
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let inked = 0;
        for (let i = 3; i < px.length; i += 4) if (px[i] > 0) inked++;
        return {frame: Number(c.dataset.frame), frames: Number(c.dataset.frames), inked: inked,
                label: document.getElementById('frame-label').textContent};
        """
    )


def _check_animation(browser: Any, frames: int) -> None:
    state = _canvas_state(browser)
    assert state["frames"] == frames
    assert state["inked"] > 200, "nothing was drawn on the canvas"
    seen = {state["frame"]}
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.15)
        seen.add(_canvas_state(browser)["frame"])
    assert len(seen) >= 3, f"the animation does not advance (frames seen: {seen})"


def test_page_predicts_and_animates_a_synthetic_clip(
    browser: Any, server: str, model: dict[str, Path]
) -> None:
    _open(browser, server)
    assert "prototype head" in browser.find_element(By.ID, "model-info").text
    _upload(browser, model["synthetic"], "predict-btn")
    _wait_done(browser, "synthetic_clip.npz")
    preds = _predictions(browser)
    classes = set(open_store(model["root"] / "store").classes)
    assert len(preds) == 5 and {label for label, _ in preds} <= classes
    assert [p for _, p in preds] == sorted((p for _, p in preds), reverse=True)
    bars = browser.find_elements(By.CSS_SELECTOR, "#predictions .bar span")
    assert len(bars) == 5 and bars[0].size["width"] >= bars[-1].size["width"]
    frames = int(np.load(model["synthetic"])["keypoints"].shape[1])
    _check_animation(browser, frames)
    assert browser.find_element(By.ID, "explanation").get_attribute("class") == "card hidden"


def test_page_explains_with_prototypes(browser: Any, server: str, model: dict[str, Path]) -> None:
    _open(browser, server)
    _upload(browser, model["synthetic"], "explain-btn")
    _wait_done(browser, "synthetic_clip.npz")
    assert len(_predictions(browser)) == 5
    cards = browser.find_elements(By.CSS_SELECTOR, "#prototypes .prototype")
    assert cards, "no prototype cards"
    text = cards[0].text
    assert "similarity" in text and "contribution" in text and "training clip syn_" in text
    WebDriverWait(browser, 20).until(
        lambda d: d.execute_script(
            "const i = document.querySelector('#prototypes .prototype img');"
            "return i !== null && i.complete && i.naturalWidth > 0;"
        )
    )
    gif_ok = browser.execute_script(
        "const i = document.getElementById('explanation-gif');"
        "return i.complete && i.naturalWidth > 0;"
    )
    assert gif_ok
    link = browser.find_element(By.ID, "report-link").get_attribute("href")
    assert "/reports/" in link and link.endswith("/index.html")


@pytest.mark.realdata
def test_page_on_a_real_nwucla_clip(
    browser: Any, server: str, model: dict[str, Path], tmp_path: Path
) -> None:
    from protoskel.data.readers.nwucla import read_nwucla

    src = dataset_dir("nw-ucla") / "all_sqe" / "a06_s01_e00_v01.json"
    seq = read_nwucla(src)
    clip = write_generic_npz(seq, tmp_path / "nwucla_a06_s01_e00_v01.npz")
    _open(browser, server)
    _upload(browser, clip, "predict-btn")
    _wait_done(browser, clip.name)
    assert len(_predictions(browser)) == 5
    _check_animation(browser, min(seq.num_frames, 300))
    info = browser.find_element(By.ID, "input-info").text
    assert f"{seq.num_frames} frames" in info and "kinect-v1-20" in info


def test_page_shows_the_error_of_a_bad_file(browser: Any, server: str, tmp_path: Path) -> None:
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"this is not an npz archive")
    _open(browser, server)
    _upload(browser, bad, "predict-btn")
    WebDriverWait(browser, 30).until(
        lambda d: "error" in (d.find_element(By.ID, "status").get_attribute("class") or "")
    )
    status = browser.find_element(By.ID, "status").text
    assert "422" in status and "broken.npz" in status and "NPZ" in status
