"""The Compare tab in a real browser (Debian's chromium, driven by Playwright): ask both sides
about an image, watch both answers arrive with their figures, vote, and be refused a second vote.
"""

from __future__ import annotations

import pytest

from tests.conftest import ARTIFACTS, CAT, playwright_expect
from tests.test_compare import LARGE, SMALL, FakeStore, ModelNamingBackend, compare_app

expect = playwright_expect()

pytestmark = pytest.mark.browser


def test_compare_and_vote(browser, gradio_temp_dir):
    store = FakeStore()
    backend = ModelNamingBackend("", models=[SMALL, LARGE])
    with compare_app(backend, feedback=store) as (_, url):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(url)
        page.locator("#compare-images input[type='file']").set_input_files(CAT)
        expect(page.locator("#compare-images").get_by_role("cell", name="cat.jpg")).to_be_visible()
        page.locator("#compare-right-model input").click()
        page.get_by_role("option", name=LARGE).click()
        question = page.locator("#compare-input textarea")
        question.fill("Which animal is it?")
        question.press("Enter")
        left, right = (page.locator(f"#compare-{side}-chatbot") for side in ("left", "right"))
        expect(left).to_contain_text(f"An answer from {SMALL}.")
        expect(right).to_contain_text(f"An answer from {LARGE}.")
        for chatbot in (left, right):  # each answer with its figures, the image shown
            expect(chatbot).to_contain_text("tokens")
            expect(chatbot.locator("[data-testid='user'] img")).to_have_count(1)
        expect(page.locator("#compare-stop")).to_be_hidden()

        page.locator("#compare-vote-left").click()
        expect(page.locator("#compare-vote-note")).to_contain_text("Kept as a preference pair")
        assert len(store.pairs) == 1
        assert store.pairs[0]["chosen"] == f"An answer from {SMALL}."
        assert store.pairs[0]["rejected_model"] == LARGE
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)

        page.locator("#compare-vote-tie").click()  # one vote per comparison
        expect(page.get_by_text("already voted on this comparison")).to_be_visible()
        assert len(store.pairs) == 1
        context.close()
