"""test_page.py - the chat page at / in a real browser (Debian's chromium + chromium-driver,
headless, driven by selenium): type a question, watch the answer stream in, check the tokens/s
line and the folded reasoning part, and save screenshots to PORTA_TEST_OUT. Skipped when
chromium or chromedriver is not installed."""
import os
import shutil
import time

import pytest
from conftest import OUT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
                                reason="chromium / chromium-driver not installed")


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium fetch a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1100,800", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    d = webdriver.Chrome(options=opts, service=Service(DRIVER))
    d.set_page_load_timeout(30)
    yield d
    d.quit()


def css(d, sel):
    from selenium.webdriver.common.by import By
    return d.find_elements(By.CSS_SELECTOR, sel)


def set_field(d, id_, value):
    el = css(d, "#" + id_)[0]
    el.clear()
    el.send_keys(str(value))


def ask(d, question, timeout=60):
    """Types a question, returns the content lengths seen while it streamed and the bubble."""
    set_field(d, "prompt", question)
    css(d, "#send")[0].click()
    lengths, t0 = [], time.time()
    while time.time() - t0 < timeout:
        bubbles = css(d, ".msg.assistant")
        if bubbles:
            b = bubbles[-1]
            lengths.append(len(b.find_element("css selector", ".content").text) +
                           len(b.find_element("css selector", "details.think").get_attribute(
                               "textContent")))
            if b.get_attribute("data-done") == "1":
                return lengths, b
        time.sleep(0.03)
    raise AssertionError("no complete answer on the page")


def test_chat_page_streams(srv, browser):
    d = browser
    d.get(srv.url + "/")
    assert d.title == "porta chat"
    for k, v in (("temperature", 0), ("top_p", 1), ("max_tokens", 48)):
        set_field(d, k, v)
    lengths, b = ask(d, "What is the capital of France?")
    content = b.find_element("css selector", ".content").text
    stats = b.find_element("css selector", ".stats").text
    OUT.mkdir(parents=True, exist_ok=True)
    shot = OUT / "chat_page.png"
    d.save_screenshot(str(shot))
    print(f"\nscreenshot: {shot}\nanswer: {content!r}\nstats: {stats!r}")
    assert content.strip()
    assert "tok/s" in stats and "tokens" in stats
    # streamed: the answer grew over several polls before it was done
    assert len({n for n in lengths if n > 0}) >= 2, lengths
    # the page fetched nothing but this server
    names = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert names and all(n.startswith(srv.url + "/") for n in names), names
    assert css(d, "#model")[0].text == "model: smollm2"


def test_chat_page_folds_reasoning(srv_small, browser):
    d = browser
    d.get(srv_small.url + "/")
    d.execute_script("localStorage.clear()")
    for k, v in (("temperature", 0), ("max_tokens", 24), ("apikey", "sekret-key")):
        set_field(d, k, v)
    _, b = ask(d, "Why is the sky blue?")
    think = b.find_element("css selector", "details.think")
    shot = OUT / "chat_page_reasoning.png"
    d.save_screenshot(str(shot))
    print(f"\nscreenshot: {shot}")
    assert think.is_displayed() and think.get_attribute("open") is None  # folded
    assert think.get_attribute("textContent").strip()
    assert "Reasoning" in think.find_element("css selector", "summary").text
    assert "error" not in b.get_attribute("class")
