"""The web page in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven by selenium)
against a live `python -m zoo.serve` on loopback. Choose a model, generate, see the result; text streams,
an image grid appears, a piano roll and an audio player appear, a bad value is shown on its field.
Saves a screenshot: docs/serve_screenshot.png (the README's picture) when that file is missing or
ZOO_UPDATE_SCREENSHOT=1, else in the test's temporary folder (so that a test run leaves the tree clean).
Skipped where no browser is installed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="zoo-serve needs the [serve] extra")
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the [test] extra)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402
from test_serve import live_server  # noqa: E402, F401 - the module-scoped live zoo-serve fixture

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "serve_screenshot.png"
CHROMIUM = next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)
DRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="needs a headless Chromium and chromedriver (Debian: apt-get install chromium "
                                       "chromium-driver; .ci/run installs them)")


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--disable-extensions", "--no-first-run"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout: float = 120):
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def set_field(driver, name: str, value: str) -> None:
    field = driver.find_element(By.ID, f"f-{name}")
    field.clear()
    field.send_keys(value)


def generate(driver) -> str:
    driver.execute_script("document.getElementById('output').dataset.state = 'clicked'")
    driver.find_element(By.ID, "generate").click()
    return wait(driver, lambda d: d.find_element(By.ID, "output").get_attribute("data-state")
                if d.find_element(By.ID, "output").get_attribute("data-state") in ("done", "error") else None)


def choose(driver, model: str) -> None:
    Select(driver.find_element(By.ID, "model")).select_by_value(model)
    wait(driver, lambda d: d.find_element(By.ID, "model-info").text.startswith(
        {"gpt-pydoc": "text", "image-gpt-digits": "image", "music-transformer-bach": "music"}[model]))


def test_choose_a_model_generate_and_see_the_result(browser, live_server, tmp_path):  # noqa: F811
    d = browser
    d.get(live_server + "/")
    wait(d, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    names = [o.get_attribute("value") for o in d.find_elements(By.CSS_SELECTOR, "#model option")]
    assert names == ["gpt-pydoc", "image-gpt-digits", "music-transformer-bach", "text2image-digits"]

    # text streams into the page
    choose(d, "gpt-pydoc")
    assert d.find_element(By.ID, "f-stream").is_selected()
    set_field(d, "prompt", "The with statement")
    set_field(d, "max_new_tokens", "24")
    set_field(d, "seed", "0")
    assert generate(d) == "done", d.find_element(By.ID, "error").text
    text = d.find_element(By.ID, "text-out").text
    assert text.startswith("The with statement") and len(text) > len("The with statement")
    assert d.find_elements(By.CSS_SELECTOR, "#downloads a[download$='.txt']")

    # a value out of range: the error names the field, which is marked
    set_field(d, "max_new_tokens", "100000")
    assert generate(d) == "error"
    assert "max_new_tokens" in d.find_element(By.ID, "error").text and "[1, 512]" in d.find_element(By.ID, "error").text
    assert "bad" in d.find_element(By.CSS_SELECTOR, ".field[data-field='max_new_tokens']").get_attribute("class")

    # an image grid appears
    choose(d, "image-gpt-digits")
    set_field(d, "labels", "3, 7")
    set_field(d, "num_samples", "4")
    assert generate(d) == "done", d.find_element(By.ID, "error").text
    img = d.find_element(By.ID, "result-image")
    assert d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 64
    # shown enlarged by a whole factor, nearest neighbour, each 8x8 digit at least 128 px; the download is the PNG
    # the server sent (its own size), not the enlarged picture
    wait(d, lambda d: img.get_attribute("data-scale"), timeout=30)
    natural, shown = d.execute_script("return [arguments[0].naturalWidth, arguments[0].getBoundingClientRect().width]",
                                      img)
    assert shown == natural * int(img.get_attribute("data-scale")) and shown >= 4 * 128, (natural, shown)
    assert img.value_of_css_property("image-rendering") == "pixelated"
    link = d.find_element(By.CSS_SELECTOR, "#downloads a[download$='.png']")
    assert link.get_attribute("href") == img.get_attribute("src")

    # music: a piano roll, an audio player that can play, MIDI and WAV downloads
    choose(d, "music-transformer-bach")
    set_field(d, "max_new_tokens", "160")
    set_field(d, "seed", "2")
    assert generate(d) == "done", d.find_element(By.ID, "error").text
    roll = d.find_element(By.ID, "result-roll")
    assert d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", roll) > 100
    column = d.execute_script("return document.getElementById('media-out').clientWidth")
    assert roll.size["width"] == pytest.approx(column, abs=4)  # a plot: fills the column
    assert d.find_element(By.CSS_SELECTOR, "#downloads a[download$='-roll.png']").get_attribute("href") == \
        roll.get_attribute("src")
    audio = d.find_element(By.ID, "result-audio")
    wait(d, lambda d: d.execute_script("return arguments[0].readyState", audio) >= 1, timeout=30)
    assert d.execute_script("return arguments[0].duration", audio) > 0
    links = {a.get_attribute("download").rsplit(".", 1)[1]
             for a in d.find_elements(By.CSS_SELECTOR, "#downloads a")}
    assert {"mid", "wav", "png"} <= links

    # the picture for the README: the digits grid and the page around it
    choose(d, "image-gpt-digits")
    set_field(d, "labels", "0, 1, 2, 3, 4")  # five rows of five: the enlarged grid fits the page
    set_field(d, "num_samples", "5")
    set_field(d, "seed", "0")
    assert generate(d) == "done", d.find_element(By.ID, "error").text
    d.set_window_size(1280, 1180)
    d.execute_script("window.scrollTo(0, 0)")
    png = d.get_screenshot_as_png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    update = os.environ.get("ZOO_UPDATE_SCREENSHOT") == "1" or not SCREENSHOT.exists()
    (SCREENSHOT if update else tmp_path / SCREENSHOT.name).write_bytes(png)
