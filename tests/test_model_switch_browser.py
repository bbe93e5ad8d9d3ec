"""Switching models in the page: the header and the tabs' default system prompts follow, for
that browser session only; a model that cannot be loaded leaves the session as it was."""

from __future__ import annotations

import pytest

from model_backend.prompt import DEFAULT_SYSTEM_PROMPT, INTERNVL2_SYSTEM_PROMPT
from tests.conftest import EXAMPLES, launched
from tests.scripted_backend import ScriptedBackend

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.browser

# InternVL 2.5 (internvl2_5 template) and InternVL2-8B-MPO (internlm2-chat template).
PROMPTS = {"InternVL2_5-8B": DEFAULT_SYSTEM_PROMPT, "InternVL2-8B-MPO": INTERNVL2_SYSTEM_PROMPT}
FIRST, SECOND = PROMPTS


@pytest.fixture(scope="module")
def two_models(gradio_temp_dir):
    backend = ScriptedBackend("An answer.", models=list(PROMPTS), prompts=PROMPTS)
    with launched(backend) as url:
        yield backend, url


@pytest.fixture
def new_page(browser):
    contexts = []

    def new_page(url: str):
        contexts.append(browser.new_context(viewport={"width": 1400, "height": 1000}))
        page = contexts[-1].new_page()
        page.goto(url)
        return page

    yield new_page
    for context in contexts:
        context.close()


def choose_model(page, model: str) -> None:
    page.locator("#model-choice input").click()
    page.get_by_role("option", name=model).click()


def ask_about_the_cat(page) -> None:
    expect = playwright.expect
    page.locator("#image-chat-image input[type='file']").set_input_files(str(EXAMPLES / "cat.jpg"))
    expect(page.locator("#image-chat-image img")).to_be_visible()
    question = page.locator("#image-chat-input textarea")
    question.fill("What is it?")
    question.press("Enter")
    expect(page.locator("#image-chat-chatbot [data-testid='bot']")).to_contain_text("An answer")


def test_switching_models_updates_the_header_and_default_system_prompts(two_models, new_page):
    expect = playwright.expect
    _, url = two_models
    page = new_page(url)
    page.get_by_role("tab", name="Video chat", exact=True).click()
    page.locator("#video-chat-settings").click()
    written = page.locator("#video-chat-system-prompt textarea")
    expect(written).to_have_value(DEFAULT_SYSTEM_PROMPT, timeout=30_000)
    written.fill("Be brief.")
    written.press("Tab")
    page.get_by_role("tab", name="Image chat", exact=True).click()
    page.locator("#image-chat-settings").click()
    prompt = page.locator("#image-chat-system-prompt textarea")
    expect(prompt).to_have_value(DEFAULT_SYSTEM_PROMPT)
    choose_model(page, SECOND)
    expect(page.locator("#header-note")).to_contain_text(SECOND, timeout=30_000)
    expect(prompt).to_have_value(INTERNVL2_SYSTEM_PROMPT)
    page.get_by_role("tab", name="Video chat", exact=True).click()
    expect(written).to_have_value("Be brief.")  # a prompt the user wrote stays


def test_a_switch_in_one_browser_leaves_the_other_on_its_model(two_models, new_page):
    expect = playwright.expect
    backend, url = two_models
    one, other = new_page(url), new_page(url)
    expect(other.locator("#header-note")).to_contain_text(FIRST, timeout=30_000)
    choose_model(one, SECOND)
    expect(one.locator("#header-note")).to_contain_text(SECOND, timeout=30_000)
    expect(other.locator("#header-note")).to_contain_text(FIRST)
    expect(other.locator("#header-note")).not_to_contain_text(SECOND)
    backend.requests.clear()
    ask_about_the_cat(one)
    ask_about_the_cat(other)
    assert [model for model, _chat in backend.requests] == [SECOND, FIRST]
    assert len({chat for _model, chat in backend.requests}) == 2  # a conversation each


def test_a_model_that_does_not_fit_leaves_the_session_as_it_was(two_models, new_page):
    expect = playwright.expect
    backend, url = two_models
    backend.too_large.add(SECOND)
    try:
        page = new_page(url)
        choose_model(page, SECOND)
        expect(page.get_by_text("does not fit in memory").first).to_be_visible(timeout=30_000)
        expect(page.locator("#model-choice input")).to_have_value(FIRST)  # the menu goes back
        expect(page.locator("#header-note")).to_contain_text(FIRST)
        backend.requests.clear()
        ask_about_the_cat(page)
        assert [model for model, _chat in backend.requests] == [FIRST]
    finally:
        backend.too_large.clear()
