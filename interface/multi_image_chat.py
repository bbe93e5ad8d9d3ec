"""The Multi-image chat tab and its `/multi_image_chat` API endpoint."""

from __future__ import annotations

import gradio as gr

from interface.api import register_endpoint
from interface.chat import ChatPanel, ChatTab
from interface.conversation import history_to_turns, to_conversation, user_turn
from interface.history import History, restore_notice_box
from interface.i18n import localized, translate
from interface.preferences import PreferenceStore
from interface.settings import build_settings
from interface.tab_helpers import question_text, show_examples
from model_backend.base import Backend, GenerationSettings
from model_backend.errors import InputError
from model_backend.media import image_token_estimate

DEFAULT_MAX_IMAGES = 8


def images_in(turns: list[dict]) -> list[str]:
    return [path for turn in turns for path in turn.get("images") or ()]


def check_image_limit(turns: list[dict], new_images: list[str], max_images: int) -> None:
    total = len(images_in(turns)) + len(new_images)
    if total > max_images:
        raise InputError(
            f"This conversation would hold {total} images; the limit is {max_images}. Remove "
            f"some before sending, or press Clear to start a new conversation."
        )


def collect_multi_image_turn(message: dict, turns: list[dict], max_images: int) -> dict:
    """The question and the images attached to it (numbered after the earlier ones)."""
    text = question_text(message)
    files = list(message.get("files") or [])
    check_image_limit(turns, files, max_images)
    return user_turn(text, files)


def preview(
    backend: Backend, turns: list[dict], message: dict | None, max_tiles: float
) -> tuple[list, str]:
    """Gallery items (every image with its number) and the image-token estimate of the turn."""
    pending = list((message or {}).get("files") or [])
    sent = images_in(turns)
    gallery = [(path, f"Image-{i + 1}") for i, path in enumerate(sent)]
    gallery += [(path, f"Image-{len(sent) + i + 1} (new)") for i, path in enumerate(pending)]
    if not pending:
        return gallery, translate("Attach images to the question (you can select several at once).")
    draft = to_conversation([*turns, user_turn("(draft)", pending)], "")
    try:
        tiles = image_token_estimate(draft, int(max_tiles))
    except InputError as error:
        return gallery, f"⚠️ {error}"
    new_tiles = sum(tiles[len(sent) :])
    tokens = new_tiles * backend.tokens_per_tile
    per_image = max(1, int(max_tiles) // len(pending))
    return gallery, translate(
        "**This message:** {count} image(s) → {tiles} tiles → **{tokens} image tokens** (up to"
        " {per_image} tiles each; earlier images then count 1 tile each).",
        count=len(pending),
        tiles=new_tiles,
        tokens=f"{tokens:,}",
        per_image=per_image,
    )


def multi_image_turns(images: list[str] | None, question: str, history, max_images: int):
    """API: history + the question with its images."""
    turns = history_to_turns(history)
    images = list(images or [])
    check_image_limit(turns, images, max_images)
    turns.append(user_turn((question or "").strip(), images))
    return turns


def build_multi_image_chat_tab(
    backend: Backend,
    defaults: GenerationSettings,
    system_prompt: str,
    concurrency_limit: int,
    max_images: int = DEFAULT_MAX_IMAGES,
    model: gr.State | None = None,
    feedback: PreferenceStore | None = None,
) -> History:
    """Multi-image chat: images added with any question, numbered across the conversation."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            gallery = gr.Gallery(
                label=localized("Images in this conversation"),
                columns=4,
                height=300,
                interactive=False,
                elem_id="multi-image-gallery",
            )
            estimate = gr.Markdown(elem_id="multi-image-estimate")
            settings = build_settings(defaults, system_prompt, prefix="multi-image")
            history = History("multi-image")
        with gr.Column(scale=3, min_width=400):
            notice = restore_notice_box("multi-image")
            tab = ChatTab(
                name="multi-image",
                collect_turn=lambda message, turns: collect_multi_image_turn(
                    message, turns, max_images
                ),
                placeholder=localized(
                    "**Multi-image chat** · attach several images to a question (📎), then refer"
                    " to them as Image-1, Image-2, … (up to {max_images} per conversation).",
                    max_images=max_images,
                ),
                file_count="multiple",
            )
            panel = ChatPanel(backend, tab, model, concurrency_limit, feedback=feedback)
    show_examples("multi_image_chat", panel.textbox)
    panel.wire(settings)
    history.wire(panel, notice)

    def show_preview(turns, message, max_tiles):
        return preview(backend, turns, message, max_tiles)

    gr.on(
        [panel.textbox.change, panel.state.change, settings.max_tiles.release],
        show_preview,
        [panel.state, panel.textbox, settings.max_tiles],
        [gallery, estimate],
        queue=False,
        api_visibility="private",
    )

    register_endpoint(
        "multi_image_chat",
        backend,
        lambda images, question, history: multi_image_turns(images, question, history, max_images),
        lambda: [
            gr.File(label="images", file_count="multiple", file_types=["image"]),
            gr.Textbox(label="question"),
        ],
        system_prompt,
        concurrency_limit,
        "Answer a question about several images at once (compare them, find what they share, "
        "follow a sequence) with InternVL, after the earlier turns in `history`; the answer "
        "streams.\n"
        "Args:\n"
        "    images: a list of images, each an http(s) URL of the file or a data: URL with it "
        "in base64; the model sees them as Image-1, Image-2, ... in this order "
        f"(at most {max_images} per conversation).\n"
        "    question: what to ask; refer to the images as Image-1, Image-2, ...\n"
        "Returns:\n"
        "    answer: the answer alone (text), after a notice if old turns were left out.",
    )
    return history
