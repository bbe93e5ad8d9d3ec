"""History in a real browser: ask, reload, restore the conversation from the History panel,
delete it, delete all. The app answers with a scripted backend (a known answer), launched with
the protections app.py installs (its Content-Security-Policy among them): saving and restoring
must work under them, without a policy violation."""

from __future__ import annotations

import pytest

from tests.conftest import CAT, COFFEE, playwright_expect, wait_until
from tests.scripted_backend import ScriptedBackend
from tests.security_setup import secure_app

expect = playwright_expect()

pytestmark = pytest.mark.browser
ANSWER = "A cat sits on a sofa."
STORAGE_KEY = "internvl-demo-history-v1-image-chat"
# Said on the console, which outlives the reloads.
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation",
    (e) => console.error("CSP violation: " + e.violatedDirective + " " + e.blockedURI));
"""


@pytest.fixture(scope="module")
def scripted_url(gradio_temp_dir):
    with secure_app(ScriptedBackend(ANSWER)) as (_, url):
        yield url


@pytest.fixture
def page(browser, scripted_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_init_script(REPORT_VIOLATIONS)  # at every load, reloads included
    page = context.new_page()
    violations = []
    page.on("console", lambda m: m.text.startswith("CSP violation") and violations.append(m.text))
    page.set_default_timeout(30_000)
    response = page.goto(scripted_url)
    assert "script-src" in response.headers.get("content-security-policy", "")
    yield page
    assert violations == [], "the page broke its Content-Security-Policy"
    context.close()


def stored(page) -> str | None:
    """The tab's history as the browser keeps it (encrypted anew at every write)."""
    return page.evaluate(f"localStorage.getItem('{STORAGE_KEY}')")


def ask_about(page, image: str, question: str) -> None:
    """Ask about `image`; return once the answer is complete and saved in the browser."""
    before = stored(page)
    page.locator("#image-chat-image input[type='file']").set_input_files(image)
    expect(page.locator("#image-chat-image img")).to_be_visible()
    box = page.locator("#image-chat-input textarea")
    box.fill(question)
    box.press("Enter")
    expect(page.locator("#image-chat-chatbot [data-testid='bot']").last).to_contain_text("tokens/s")
    assert wait_until(lambda: stored(page) != before), "the conversation should be saved"


def clear(page) -> None:
    page.locator("#image-chat-clear").click()
    expect(page.locator("#image-chat-chatbot [data-testid='bot']")).to_have_count(0)


def open_history(page):
    """Open the Image chat tab's History accordion; its list of saved conversations."""
    page.locator("#image-chat-history").get_by_text("History (kept in this browser)").click()
    listed = page.locator("#image-chat-history-list label")
    return listed


def test_a_conversation_survives_a_reload_and_is_restored_deleted_and_cleared(page):
    chatbot = page.locator("#image-chat-chatbot")
    ask_about(page, CAT, "What is in this image?")
    listed = open_history(page)
    expect(listed).to_have_count(1)
    expect(listed.first).to_contain_text("What is in this image?")
    expect(listed.first).to_contain_text("UTC")

    # Reload: the tab is empty, the browser still lists the conversation.
    page.reload()
    expect(chatbot.locator("[data-testid='bot']")).to_have_count(0)
    listed = open_history(page)
    expect(listed).to_have_count(1)
    kept = stored(page)
    assert kept and "What is in this image?" not in kept  # scrambled, as BrowserState does

    # Restore: the text comes back, with a notice and the thumbnail; the image must be
    # attached again before a follow-up.
    listed.first.click()
    expect(chatbot.locator("[data-testid='user']")).to_contain_text("What is in this image?")
    expect(chatbot.locator("[data-testid='bot']")).to_contain_text(ANSWER)
    notice = page.locator("#image-chat-history-notice")
    expect(notice).to_contain_text("Restored from this browser")
    expect(notice).to_contain_text("cat.jpg")
    thumbnail = notice.locator("img[src^='data:image/jpeg;base64,']")
    expect(thumbnail).to_have_count(1)
    assert wait_until(lambda: thumbnail.evaluate("img => img.complete && img.naturalWidth > 0"))
    box = page.locator("#image-chat-input textarea")
    box.fill("And the colour?")
    box.press("Enter")
    expect(page.get_by_text("Please add an image first")).to_be_visible()
    # With the image attached again, the conversation goes on and is saved in place.
    ask_about(page, CAT, "And the colour?")
    expect(chatbot.locator("[data-testid='bot']")).to_have_count(2)
    expect(listed).to_have_count(1)

    # Delete it: the list is empty, also after a reload.
    page.locator("#image-chat-history-delete").click()
    expect(listed).to_have_count(0)

    # Two new conversations, then Delete all.
    clear(page)
    expect(notice).to_be_hidden()
    ask_about(page, COFFEE, "What is in the cup?")
    clear(page)
    ask_about(page, CAT, "Is the cat asleep?")
    expect(listed).to_have_count(2)
    expect(listed.first).to_contain_text("Is the cat asleep?")  # newest first
    page.locator("#image-chat-history-clear").click()
    expect(listed).to_have_count(0)
    page.reload()
    listed = open_history(page)
    expect(page.locator("#image-chat-history-list")).to_contain_text("No saved conversation")
    expect(listed).to_have_count(0)
