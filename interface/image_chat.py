"""The Image chat tab and its `/image_chat` API endpoint."""

from __future__ import annotations

import gradio as gr

from interface.api import register_endpoint
from interface.chat import ChatPanel
from interface.conversation import conversation_paths, history_to_turns, user_turn
from interface.examples import show_examples
from interface.settings import build_settings
from model_backend.base import Backend, GenerationSettings
from model_backend.errors import InputError


def question_text(message: dict) -> str:
    text = (message.get("text") or "").strip()
    if not text:
        raise InputError("Please type a question.")
    return text


def image_input(elem_id: str, height: int) -> gr.Image:
    """An image box that takes uploads, pastes and webcam shots, and hands over the file."""
    return gr.Image(
        type="filepath",
        sources=["upload", "clipboard", "webcam"],
        label="Image",
        image_mode=None,  # the file as uploaded; the backend converts it (EXIF, CMYK, ...)
        elem_id=elem_id,
        height=height,
    )


def new_images(message: dict, turns: list[dict], image: str | None) -> list[str]:
    """The image a new question brings: one attached in the textbox, else the image box's if
    the conversation does not hold it yet, else none (a follow-up)."""
    attached = list(message.get("files") or [])
    if attached:
        return attached[-1:]
    sent = conversation_paths(turns)
    if image and image not in sent:
        return [image]
    if not sent:
        raise InputError("Please add an image first (upload, paste or webcam).")
    return []


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
    backend: Backend, defaults: GenerationSettings, system_prompt: str, concurrency_limit: int
) -> None:
    """Image chat: one image (replaceable), multi-turn questions about it."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            image = image_input("image-chat-image", height=340)
            settings = build_settings(defaults, system_prompt, prefix="image-chat")
        with gr.Column(scale=3, min_width=400):
            panel = ChatPanel(
                backend,
                name="image-chat",
                collect_turn=collect_image_turn,
                placeholder="**Image chat** · add an image on the left, then ask about it.",
                concurrency_limit=concurrency_limit,
            )
    show_examples("image_chat", image, panel.textbox, "Examples (click one, then press Send)")
    panel.wire(settings, media_inputs=[image], media_outputs=[image], clear_media=lambda: (None,))

    register_endpoint(
        "image_chat",
        backend,
        image_chat_turns,
        # A File, not an Image: Gradio would decode an Image itself and fail with its own error
        # on a broken file; the backend's loader gives the user a clear message.
        lambda: [gr.File(label="image", file_types=["image"]), gr.Textbox(label="question")],
        system_prompt,
        concurrency_limit,
        "Answer `question` about `image`, after the earlier turns in `history`.",
    )
