"""What several tabs share: the question, the image box and the image a question brings, and
the tab's examples."""

from __future__ import annotations

import gradio as gr

from interface.conversation import conversation_paths
from interface.examples import tab_examples
from interface.i18n import localized
from model_backend.errors import InputError

ADD_AN_IMAGE = "Please add an image first (upload, paste or webcam)."
ADD_A_VIDEO = "Please add a video first."
ADD_A_DOCUMENT = "Please add a PDF document first."
EXAMPLES_LABEL = "Examples (click one, then press Enter)"


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
        label=localized("Image"),
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
        raise InputError(ADD_AN_IMAGE)
    return []


def show_examples(
    tab: str, textbox: gr.MultimodalTextbox, media=None, label: str = EXAMPLES_LABEL
) -> None:
    """A tab's examples (none if their files are absent): the question goes in `textbox`, with
    the files attached to it, or the first file in `media` when the tab has a media box."""
    examples = tab_examples(tab)
    if not examples:
        return
    if media is None:
        rows = [[{"text": e["text"], "files": e["files"]}] for e in examples]
        inputs = [textbox]
    else:
        rows = [[e["files"][0], {"text": e["text"]}] for e in examples]
        inputs = [media, textbox]
    table = gr.Examples(examples=rows, inputs=inputs, label=localized(label), cache_examples=False)
    table.dataset.headers = []  # the inputs' labels, which Gradio would show untranslated
