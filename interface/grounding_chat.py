"""The Grounding tab (Find / Detect all / Ask, with the boxes drawn) and `/grounding`."""

from __future__ import annotations

import time

import gradio as gr

from interface.api import register_endpoint
from interface.chat import ChatPanel, ChatTab
from interface.conversation import answer_text, user_turn
from interface.grounding_view import (
    annotated_file,
    answer_boxes,
    boxes_json,
    boxes_json_file,
    boxes_table,
)
from interface.history import History, restore_notice_box
from interface.i18n import localized
from interface.preferences import PreferenceStore
from interface.settings import build_settings
from interface.tab_helpers import image_input, new_images, show_examples
from model_backend.base import Backend, GenerationSettings
from model_backend.errors import InputError
from model_backend.grounding import grounding_question

MODES = [("Find", "find"), ("Detect all", "detect"), ("Ask", "ask")]
TABLE_HEADERS = ["label", "x1", "y1", "x2", "y2"]


def collect_grounding_turn(message: dict, turns: list[dict], image: str | None, mode: str):
    """The mode's question about the image (attached when new to the conversation)."""
    typed = message.get("text") or ""
    question = grounding_question(mode, typed)
    images = new_images(message, turns, image)
    # What was typed, for Undo and for a failed request to give back (not the full prompt).
    return {**user_turn(question, images), "typed": typed}


def latest_answer_and_image(turns: list[dict]) -> tuple[str | None, str | None]:
    """The last answer (without its thinking) and the latest image sent before it."""
    image = answer = None
    for turn in turns:
        if turn["role"] == "user":
            image = (turn.get("images") or [image])[-1]
        else:
            answer = answer_text(turn)
    if turns and turns[-1]["role"] == "user":
        answer = None
    return answer, image


def render_boxes(turns: list[dict]) -> tuple:
    """Drawn image, table and JSON file for the latest answer (empty while it has no box)."""
    answer, image = latest_answer_and_image(turns)
    boxes = answer_boxes(image, answer) if answer and image else ()
    if not boxes:
        return None, [], None
    return annotated_file(image, boxes), boxes_table(boxes), boxes_json_file(image, boxes)


def build_grounding_tab(
    backend: Backend,
    defaults: GenerationSettings,
    system_prompt: str,
    concurrency_limit: int,
    model: gr.State | None = None,
    feedback: PreferenceStore | None = None,
) -> History:
    """Grounding: the model answers with boxes; they are drawn as the answer streams."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            image = image_input("grounding-image", height=300)
            mode = gr.Radio(
                [(localized(label), value) for label, value in MODES],
                value="find",
                label=localized("Mode"),
                info=localized(
                    "Find: type what to look for · Detect all: just press Enter · Ask: any "
                    "question (boxes are drawn if the answer has some)"
                ),
                elem_id="grounding-mode",
            )
            settings = build_settings(defaults, system_prompt, prefix="grounding")
            history = History("grounding")
        with gr.Column(scale=3, min_width=400):
            drawn = gr.Image(
                label=localized("Boxes"), interactive=False, elem_id="grounding-drawn", height=340
            )
            with gr.Row():
                table = gr.Dataframe(
                    headers=TABLE_HEADERS,
                    label=localized("Boxes (pixels)"),
                    interactive=False,
                    elem_id="grounding-table",
                )
                download = gr.File(label=localized("Boxes as JSON"), elem_id="grounding-json")
            tab = ChatTab(
                name="grounding",
                collect_turn=collect_grounding_turn,
                placeholder=localized(
                    "**Grounding** · add an image, pick a mode, say what to find."
                ),
                media_inputs=(image, mode),
                cleared={image: None, drawn: None, table: [], download: None},
                extra_outputs=(drawn, table, download),
                render_extra=render_boxes,
            )
            notice = restore_notice_box("grounding")
            panel = ChatPanel(backend, tab, model, concurrency_limit, feedback=feedback)
    show_examples(
        "grounding", panel.textbox, image, "Examples (Find mode: click one, then press Enter)"
    )
    panel.wire(settings)
    history.wire(panel, notice)

    register_endpoint(
        "grounding",
        backend,
        grounding_turns,
        lambda: [
            gr.File(label="image", file_types=["image"]),
            gr.Textbox(label="query"),
            gr.Textbox("find", label="mode"),
        ],
        system_prompt,
        concurrency_limit,
        "Find objects in an image and get their bounding boxes in pixels (InternVL's "
        "grounding): find the object `query` describes, detect every object, or ask any "
        "question (boxes come back when the answer has some).\n"
        "Args:\n"
        "    image: the image (an http(s) URL of the file, or a data: URL with it in base64).\n"
        "    query: with mode find, what to find (e.g. 'the red cup on the left'); with mode "
        "ask, the question; ignored by mode detect.\n"
        "    mode: find (default), detect (every object) or ask.\n"
        "Returns:\n"
        "    answer: the model's answer (without its thinking), boxes marked "
        "<ref>label</ref><box>[[x1, y1, x2, y2]]</box> on a 0-1000 scale.\n"
        '    boxes: JSON, [{"label": str, "x1": px, "y1": px, "x2": px, "y2": px}], corners in '
        "pixels of the image as given (left, top, right, bottom).\n"
        "    annotated_image: the image with the boxes drawn (a copy at most 2048 pixels a "
        "side).",
        outputs=lambda: [
            gr.Textbox(label="answer"),
            gr.JSON(label="boxes"),
            gr.Image(label="annotated_image", type="filepath"),
        ],
        present=boxes_so_far,
    )
    return history


def grounding_turns(image: str | None, query: str, mode: str, history=None) -> list[dict]:
    """API: the mode's question about the image (history is not used by grounding)."""
    if not image:
        raise InputError("image is required: pass a file with handle_file(path).")
    return [user_turn(grounding_question(mode, query), [image])]


DRAW_INTERVAL_S = 0.25  # drawings while an answer streams: at most four a second


def boxes_so_far(text: str, own: dict, final: bool = False) -> tuple:
    """(answer, its closed boxes in pixels, the image with them drawn) for one streamed step.

    The drawing follows the boxes at most DRAW_INTERVAL_S apart while the answer streams (it
    is made while the model waits); the final step always has every box drawn."""
    boxes = answer_boxes(own["image"], text)
    now = time.monotonic()
    if boxes != own.get("drawn", ()) and (final or now - own.get("drawn_at", 0) >= DRAW_INTERVAL_S):
        own["drawing"] = annotated_file(own["image"], boxes) if boxes else None
        own["drawn"], own["drawn_at"] = boxes, now
    own["stale"] = boxes != own.get("drawn", ())
    return text, boxes_json(boxes), own.get("drawing")
