"""The interface in Chinese and in English in a real browser: chosen by the browser's language,
changed by the switch in the header (kept after a reload), and the server's messages in the
same language. One app, launched as app.py launches it (its page script and policy included)."""

from __future__ import annotations

import pytest

from interface.i18n import LANGUAGE_COOKIE
from tests.conftest import playwright_expect
from tests.scripted_backend import ScriptedBackend
from tests.security_setup import secure_app

expect = playwright_expect()

pytestmark = pytest.mark.browser
CHINESE_TABS = ["图像对话", "多图对话", "文档对话", "视频对话", "目标定位", "对比"]
ENGLISH_TABS = [
    "Image chat",
    "Multi-image chat",
    "Document chat",
    "Video chat",
    "Grounding",
    "Compare",
]


@pytest.fixture(scope="module")
def app_url(gradio_temp_dir):
    with secure_app(ScriptedBackend("A cat sits on a sofa.")) as (_, url):
        yield url


@pytest.fixture
def open_page(browser, app_url):
    """open_page(locale): the app in a new browser context with that language."""
    contexts = []

    def open_page(locale: str):
        context = browser.new_context(locale=locale, viewport={"width": 1400, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(app_url)
        return page

    yield open_page
    for context in contexts:
        context.close()


def expect_language(page, tabs: list[str], buttons: list[str], switch: str) -> None:
    expect(page.get_by_role("tab")).to_have_text(tabs)
    for elem_id, text in zip(["regenerate", "undo", "clear"], buttons, strict=True):
        expect(page.locator(f"#image-chat-{elem_id}")).to_have_text(text)
    expect(page.locator("#language-switch")).to_have_text(switch)


def expect_message(page, text: str) -> None:
    """Ask without an image: the server's message says to add one."""
    box = page.locator("#image-chat-input textarea")
    box.fill("What is this?")
    box.press("Enter")
    expect(page.locator(".toast-body").last).to_contain_text(text)


def test_a_chinese_browser_gets_the_interface_in_chinese(open_page):
    page = open_page("zh-CN")
    expect_language(page, CHINESE_TABS, ["重新生成", "撤销", "清空"], "English")
    expect(page.locator("#image-chat-settings")).to_contain_text("设置")
    expect_message(page, "请先添加一张图像")


def test_the_switch_changes_the_language_and_keeps_it(open_page):
    page = open_page("en-US")
    expect_language(page, ENGLISH_TABS, ["Regenerate", "Undo", "Clear"], "中文")
    expect_message(page, "Please add an image first")

    page.locator("#language-switch").click()  # the page reloads in Chinese
    expect_language(page, CHINESE_TABS, ["重新生成", "撤销", "清空"], "English")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert cookies[LANGUAGE_COOKIE] == "zh-CN"
    expect_message(page, "请先添加一张图像")  # the browser still asks for English

    page.reload()
    expect_language(page, CHINESE_TABS, ["重新生成", "撤销", "清空"], "English")
    # An embedded Space may get no cookie: the page's own requests carry the choice too.
    page.context.clear_cookies()
    expect_message(page, "请先添加一张图像")
    page.locator("#language-switch").click()
    expect_language(page, ENGLISH_TABS, ["Regenerate", "Undo", "Clear"], "中文")
