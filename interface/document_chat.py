"""The Document chat tab and its `/document_chat` API endpoint: questions about a PDF's pages.

The chosen pages are rendered (model_backend.documents), shown as numbered thumbnails before
the question is sent, and sent as the images of the question, labelled `Page-k` by their number
in the document. A follow-up about the same pages carries no images: the model still sees the
earlier question's pages (rendered once, kept as files).
"""

from __future__ import annotations

import gradio as gr

from interface.api import register_endpoint
from interface.chat import ChatPanel, ChatTab
from interface.conversation import history_to_turns, user_turn
from interface.history import History, restore_notice_box
from interface.i18n import english, localized, localized_by, translate
from interface.preferences import PreferenceStore
from interface.settings import build_settings
from interface.tab_helpers import ADD_A_DOCUMENT, question_text, show_examples
from model_backend.base import Backend, Conversation, GenerationSettings, Turn
from model_backend.documents import (
    MAX_DOCUMENT_BYTES,
    MAX_DOCUMENT_PAGES,
    MAX_PAGES_PER_QUESTION,
    document_info,
    limits_text,
    page_images,
    page_labels,
    parse_pages,
)
from model_backend.errors import InputError
from model_backend.media import image_token_estimate

PDF_TYPES = [".pdf"]


def document_limits(say=english) -> str:
    """limits_text(), in the reader's language (`say`: see interface.i18n)."""
    return say(
        "up to {per_question} pages per question, documents of up to {pages} pages and"
        " {megabytes} MB"
    ).format(
        per_question=MAX_PAGES_PER_QUESTION,
        pages=MAX_DOCUMENT_PAGES,
        megabytes=MAX_DOCUMENT_BYTES // 1024**2,
    )


def pages_hint(say=english) -> str:
    """How to choose pages, and the limits."""
    hint = "Pages like `1-3, 5` (empty: the first {count}). Limits: {limits}."
    return say(hint).format(count=MAX_PAGES_PER_QUESTION, limits=document_limits(say))


def upload_hint(say=english) -> str:
    """What the tab says before a PDF is there."""
    return f"{say('Upload a PDF.')} {pages_hint(say)}"


def tab_placeholder(say=english) -> str:
    return say(
        "**Document chat** · add a PDF, choose the pages, then ask about them; the model sees them"
        " as Page-1, Page-2, … ({limits})."
    ).format(limits=document_limits(say))


def latest_document(turns: list[dict]) -> dict | None:
    return next((t["document"] for t in reversed(turns) if t.get("document")), None)


def document_number(turns: list[dict], key: str) -> int:
    """The document's number in the conversation (from 1, in the order they came): what tells
    the pages of two documents apart (model_backend.documents.page_labels)."""
    keys = list(dict.fromkeys(t["document"]["key"] for t in turns if t.get("document")))
    return keys.index(key) + 1 if key in keys else len(keys) + 1


def document_turn(text: str, path: str, pages_text: str | None, number: int = 1) -> dict:
    """A question carrying the chosen pages of the PDF at `path` (the conversation's document
    `number`), rendered."""
    info = document_info(path)
    pages = parse_pages(pages_text, info.page_count)
    turn = user_turn(text, page_images(path, pages))
    turn["image_labels"] = page_labels(pages, number)
    turn["document"] = {"path": str(path), "key": info.key, "name": info.name, "pages": pages}
    return turn


def collect_document_turn(
    message: dict, turns: list[dict], document: str | None, pages_text: str | None
) -> dict:
    """The question, with the document's pages when they are new to the conversation.

    A follow-up about the same pages of the same document carries none: the model still sees
    the earlier question's pages (whose files are rendered again if they were deleted since).
    """
    text = question_text(message)
    attached = list(message.get("files") or [])
    path = attached[-1] if attached else document
    latest = latest_document(turns)
    if not path and not latest:
        raise InputError(ADD_A_DOCUMENT)
    if path:
        info = document_info(path)
        pages = parse_pages(pages_text, info.page_count)
        if not latest or (info.key, pages) != (latest["key"], latest["pages"]):
            return document_turn(text, path, pages_text, document_number(turns, info.key))
    for turn in turns:  # a follow-up: the pages it relies on must still be there
        if turn.get("document"):
            page_images(turn["document"]["path"], turn["document"]["pages"])
    return user_turn(text)


def attached_document(message: dict | None) -> tuple:
    """A PDF attached in the question box becomes the File box's document (the one the preview
    shows and the next question sends) and leaves the question box, which keeps its text."""
    files = list((message or {}).get("files") or [])
    if not files:
        return gr.skip(), gr.skip()
    question = {"text": message.get("text") or "", "files": []}
    return gr.MultimodalTextbox(value=question), files[-1]


