"""The web page in a real headless Chromium (Debian's `chromium`, driven by Playwright): type a query, see
results, open one, see its details and similar products; a screenshot is saved for a person to look at."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from eclip.serve.app import create_app
from eclip.serve.config import ServeConfig
from eclip.serve.engine import SearchEngine
from tests.ports import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "runs" / "serve" / "screenshots"


@pytest.fixture(scope="module")
def page_url(served):
    run_dir, emb_dir, data_dir = served
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(SearchEngine(run_dir, emb_dir, data_dir, ServeConfig())),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary: apt-get install chromium")
def test_search_open_a_product_and_see_similar_ones(page_url):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        failed = []
        page.on("response", lambda response: failed.append(response.url) if response.status >= 500 else None)
        page.goto(page_url)
        expect(page.locator("#category option")).not_to_have_count(1)  # categories loaded beside "All"
        page.fill("#query", "shirt")
        page.press("#query", "Enter")
        cards = page.locator("#results .card")
        expect(cards.first).to_be_visible()
        assert cards.count() == 24
        expect(page.locator("#status")).to_contain_text("24 products for “shirt”")
        first_title = cards.first.locator(".title").inner_text()
        assert cards.first.locator("img").evaluate("image => image.complete && image.naturalWidth > 0")

        cards.first.click()
        dialog = page.locator("#details")
        expect(dialog.locator("h2")).to_have_text(first_title)
        expect(dialog).to_contain_text("Predicted category")
        expect(page.locator("#similar .card").first).to_be_visible()
        assert page.locator("#similar .card").count() == 12
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "product.png"))

        page.click("#close-details")
        page.set_viewport_size({"width": 390, "height": 800})  # a phone: the grid folds to two columns
        page.screenshot(path=str(SCREENSHOTS / "results-phone.png"))
        columns = page.locator("#results").evaluate("grid => getComputedStyle(grid).gridTemplateColumns.split(' ').length")
        assert columns == 2
        browser.close()
    assert not failed
    assert (SCREENSHOTS / "product.png").stat().st_size > 10_000
