"""One user journey in a real browser (Debian's chromium, driven by Playwright).

upload an image -> ask -> watch the answer stream -> Stop -> Regenerate -> follow-up -> Clear
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import (
    ARTIFACTS,
    EXAMPLES,
    generate_threads,
    playwright_expect,
    wait_until,
)

expect = playwright_expect()

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(app_url)
    yield page
    context.close()


def bot_messages(page, tab: str = "image-chat"):
    return page.locator(f"#{tab}-chatbot [data-testid='bot']")


def user_questions(page, tab: str = "image-chat"):
    """The user's text bubbles (an image in the same turn has a bubble of its own)."""
    return page.locator(f"#{tab}-chatbot [data-testid='user']").filter(
        has_not=page.locator("img, video")
    )


def user_images(page, tab: str = "image-chat"):
    return page.locator(f"#{tab}-chatbot [data-testid='user'] img")


def set_max_new_tokens(page, value: int) -> None:
    """Open the image tab's settings and set Max new tokens (retrying until the box keeps it)."""
    page.locator("#image-chat-settings").click()
    tokens = page.locator("#image-chat-max-new-tokens input[type='number']")
    expect(tokens).to_be_visible()

    def set_tokens() -> bool:
        tokens.fill(str(value))
        tokens.press("Tab")
        return tokens.input_value() == str(value)

    assert wait_until(set_tokens, timeout=20), "the Max new tokens setting did not take"


def ask(page, tab: str, question: str) -> None:
    box = page.locator(f"#{tab}-input textarea")
    box.fill(question)
    box.press("Enter")


def stream_then_stop(page, tab: str) -> None:
    """The answer streams; Stop ends it (button gone, model stopped, answer kept as stopped)."""
    answer = bot_messages(page, tab).last
    expect(answer).to_be_visible()
    assert text_grows(answer), "the answer should stream"
    stop = page.locator(f"#{tab}-stop")
    expect(stop).to_be_visible()
    stop.click()
    expect(stop).to_be_hidden()
    assert wait_until(lambda: not generate_threads(), timeout=15), "Stop must end generation"
    expect(answer).to_contain_text("stopped")


def text_grows(locator) -> bool:
    """True once the text of `locator` got longer between two reads."""
    first = len(locator.inner_text())
    return wait_until(lambda: len(locator.inner_text()) > first, timeout=20)


def test_image_chat_journey(page, slow_backend, stream_spy):
    question = page.locator("#image-chat-input textarea")
    stop = page.locator("#image-chat-stop")

    # Upload, ask, and watch the answer stream.
    page.locator("#image-chat-image input[type='file']").set_input_files(str(EXAMPLES / "cat.jpg"))
    expect(page.locator("#image-chat-image img")).to_be_visible()
    question.fill("What is in this image?")
    question.press("Enter")
    expect(user_questions(page)).to_have_count(1)
    expect(user_images(page)).to_have_count(1)
    expect(bot_messages(page)).to_have_count(1)
    assert text_grows(bot_messages(page).first), "the answer should stream"

    # Stop: the button disappears, the model stops, the text stops growing.
    expect(stop).to_be_visible()
    stop.click()
    expect(stop).to_be_hidden()
    assert wait_until(lambda: not generate_threads(), timeout=15), "Stop must end generation"
    stopped_text = bot_messages(page).first.inner_text()
    expect(bot_messages(page).first).to_have_text(stopped_text)
    expect(bot_messages(page).first).to_contain_text("stopped")

    # Shorter answers from here on, so that they finish on their own.
    set_max_new_tokens(page, 32)

    # Regenerate: a new answer; the stopped one stays above it, collapsed, as an alternative.
    page.locator("#image-chat-regenerate").click()
    expect(bot_messages(page)).to_have_count(2)
    expect(bot_messages(page).first).to_contain_text("Other answer (1 of 2)")
    expect(bot_messages(page).last).to_contain_text("tokens/s")
    expect(bot_messages(page).last).not_to_contain_text("stopped")
    first, again = stream_spy
    assert again.conversation.turns == first.conversation.turns
    # The page's model (the default), and the conversation's id: this page's Image chat tab.
    assert first.kwargs["model"] == slow_backend.info.model
    assert first.kwargs["chat"].endswith("/image-chat")

    # Follow-up about the same image: the image is sent once, with the earlier turns.
    question.fill("What colour is it?")
    question.press("Enter")
    expect(user_questions(page)).to_have_count(2)
    expect(user_images(page)).to_have_count(1)
    expect(bot_messages(page)).to_have_count(3)
    expect(bot_messages(page).nth(2)).to_contain_text("tokens/s")
    follow_up = stream_spy[-1].conversation
    assert stream_spy[-1].kwargs["chat"] == first.kwargs["chat"]
    assert [t.role for t in follow_up.turns] == ["user", "assistant", "user"]
    assert len(follow_up.turns[0].images) == 1 and not follow_up.turns[2].images
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "image_chat.png"), full_page=True)

    # Clear: an empty conversation and no image.
    page.locator("#image-chat-clear").click()
    expect(user_questions(page)).to_have_count(0)
    expect(bot_messages(page)).to_have_count(0)
    expect(page.locator("#image-chat-image img")).to_have_count(0)