def preview(
    document: str | None, pages_text: str | None, max_tiles: float, turns: list[dict] | None = None
) -> tuple[list, str]:
    """The pages that will be sent, labelled as the model will see them after `turns`, and
    what they cost in image tokens."""
    if not document:
        return [], upload_hint(translate)
    try:
        info = document_info(document)
        pages = parse_pages(pages_text, info.page_count)
        files = page_images(document, pages)
        draft = Conversation((Turn("user", "-", tuple(files)),))
        tiles = image_token_estimate(draft, int(max_tiles))
    except InputError as error:
        return [], f"⚠️ {error}"
    labels = page_labels(pages, document_number(turns or [], info.key))
    gallery = list(zip(files, labels, strict=True))
    per_page = max(1, int(max_tiles) // len(pages))
    page_count = "{count} page" if info.page_count == 1 else "{count} pages"
    summary = "**{name}**: {pages} · sending {count} (up to {per_page} tiles each) → {tiles} tiles."
    return gallery, translate(
        summary,
        name=info.name,
        pages=translate(page_count, count=info.page_count),
        count=len(pages),
        per_page=per_page,
        tiles=sum(tiles),
    ) + f" {pages_hint(translate)}"


def document_chat_turns(document: str | None, question: str, pages: str | None, history=None):
    """API: history + the question carrying the chosen pages of `document`."""
    if not document:
        raise InputError("document is required: pass a PDF with gradio_client.handle_file(path).")
    question = (question or "").strip()
    if not question:  # before rendering anything
        raise InputError("Please type a question.")
    turns = history_to_turns(history)
    turns.append(document_turn(question, document, pages))
    return turns


def build_document_chat_tab(
    backend: Backend,
    defaults: GenerationSettings,
    system_prompt: str,
    concurrency_limit: int,
    model: gr.State | None = None,
    feedback: PreferenceStore | None = None,
) -> History:
    """Document chat: a PDF, the pages to ask about (shown), then questions about them."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            document = gr.File(
                label=localized("PDF document"), file_types=PDF_TYPES, elem_id="document-chat-file"
            )
            pages = gr.Textbox(
                label=localized("Pages"),
                placeholder=localized(
                    "e.g. 1-3, 5 (empty: the first {count})", count=MAX_PAGES_PER_QUESTION
                ),
                elem_id="document-chat-pages",
            )
            gallery = gr.Gallery(
                label=localized("Pages sent with the question"),
                columns=4,
                height=300,
                interactive=False,
                elem_id="document-chat-gallery",
            )
            estimate = gr.Markdown(localized_by(upload_hint), elem_id="document-chat-estimate")
            settings = build_settings(defaults, system_prompt, prefix="document-chat")
            history = History("document-chat")
        with gr.Column(scale=3, min_width=400):
            notice = restore_notice_box("document-chat")
            tab = ChatTab(
                name="document-chat",
                collect_turn=collect_document_turn,
                placeholder=localized_by(tab_placeholder),
                file_types=tuple(PDF_TYPES),
                media_inputs=(document, pages),
                cleared={document: None, pages: "", gallery: []},
            )
            panel = ChatPanel(backend, tab, model, concurrency_limit, feedback=feedback)
    show_examples("document_chat", panel.textbox, document)
    panel.wire(settings)
    history.wire(panel, notice)
    # One document in view: what the gallery shows is what the question sends. `change` is the
    # only event of this box (Gradio 6.31) that comes when a file is attached: `input` never
    # comes, `upload` has no server-side listener, and the app's Content-Security-Policy blocks
    # js= listeners. So it comes at each keystroke too: those replies skip both outputs (a small
    # round trip, the box left alone), and a burst of them is one request at a time, the last.
    # Only the reply to an attachment rewrites the box, with its text as it was then.
    panel.textbox.change(
        attached_document,
        panel.textbox,
        [panel.textbox, document],
        queue=False,
        trigger_mode="always_last",
        show_progress="hidden",
        api_visibility="private",
    )

    # Rendering queues up (a few at a time), and a page asks for only its latest preview.
    gr.on(
        [document.change, pages.submit, pages.blur, settings.max_tiles.release],
        preview,
        [document, pages, settings.max_tiles, panel.state],
        [gallery, estimate],
        concurrency_id="document-preview",
        concurrency_limit=2,
        trigger_mode="always_last",
        api_visibility="private",
    )

    register_endpoint(
        "document_chat",
        backend,
        document_chat_turns,
        lambda: [
            gr.File(label="document", file_types=PDF_TYPES),
            gr.Textbox(label="question"),
            gr.Textbox("", label="pages"),
        ],
        system_prompt,
        concurrency_limit,
        f"Answer a question about pages of a PDF document with InternVL (read it, find a "
        f"figure, summarise a table...), after the earlier turns in `history`; the model sees "
        f"the pages as Page-1, Page-2, ... by their page numbers; the answer streams. Limits: "
        f"{limits_text()}.\n"
        "Args:\n"
        "    document: the PDF (an http(s) URL of the file, or a data: URL with it in base64).\n"
        "    question: what to ask about the pages.\n"
        f"    pages: which pages, like 1-3,5 (empty: the first {MAX_PAGES_PER_QUESTION}).\n"
        "Returns:\n"
        "    answer: the answer alone (text), after a notice if old turns were left out.",
    )
    return history
