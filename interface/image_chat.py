"""The Image chat tab and its `/image_chat` API endpoint."""

from __future__ import annotations

import gradio as gr

from interface.api import register_endpoint
from interface.chat import ChatPanel, ChatTab
from interface.conversation import history_to_turns, user_turn
from interface.history import History, restore_notice_box
from interface.i18n import localized
from interface.preferences import PreferenceStore
from interface.settings import build_settings
from interface.tab_helpers import image_input, new_images, question_text, show_examples
from model_backend.base import Backend, GenerationSettings
from model_backend.errors import InputError


def collect_image_turn(message: dict, turns: list[dict], image: str | None) -> dict:
    """The new user turn: the question, with its image when the image is new."""
    text = question_text(message)
    return user_turn(text, new_images(message, turns, image))


def image_chat_turns(image: str | None, question: str, history: list | None) -> list[dict]:
    """API: history + question, with the image attached to the first user turn."""
    turns = history_to_turns(history)
    if not image:
        raise InputError("image is required: pass a file with gradio_client.handle_file(path).")
    turns.append(user_turn((question or "").strip()))
    first_user = next(t for t in turns if t["role"] == "user")
    first_user["images"] = [image]
    return turns


def build_image_chat_tab(
    backend: Backend,
    defaults: GenerationSettings,
    system_prompt: str,
    concurrency_limit: int,
    model: gr.State | None = None,
    feedback: PreferenceStore | None = None,
) -> History:
    """Image chat: one image (replaceable), multi-turn questions about it. Returns the tab's
    history (the page lists it when it opens)."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            image = image_input("image-chat-image", height=340)
            settings = build_settings(defaults, system_prompt, prefix="image-chat")
            history = History("image-chat")
        with gr.Column(scale=3, min_width=400):
            notice = restore_notice_box("image-chat")
            tab = ChatTab(
                name="image-chat",
                collect_turn=collect_image_turn,
                placeholder=localized(
                    "**Image chat** · add an image on the left, then ask about it."
                ),
                media_inputs=(image,),
                cleared={image: None},
            )
            panel = ChatPanel(backend, tab, model, concurrency_limit, feedback=feedback)
    show_examples("image_chat", panel.textbox, image)
    panel.wire(settings)
    history.wire(panel, notice)

    register_endpoint(
        "image_chat",
        backend,
        image_chat_turns,
        # A File, not an Image: Gradio would decode an Image itself and fail with its own error
        # on a broken file; the backend's loader gives the user a clear message.
        lambda: [gr.File(label="image", file_types=["image"]), gr.Textbox(label="question")],
        system_prompt,
        concurrency_limit,
        "Answer a question about an image with InternVL (describe it, read its text, count, "
        "compare details...), after the earlier turns in `history`; the answer streams.\n"
        "Args:\n"
        "    image: the image (an http(s) URL of the file, or a data: URL with it in base64); "
        "with `history`, it belongs to the first user turn.\n"
        "    question: what to ask about the image.\n"
        "Returns:\n"
        "    answer: the answer alone (text), after a notice if old turns were left out.",
    )
    return history
