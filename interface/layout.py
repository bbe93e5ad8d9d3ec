"""The whole app: a header and one tab per way of chatting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gradio as gr

from interface import queueing
from interface.chat import HIDDEN
from interface.compare import build_compare_tab
from interface.document_chat import build_document_chat_tab
from interface.failures import refusals
from interface.grounding_chat import build_grounding_tab
from interface.history import History
from interface.i18n import english, language_switch, localized, localized_by, translate
from interface.image_chat import build_image_chat_tab
from interface.multi_image_chat import DEFAULT_MAX_IMAGES, build_multi_image_chat_tab
from interface.preferences import PreferenceStore
from interface.settings import default_system_prompt
from interface.video_chat import build_video_chat_tab
from model_backend.base import Backend, BackendInfo, GenerationSettings
from model_backend.errors import InputError, ModelLoadError

TITLE = "InternVL 2.5 demo"
UPLOADS_KEPT_S = 6 * 3600  # a conversation idle for longer must upload its images again
CSS = """
#header-note { font-size: 0.9em; opacity: 0.85; }
.message sub { opacity: 0.65; }
.message img { max-height: 260px; width: auto; }
.history-thumbs img { height: 64px; width: auto; margin: 0 4px 0 0; border-radius: 4px; }
.history-note { font-size: 0.85em; opacity: 0.8; }
"""


@dataclass(frozen=True)
class UIOptions:
    """What the UI needs to know besides the backend."""

    defaults: GenerationSettings = field(default_factory=GenerationSettings)
    system_prompt: str | None = None  # None: the checkpoint's own (backend.info.system_prompt)
    concurrency_limit: int = 1  # generations at once (the model queue is shared by all tabs)
    max_images: int = DEFAULT_MAX_IMAGES  # per conversation, in the multi-image tab
    jobs_per_address: int = queueing.MAX_JOBS_PER_ADDRESS  # requests one address may have queued
    feedback_dir: str | None = None  # where votes become preference pairs; None: nothing kept


def header_markdown(info: BackendInfo, say: Callable[[str], str] = english) -> str:
    """The page's header: the title and the model answering in this session (`say` gives each
    text in the reader's language: see interface.i18n)."""
    details = f" · {info.kind} · {info.device}".rstrip(" ·")
    lines = [
        f"# {TITLE}",
        say("Model: `{model}`{details}").format(model=info.model, details=details),
    ]
    if info.random_weights:
        lines.append(
            say(
                "⚠️ **This checkpoint has random weights** (written by `python -m"
                " model_backend.tiny`): everything works, but the answers are noise. Start the app"
                " with a real model, for example `python app.py --model"
                " OpenGVLab/InternVL2_5-2B-MPO-hf`."
            )
        )
    return "\n\n".join(lines)


def feedback_markdown(folder: str, say: Callable[[str], str] = english) -> str:
    """What the page says when votes are kept: plainly, near the header."""
    return say(
        "🗳️ **Votes are kept on this server.** When you vote in the Compare tab, or like one of two"
        " answers to a question (after Regenerate), the question, both answers and the images or"
        " video they concern are saved on this server (in `{folder}`) as preference data for"
        " training models. Nothing is kept for answers you do not vote on."
    ).format(folder=folder)


def model_choice(backend: Backend) -> gr.Dropdown:
    """The model menu: it chooses the model of this browser session only (a local backend
    loads it beside the others when memory allows; a remote one picks among what the engine
    serves)."""
    return gr.Dropdown(
        backend.models, value=backend.info.model, label=localized("Model"), elem_id="model-choice"
    )


def prompts_after_switch(prompts: list[str], old_default: str, new_default: str) -> list[str]:
    """The tabs' system prompts once the model changed: the old model's own default becomes the
    new model's (their templates may differ); a prompt the user wrote stays."""
    return [new_default if prompt == old_default else prompt for prompt in prompts]