def test_a_question_without_an_image_is_refused_and_nothing_is_lost(page):
    question = page.locator("#image-chat-input textarea")
    question.fill("What is in this image?")
    question.press("Enter")
    expect(page.get_by_text("Please add an image first")).to_be_visible()
    expect(user_questions(page)).to_have_count(0)


def test_a_second_user_sees_their_place_in_the_queue(browser, app_url, slow_backend):
    pages = []
    for _ in range(2):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(app_url)
        page.locator("#image-chat-image input[type='file']").set_input_files(
            str(EXAMPLES / "coffee.jpg")
        )
        expect(page.locator("#image-chat-image img")).to_be_visible()
        pages.append(page)
    first, second = pages
    ask(first, "image-chat", "What colour is the cup?")
    expect(bot_messages(first)).to_have_count(1)
    assert text_grows(bot_messages(first).first)  # the first request holds the model
    ask(second, "image-chat", "What colour is the cup?")
    # One generation at a time: the second request waits and says where it stands.
    expect(second.locator("#image-chat-chatbot")).to_contain_text("queue: 1/1")
    for page in pages:
        page.locator("#image-chat-stop").click()
    for page in pages:
        expect(page.locator("#image-chat-stop")).to_be_hidden()
        page.context.close()
    assert wait_until(lambda: not generate_threads(), timeout=15)


def test_multi_image_journey(page, slow_backend):
    from tests.conftest import EXAMPLES

    page.get_by_role("tab", name="Multi-image chat").click()
    attach = page.locator("#multi-image-input input[type='file']")
    attach.set_input_files([str(EXAMPLES / "cat.jpg"), str(EXAMPLES / "coffee.jpg")])
    gallery = page.locator("#multi-image-gallery")
    expect(gallery).to_contain_text("Image-1 (new)")
    expect(gallery).to_contain_text("Image-2 (new)")
    # The cost is shown before sending: 2 images of 7 tiles each at 16 tokens a tile (tiny model).
    expect(page.locator("#multi-image-estimate")).to_contain_text("14 tiles")
    expect(page.locator("#multi-image-estimate")).to_contain_text("224 image tokens")
    ask(page, "multi-image", "Compare Image-1 and Image-2.")
    expect(user_images(page, "multi-image")).to_have_count(2)
    stream_then_stop(page, "multi-image")
    # Sent images keep their numbers; a new one continues the numbering.
    expect(gallery).to_contain_text("Image-2")
    attach.set_input_files([str(EXAMPLES / "rocket.jpg")])
    expect(gallery).to_contain_text("Image-3 (new)")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "multi_image_chat.png"), full_page=True)


def test_video_journey(page, slow_backend, tmp_path):
    from tests.media_files import X264, write_video

    clip = write_video(tmp_path / "clip.mp4", "libx264", 25, 50, options=X264)
    page.get_by_role("tab", name="Video chat").click()
    page.locator("#video-chat-video input[type='file']").set_input_files(str(clip))
    frames = page.locator("#video-chat-frames-gallery")
    # 16 frames by default, at the reference's segment midpoints, with their timestamps.
    from model_backend.video import sample_frame_indices

    for number, index in enumerate(sample_frame_indices(50, 25, 16), start=1):
        expect(frames).to_contain_text(f"#{number} · {index / 25:.1f} s")
    ask(page, "video-chat", "What happens in the video?")
    expect(page.locator("#video-chat-chatbot [data-testid='user'] video")).to_have_count(1)
    stream_then_stop(page, "video-chat")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "video_chat.png"), full_page=True)


def test_the_conversation_downloads_as_json_and_markdown(page, backend):
    page.locator("#image-chat-image input[type='file']").set_input_files(str(EXAMPLES / "cat.jpg"))
    expect(page.locator("#image-chat-image img")).to_be_visible()
    set_max_new_tokens(page, 16)
    ask(page, "image-chat", "What is in this image?")
    expect(bot_messages(page).first).to_contain_text("tokens/s")
    page.locator("#image-chat-export").click()  # exports are written on request
    json_button = page.locator("#image-chat-export-json")
    expect(json_button).to_be_visible()
    with page.expect_download() as download:
        json_button.click()
    record = json.loads(Path(download.value.path()).read_text())
    assert [t["role"] for t in record["turns"]] == ["user", "assistant"]
    assert record["turns"][0]["text"] == "What is in this image?"
    image = record["turns"][0]["images"][0]
    assert image["data_url"].startswith("data:image/jpeg;base64,")
    assert record["settings"]["max_new_tokens"] == 16
    with page.expect_download() as download:
        page.locator("#image-chat-export-md").click()
    markdown = Path(download.value.path()).read_text()
    assert "![Image-1: " in markdown and "What is in this image?" in markdown
