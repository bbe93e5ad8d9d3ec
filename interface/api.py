"""The named API endpoints' shared parts: hidden inputs for the common parameters, streaming.

Every endpoint takes its media and question, then the same optional parameters by name:
`history`, `system_prompt`, `reasoning`, `answer_style`, `max_new_tokens`, `temperature`,
`top_p`, `top_k`, `repetition_penalty`, `max_tiles`; each streams the answer so far.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable

import gradio as gr

from interface.chat import MODEL_QUEUE, stream_answer, user_message
from interface.conversation import to_conversation
from interface.settings import SETTING_NAMES, make_settings
from model_backend.base import Backend, GenerationSettings
from model_backend.errors import GenerationError, InputError
from model_backend.styles import DEFAULT_STYLE, normalize_style

log = logging.getLogger(__name__)


# The API's own order (kept stable for clients that pass arguments by position).
API_SETTINGS = [
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "max_tiles",
]
COMMON_NAMES = ["history", "system_prompt", "reasoning", "answer_style", *API_SETTINGS]


def common_inputs(system_prompt: str) -> list:
    """Hidden components for the parameters every endpoint shares (names as above)."""
    defaults = GenerationSettings()
    return [
        gr.JSON(label="history"),
        gr.Textbox(system_prompt, label="system_prompt"),
        gr.Checkbox(False, label="reasoning"),
        gr.Textbox(DEFAULT_STYLE, label="answer_style"),
        *(gr.Number(getattr(defaults, name), label=name) for name in API_SETTINGS),
    ]


def register_endpoint(
    api_name: str,
    backend: Backend,
    build_turns: Callable[..., list[dict]],
    own_inputs: Callable[[], list],
    system_prompt: str,
    concurrency_limit: int,
    description: str,
    outputs: Callable[[], list] = lambda: [gr.Textbox(label="answer")],
    present: Callable[[str, dict], object] = lambda text, own: text,
) -> None:
    """A named, streaming endpoint with no UI of its own.

    Its parameters are the labels of `own_inputs()` (the endpoint's media and question) followed
    by the common ones; `build_turns(**own, history=...)` makes the conversation, and
    `present(answer so far, own)` what each streamed output is.
    """
    with gr.Column(visible=False):
        own_components = own_inputs()
        inputs = [*own_components, *common_inputs(system_prompt)]
        results = outputs()
        trigger = gr.Button()
    own_names = [component.label for component in own_components]
    names = [*own_names, *COMMON_NAMES]

    def endpoint(*values):
        given = dict(zip(names, values, strict=True))
        own = {name: given[name] for name in own_names}
        for text in answer_request(
            backend,
            lambda: build_turns(**own, history=given["history"]),
            given["system_prompt"],
            given["reasoning"],
            given["answer_style"],
            tuple(given[name] for name in SETTING_NAMES),
        ):
            yield present(text, own)

    # gradio_client names the parameters, and tells required from optional, by the function's
    # signature: the media and the question are required, the rest default to their inputs'.
    parameters = []
    for index, (name, component) in enumerate(zip(names, inputs, strict=True)):
        default = inspect.Parameter.empty if index < 2 else component.value
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
        )
    endpoint.__signature__ = inspect.Signature(parameters)
    endpoint.__name__ = api_name
    endpoint.__doc__ = description
    trigger.click(
        endpoint,
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