def wire_model_choice(
    backend: Backend,
    choice: gr.Dropdown,
    session_model: gr.State,
    header: gr.Markdown,
    prompts: list[gr.Textbox],
) -> None:
    """The menu switches `session_model`, the header and the default system prompts of this
    session; a model that cannot be loaded leaves the session on its model, menu included."""

    def switch(model: str, previous: str, *values: str, progress=gr.Progress()):  # noqa: B008
        loading = "Loading {model} (it may take a few minutes the first time)…"
        progress(0, desc=translate(loading, model=model))
        with refusals():
            try:
                info = backend.ensure_model(model)
            except ModelLoadError as error:  # a checkpoint that fails to load
                raise InputError(str(error)) from None
        old_default = default_system_prompt(backend.describe(previous))
        new = prompts_after_switch(list(values), old_default, default_system_prompt(info))
        return {
            session_model: model,
            header: header_markdown(info, translate),
            **dict(zip(prompts, new, strict=True)),
        }

    # `select`, not `change`: putting the menu back after a failure must not switch again
    # (and `input` comes twice for one choice).
    switched = choice.select(
        switch,
        [choice, session_model, *prompts],
        [session_model, header, *prompts],
        concurrency_id=queueing.MODEL_LOADS,
        concurrency_limit=1,
        **HIDDEN,
    )
    switched.failure(lambda model: model, session_model, choice, queue=False, **HIDDEN)


def system_prompt_boxes(demo: gr.Blocks) -> list[gr.Textbox]:
    """Every tab's system prompt box (their elem_ids end in -system-prompt)."""
    return [
        block
        for block in demo.blocks.values()
        if isinstance(block, gr.Textbox) and (block.elem_id or "").endswith("-system-prompt")
    ]


def list_saved_conversations(demo: gr.Blocks, histories: list[History]) -> None:
    """Each tab's History lists what this browser kept, once the page has opened."""
    for history in histories:
        demo.load(history.load, history.store, history.outputs, queue=False, **HIDDEN)


def build_demo(backend: Backend, options: UIOptions | None = None) -> gr.Blocks:
    """Build the Gradio app around a backend (the caller queues and launches it)."""
    options = options or UIOptions()
    queueing.MAX_JOBS_PER_ADDRESS = options.jobs_per_address  # one setting for the whole process
    store = PreferenceStore(options.feedback_dir) if options.feedback_dir else None
    # Uploads and served copies older than UPLOADS_KEPT_S are deleted (checked hourly), so
    # Gradio's temp folder cannot grow for as long as the app runs.
    with gr.Blocks(title=TITLE, fill_width=True, delete_cache=(3600, UPLOADS_KEPT_S)) as demo:
        with gr.Row(equal_height=False):
            header = gr.Markdown(
                localized_by(lambda say: header_markdown(backend.info, say)), elem_id="header-note"
            )
            language_switch()
        if store is not None:
            note = localized_by(lambda say: feedback_markdown(options.feedback_dir, say))
            gr.Markdown(note, elem_id="feedback-note")
        choice = model_choice(backend) if len(backend.models) > 1 else None
        session_model = gr.State(backend.info.model)  # this browser session's model
        system_prompt = options.system_prompt
        if system_prompt is None:
            system_prompt = default_system_prompt(backend.info)
        common = (backend, options.defaults, system_prompt, options.concurrency_limit)
        shared = {"model": session_model, "feedback": store}
        with gr.Tabs():
            with gr.Tab(localized("Image chat"), id="image-chat"):
                histories = [build_image_chat_tab(*common, **shared)]
            with gr.Tab(localized("Multi-image chat"), id="multi-image"):
                histories.append(
                    build_multi_image_chat_tab(*common, max_images=options.max_images, **shared)
                )
            with gr.Tab(localized("Document chat"), id="document-chat"):
                histories.append(build_document_chat_tab(*common, **shared))
            with gr.Tab(localized("Video chat"), id="video-chat"):
                histories.append(build_video_chat_tab(*common, **shared))
            with gr.Tab(localized("Grounding"), id="grounding"):
                histories.append(build_grounding_tab(*common, **shared))
            with gr.Tab(localized("Compare"), id="compare"):
                build_compare_tab(*common, **shared)
        list_saved_conversations(demo, histories)
        if choice is not None:
            prompts = system_prompt_boxes(demo)
            wire_model_choice(backend, choice, session_model, header, prompts)
    return demo
