"""The named API endpoints' shared parts: hidden inputs for the common parameters, streaming.

Every endpoint takes its media and question, then the same optional parameters by name:
`history`, `system_prompt`, `reasoning`, `answer_style`, `max_new_tokens`, `temperature`,
`top_p`, `top_k`, `repetition_penalty`, `max_tiles`; each streams the answer so far.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import gradio as gr

from interface.chat import MODEL_QUEUE, stream_answer, user_message
from interface.conversation import to_conversation
from interface.settings import make_settings
from model_backend.base import Backend, GenerationSettings
from model_backend.errors import GenerationError, InputError
from model_backend.styles import DEFAULT_STYLE, normalize_style

log = logging.getLogger(__name__)


def common_inputs(system_prompt: str) -> list:
    """Hidden components for the parameters every endpoint shares (names as above)."""
    defaults = GenerationSettings()
    return [
        gr.JSON(label="history"),
        gr.Textbox(system_prompt, label="system_prompt"),
        gr.Checkbox(False, label="reasoning"),
        gr.Textbox(DEFAULT_STYLE, label="answer_style"),
        gr.Number(defaults.max_new_tokens, label="max_new_tokens"),
        gr.Number(defaults.temperature, label="temperature"),
        gr.Number(defaults.top_p, label="top_p"),
        gr.Number(defaults.top_k, label="top_k"),
        gr.Number(defaults.repetition_penalty, label="repetition_penalty"),
        gr.Number(defaults.max_tiles, label="max_tiles"),
    ]


def register_endpoint(
    api_name: str,
    fn: Callable,
    own_inputs: Callable[[], list],
    system_prompt: str,
    concurrency_limit: int,
    outputs: Callable[[], list] = lambda: [gr.Textbox(label="answer")],
) -> None:
    """A named endpoint with no UI: hidden inputs (the endpoint's own, then the common ones)."""
    with gr.Column(visible=False):
        inputs = [*own_inputs(), *common_inputs(system_prompt)]
        results = outputs()
        trigger = gr.Button()
    trigger.click(
        fn,
        inputs,
        results,
        api_name=api_name,
        concurrency_id=MODEL_QUEUE,
        concurrency_limit=concurrency_limit,
    )


def answer_request(
    backend: Backend,
    build_turns: Callable[[], list[dict]],
    system_prompt: str,
    reasoning: bool,
    answer_style: str,
    settings_values: tuple,
):
    """Check an API request and stream its answer; user errors end as a clean gr.Error.

    `build_turns()` returns the whole conversation (history + the new question, media attached).
    """
    try:
        turns = build_turns()
        turns[-1].update(reasoning=bool(reasoning), answer_style=normalize_style(answer_style))
        settings = make_settings(*settings_values)
        conversation = to_conversation(turns, system_prompt)
        conversation.check()
        for path in conversation.image_paths:
            backend.check_image(path)
    except InputError as error:
        raise gr.Error(str(error), print_exception=False) from None
    except (TypeError, ValueError) as error:  # e.g. a number parameter sent as null
        raise gr.Error(f"Invalid parameter: {error}", print_exception=False) from None
    try:
        for text, _stats in stream_answer(backend, conversation, settings):
            yield text
    except Exception as error:
        if not isinstance(error, InputError | GenerationError):
            log.exception("generation failed")
        raise gr.Error(user_message(error), print_exception=False) from None
