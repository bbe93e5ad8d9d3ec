"""The whole app: a header and one tab per way of chatting."""

from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from interface import chat
from interface.chat import MODEL_QUEUE
from interface.grounding_chat import build_grounding_tab
from interface.image_chat import build_image_chat_tab
from interface.multi_image_chat import DEFAULT_MAX_IMAGES, build_multi_image_chat_tab
from interface.video_chat import build_video_chat_tab
from model_backend.base import Backend, GenerationSettings
from model_backend.errors import InputError, ModelLoadError
from model_backend.prompt import DEFAULT_SYSTEM_PROMPT

TITLE = "InternVL 2.5 demo"
UPLOADS_KEPT_S = 6 * 3600  # a conversation idle for longer must upload its images again
CSS = """
#header-note { font-size: 0.9em; opacity: 0.85; }
.message sub { opacity: 0.65; }
.message img { max-height: 260px; width: auto; }
"""


@dataclass(frozen=True)
class UIOptions:
    """What the UI needs to know besides the backend."""

    defaults: GenerationSettings = field(default_factory=GenerationSettings)
    system_prompt: str | None = None  # None: the checkpoint's own (backend.info.system_prompt)
    concurrency_limit: int = 1  # generations at once (the model queue is shared by all tabs)
    max_images: int = DEFAULT_MAX_IMAGES  # per conversation, in the multi-image tab
    jobs_per_address: int = chat.MAX_JOBS_PER_ADDRESS  # requests one address may have queued


def header_markdown(backend: Backend) -> str:
    info = backend.info
    lines = [f"# {TITLE}", f"Model: `{info.model}` · {info.kind} · {info.device}".rstrip(" ·")]
    if info.random_weights:
        lines.append(
            "⚠️ **This checkpoint has random weights** (written by `python -m model_backend.tiny`):"
            " everything works, but the answers are noise. Start the app with a real model, for"
            " example `python app.py --model OpenGVLab/InternVL2_5-2B-MPO-hf`."
        )
    return "\n\n".join(lines)


def add_model_choice(backend: Backend, header: gr.Markdown) -> None:
    """A model dropdown: the local backend swaps checkpoints (one in memory at a time), a remote
    one picks among what the engine serves. The choice applies to everyone using the demo."""
    choice = gr.Dropdown(
        backend.models, value=backend.info.model, label="Model", elem_id="model-choice"
    )

    def switch(model: str, progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
        progress(0, desc=f"Loading {model} (the previous model is freed first)…")
        try:
            backend.select_model(model)
        except (InputError, ModelLoadError) as error:
            raise gr.Error(str(error), print_exception=False) from None
        return header_markdown(backend)

    choice.change(
        switch,
        choice,
        header,
        concurrency_id=MODEL_QUEUE,
        api_visibility="private",
    )


def build_demo(backend: Backend, options: UIOptions | None = None) -> gr.Blocks:
    """Build the Gradio app around a backend (the caller queues and launches it)."""
    options = options or UIOptions()
    chat.MAX_JOBS_PER_ADDRESS = options.jobs_per_address  # one setting for the whole process
    # Uploads and served copies older than UPLOADS_KEPT_S are deleted (checked hourly), so
    # Gradio's temp folder cannot grow for as long as the app runs.
    with gr.Blocks(title=TITLE, fill_width=True, delete_cache=(3600, UPLOADS_KEPT_S)) as demo:
        header = gr.Markdown(header_markdown(backend), elem_id="header-note")
        if len(backend.models) > 1:
            add_model_choice(backend, header)
        system_prompt = options.system_prompt
        if system_prompt is None:
            system_prompt = backend.info.system_prompt or DEFAULT_SYSTEM_PROMPT
        common = (backend, options.defaults, system_prompt, options.concurrency_limit)
        with gr.Tabs():
            with gr.Tab("Image chat", id="image-chat"):
                build_image_chat_tab(*common)
            with gr.Tab("Multi-image chat", id="multi-image"):
                build_multi_image_chat_tab(*common, max_images=options.max_images)
            with gr.Tab("Video chat", id="video-chat"):
                build_video_chat_tab(*common)
            with gr.Tab("Grounding", id="grounding"):
                build_grounding_tab(*common)
    return demo
