"""Likes in a real browser: answer, Regenerate, like the earlier answer with the chatbot's own
like button; the follow-up question is sent with that answer, and one pair is kept."""

from __future__ import annotations

from contextlib import contextmanager

import gradio as gr
import pytest

from interface.chat import ChatPanel, ChatTab
from interface.conversation import user_turn
from interface.layout import CSS
from interface.settings import build_settings
from interface.tab_helpers import new_images, question_text
from model_backend.base import GenerationSettings
from tests.conftest import ARTIFACTS, CAT, FakeStore, playwright_expect
from tests.scripted_backend import ScriptedBackend

expect = playwright_expect()

pytestmark = pytest.mark.browser


@contextmanager
def one_chat_app(backend, store):
    """One chat panel about the cat (no tab of the page: this tests the shared panel)."""
    with gr.Blocks() as demo:
        image = gr.State(CAT)
        settings = build_settings(GenerationSettings(), "System.", prefix="chat")
        tab = ChatTab(
            name="chat",
            collect_turn=lambda message, turns, image: user_turn(
                question_text(message), new_images(message, turns, image)
            ),
            placeholder="Ask about the cat.",
            media_inputs=(image,),
        )
        ChatPanel(backend, tab, feedback=store).wire(settings)
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, css=CSS)
    try:
        yield url
    finally:
        demo.close()


def test_like_the_earlier_answer_after_regenerate(browser, gradio_temp_dir):
    backend, store = ScriptedBackend("A cat on a sofa."), FakeStore()
    with one_chat_app(backend, store) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.goto(url)
        bot = page.locator("#chat-chatbot [data-testid='bot']")
        box = page.locator("#chat-input textarea")
        box.fill("What is it?")
        box.press("Enter")
        expect(bot.first).to_contain_text("tokens/s")

        backend.reply = "A dog."
        page.locator("#chat-regenerate").click()
        expect(bot).to_have_count(2)
        expect(bot.last).to_contain_text("A dog.")
        expect(bot.last).to_contain_text("tokens/s")
        earlier = bot.first
        expect(earlier).to_contain_text("Other answer (1 of 2)")  # collapsed above the new one
        expect(earlier).not_to_contain_text("A cat on a sofa.")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "feedback_alternatives.png"), full_page=True)

        # The like button of the earlier answer's bubble: it becomes the answer in use.
        likes = page.locator("#chat-chatbot button[aria-label='Like']")
        expect(likes).to_have_count(2)
        likes.first.click()
        expect(bot.first).to_contain_text("Other answer (2 of 2)")
        expect(bot.last).to_contain_text("A cat on a sofa.")
        expect(page.locator("#chat-chatbot button[aria-label='Liked']")).to_have_count(1)
        assert len(store.pairs) == 1
        pair = store.pairs[0]
        assert (pair["chosen"], pair["rejected"]) == ("A cat on a sofa.", "A dog.")
        assert pair["question"] == "What is it?" and pair["media"] == [CAT]
        assert pair["source"] == "like" and pair["settings"]["system_prompt"] == "System."
        page.screenshot(path=str(ARTIFACTS / "feedback_liked.png"), full_page=True)

        backend.reply = "Yes, on a sofa."
        box.fill("Sure?")
        box.press("Enter")
        expect(bot).to_have_count(3)
        expect(bot.last).to_contain_text("tokens/s")
        follow_up = backend.conversations[-1]
        assert [(t.role, t.text) for t in follow_up.turns] == [
            ("user", "What is it?"),
            ("assistant", "A cat on a sofa."),  # the liked answer, and only it
            ("user", "Sure?"),
        ]
        # The like is kept on its answer when the chat changes.
        expect(page.locator("#chat-chatbot button[aria-label='Liked']")).to_have_count(1)
        page.close()
