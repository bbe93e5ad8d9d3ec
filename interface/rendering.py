"""Model text -> what the chat shows. Pure functions, no Gradio objects."""

from __future__ import annotations

import re

from model_backend.grounding import grounding_spans

# Inline and display maths, as InternVL writes them ($...$, $$...$$, \(...\), \[...\]).
LATEX_DELIMITERS = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "$", "right": "$", "display": False},
    {"left": "\\(", "right": "\\)", "display": False},
    {"left": "\\[", "right": "\\]", "display": True},
]


def format_box(box: tuple[float, float, float, float]) -> str:
    return "[" + ", ".join(f"{round(v)}" for v in box) + "]"


def render_answer(text: str) -> str:
    """Markdown for an answer: grounding markup shown as a bold label with its boxes.

    `<ref>cat</ref><box>[[1, 2, 3, 4]]</box>` becomes **cat** `[1, 2, 3, 4]` (0-1000 units),
    so no raw tags reach the chat (Gradio 6 would otherwise render them as HTML tags). An
    unfinished tag at the end of a streaming answer is hidden until it closes; stray tags that
    never close are dropped.
    """
    out: list[str] = []
    position = 0
    for span in grounding_spans(text):
        out.append(strip_stray_tags(text[position : span.start]))
        label = f"**{span.label}**" if span.label else ""
        boxes = " ".join(f"`{format_box(box)}`" for box in span.boxes)
        out.append(" ".join(part for part in (label, boxes) if part))
        position = span.end
    out.append(strip_stray_tags(cut_unfinished_tag(text[position:])))
    return "".join(out)


GROUNDING_OPENERS = ("<ref>", "<box>", "<quad>")
GROUNDING_TAGS = (*GROUNDING_OPENERS, "</ref>", "</box>", "</quad>")


def cut_unfinished_tag(tail: str) -> str:
    """Cut a trailing grounding tag that has not closed yet, or was cut mid-name ("<re")."""
    cut = max(tail.rfind(opener) for opener in GROUNDING_OPENERS)
    if cut != -1:
        tail = tail[:cut]
    for opener in GROUNDING_OPENERS:
        for length in range(len(opener) - 1, 0, -1):
            if tail.endswith(opener[:length]):
                return tail[:-length]
    return tail


def strip_stray_tags(text: str) -> str:
    for tag in GROUNDING_TAGS:
        text = text.replace(tag, "")
    return no_remote_images(text)


def no_remote_images(text: str) -> str:
    """Model output is untrusted: an image in it would make every viewer's browser fetch a URL
    the model chose. Markdown images become links, and <img> tags are shown as text."""
    text = MARKDOWN_IMAGE.sub(r"[\1](", text)
    return HTML_IMAGE.sub("&lt;", text)


MARKDOWN_IMAGE = re.compile(r"!\[([^\]]*)\]\(")
HTML_IMAGE = re.compile(r"<(?=img\b)", re.IGNORECASE)


def stats_line(summary: str) -> str:
    """The small line under an answer: tokens, time to first token, tokens/s."""
    return f"\n\n<sub>{summary}</sub>"
