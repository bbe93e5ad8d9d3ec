"""The Document chat tab in a real browser, under the app's Content-Security-Policy: attach the
sample PDF to the question, choose pages, see them as numbered thumbnails, ask, watch the answer
stream. The app answers with a scripted backend (a known answer)."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import ARTIFACTS, EXAMPLES, playwright_expect
from tests.scripted_backend import ScriptedBackend
from tests.security_setup import secure_app

expect = playwright_expect()

pytestmark = pytest.mark.browser
ANSWER = "Page 2 shows a bar chart of the quarterly sales; page 3 holds a table of the totals."


@pytest.fixture(scope="module")
def scripted(gradio_temp_dir):
    backend = ScriptedBackend(ANSWER)
    with secure_app(backend) as (_, url):
        yield backend, url


def test_ask_about_chosen_pages_of_a_pdf(browser, scripted):
    backend, url = scripted
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(url)
    page.get_by_role("tab", name="Document chat").click()

    question = page.locator("#document-chat-input")
    box = question.locator("textarea")
    box.press_sequentially("What do these pages show?")

    # A PDF attached to the question goes to the File box, and its pages are shown.
    question.locator("input[type='file']").set_input_files(str(EXAMPLES / "sample_document.pdf"))
    expect(page.locator("#document-chat-file")).to_contain_text("sample_document")
    expect(question).not_to_contain_text("sample_document")  # one place for the document
    expect(box).to_have_value("What do these pages show?")  # the question stays
    gallery = page.locator("#document-chat-gallery")
    expect(gallery.locator("img")).to_have_count(3)
    for label in ("Page-1", "Page-2", "Page-3"):
        expect(gallery).to_contain_text(label)
    estimate = page.locator("#document-chat-estimate")
    expect(estimate).to_contain_text("sample_document.pdf")

    # Choose pages: the thumbnails follow.
    pages = page.locator("#document-chat-pages textarea")
    pages.fill("2-3")
    pages.press("Enter")
    expect(gallery.locator("img")).to_have_count(2)
    expect(gallery).not_to_contain_text("Page-1")
    expect(estimate).to_contain_text("sending 2")

    # Ask: the question goes with those pages, and the answer streams in.
    backend.hold = threading.Event()  # the answer waits until Stop has been seen
    box.press("Enter")
    expect(page.locator("#document-chat-stop")).to_be_visible()  # while it streams
    backend.hold.set()
    answer = page.locator("#document-chat-chatbot [data-testid='bot']").last
    expect(answer).to_contain_text(ANSWER)
    expect(answer).to_contain_text("tokens/s")  # the figures come once it is complete
    expect(page.locator("#document-chat-stop")).to_be_hidden()
    assert backend.conversations[-1].turns[-1].image_labels == ("Page-2", "Page-3")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "document_chat.png"), full_page=True)
    context.close()
