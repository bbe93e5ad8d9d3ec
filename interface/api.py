"""The named API endpoints' shared parts: hidden inputs for the common parameters, streaming.

Every endpoint takes its media and question, then the same optional parameters by name:
`history`, `system_prompt`, `reasoning`, `answer_style`, `max_new_tokens`, `temperature`,
`top_p`, `top_k`, `repetition_penalty`, `max_tiles`, `model`; each streams the answer so far.
Every endpoint's last output is `thinking`: a thinking model's thinking, apart from the answer
("" when it has none).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import re
from collections.abc import Callable

import gradio as gr
from gradio_client.utils import is_valid_file

from interface.conversation import thinking_and_answer, to_conversation
from interface.failures import failure, refusals
from interface.queueing import MODEL_QUEUE, ResultReader, client_limit_validator
from interface.settings import SETTING_NAMES, default_system_prompt, make_settings
from interface.streaming import asked_to_think, stream_answer
from model_backend.base import Backend, GenerationSettings
from model_backend.errors import InputError
from model_backend.styles import ANSWER_STYLES, DEFAULT_STYLE, normalize_style
from model_backend.types import SETTING_LIMITS

# The settings in the API's own order, max_new_tokens first (kept stable for clients that pass
# arguments by position); names and defaults are GenerationSettings'.
API_SETTINGS = ["max_new_tokens", *(name for name in SETTING_NAMES if name != "max_new_tokens")]
# `model` comes last: it was added after the others.
COMMON_NAMES = ["history", "system_prompt", "reasoning", "answer_style", *API_SETTINGS, "model"]
# What the UI shows as a warning (old turns left out for length) starts the API's answer, one
# paragraph each; an answer sent back in `history` loses them again.
NOTICE_MARK = "⚠️ Notice: "
_NOTICES = re.compile(f"^(?:{re.escape(NOTICE_MARK)}[^\n]*\n\n)+")


# What each common parameter means, for the endpoints' docstrings (MCP tools take their
# descriptions from the docstring's Args: section, one line per parameter).
COMMON_DOCS = {
    "history": 'earlier turns, oldest first: [{"role": "user" | "assistant", "content": "text"}] '
    "(text only: media come through this tool's own file parameters; thinking in an answer, "
    'inline <think>...</think> or a "thinking" or "reasoning_content" key, is dropped); '
    "empty: a new conversation.",
    "system_prompt": "the system prompt (default: the model's own).",
    "reasoning": "true: the model reasons before answering: slower, better on questions that "
    "need reasoning. A model with a thinking mode (InternVL3.5) thinks, asked by its documented "
    "thinking system prompt (the thinking comes back apart, in `thinking`); others get InternVL "
    "2.5 MPO's chain-of-thought prompt (steps, then 'Final answer: ...').",
    "answer_style": f"how to answer: {', '.join(ANSWER_STYLES)} (default {DEFAULT_STYLE}).",
    **{
        name: f"{limit.label}, {limit.low:g} to {limit.high:g} "
        f"(default {getattr(GenerationSettings(), name):g})."
        for name, limit in SETTING_LIMITS.items()
    },
}
COMMON_DOCS["max_tiles"] = (
    f"{COMMON_DOCS['max_tiles'][:-1]}: each image is cut into up to this many 448-pixel tiles "
    f"(more: finer detail, slower)."
)
# Every endpoint's last output, and its line in the docstring's Returns:.
THINKING_DOC = (
    "    thinking: the model's thinking before its answer (a thinking model, e.g. InternVL3.5 "
    "with reasoning on, or an engine's reasoning_content); empty when it did not think. Never "
    "part of the answer."
)
# Gradio's MCP server calls the app through its own client, which sends this header.
MCP_CALLER = ("x-gradio-user", "mcp")


def endpoint_docstring(description: str, models: list[str], default_model: str) -> str:
    """An endpoint's docstring: the tab's `description` (what the endpoint does, an Args:
    section with a line per own parameter, a Returns: section) with a line per common
    parameter added to its Args:, and the `thinking` output's to its Returns:."""
    head, returns_header, returns = description.partition("Returns:")
    returns_header = returns_header or "Returns:"  # the thinking output's line needs one
    if "Args:" not in head:
        head = head.rstrip() + "\nArgs:\n"
    model_doc = f"the model to answer with: one of {', '.join(models)} (empty: {default_model})."
    docs = {**COMMON_DOCS, "model": model_doc}
    common = "".join(f"    {name}: {docs[name]}\n" for name in COMMON_NAMES)
    return f"{head.rstrip()}\n{common}{returns_header}{returns.rstrip()}\n{THINKING_DOC}"


def for_mcp(values, results: list) -> object:
    """The outputs as Gradio's MCP server should pass them on: it writes a JSON output (a list
    or dict) as Python's repr, so those go as JSON text (a JSON string, which gr.JSON keeps)."""
    values = values if isinstance(values, tuple) else (values,)
    values = tuple(
        json.dumps(json.dumps(value)) if isinstance(result, gr.JSON) else value
        for value, result in zip(values, results, strict=True)
    )
    return values if len(values) > 1 else values[0]


def history_input() -> gr.JSON:
    """The `history` input: a gr.JSON whose API type is a valid JSON schema (gr.JSON's own,
    {"type": {}}, is not one: MCP clients then refuse every call of the tool)."""
    component = gr.JSON(label="history")
    component.api_info = lambda: {
        "type": "array",
        "items": {"type": "object"},
        "description": 'a list of {"role": "user" | "assistant", "content": "text"}',
    }
    return component


def with_notices(text: str, notices: list[str]) -> str:
    return "".join(f"{NOTICE_MARK}{notice}\n\n" for notice in notices) + text


def without_notices(text: str) -> str:
    return _NOTICES.sub("", text)


def common_inputs(system_prompt: str) -> list:
    """Hidden components for the parameters every endpoint shares (names as above)."""
    defaults = GenerationSettings()
    return [
        history_input(),
        gr.Textbox(system_prompt, label="system_prompt"),
        gr.Checkbox(False, label="reasoning"),
        gr.Textbox(DEFAULT_STYLE, label="answer_style"),
        *(gr.Number(getattr(defaults, name), label=name) for name in API_SETTINGS),
        gr.Textbox("", label="model"),  # empty: the backend's default model
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
    present: Callable[[str, dict, bool], object] = lambda text, own, final: text,
) -> None:
    """A named, streaming endpoint with no UI of its own.

    Its parameters are the labels of `own_inputs()` (the endpoint's media and question) followed
    by the common ones; `build_turns(**own, history=...)` makes the conversation, and
    `present(answer so far, own, final)` what each streamed output of `outputs()` is (the answer
    alone, notices first); when it left something out while the answer streamed
    (`own["stale"]`), it is called once more with final=True. The thinking so far follows them,
    as the last output.
    """
    with gr.Column(visible=False):
        own_components = own_inputs()
        inputs = [*own_components, *common_inputs(system_prompt)]
        results = [*outputs(), gr.Textbox(label="thinking")]
        trigger = gr.Button()
    own_names = [component.label for component in own_components]
    own_file_types = take_file_types(own_components)
    names = [*own_names, *COMMON_NAMES]

    def endpoint(request: gr.Request, *values):
        given = dict(zip(names, values, strict=True))
        own = {name: given[name] for name in own_names}
        headers = getattr(request, "headers", None) or {}
        mcp = headers.get(MCP_CALLER[0]) == MCP_CALLER[1]

        def show(answer: str, thinking: str, final: bool) -> tuple:
            shown = present(answer, own, final)
            values = (*(shown if isinstance(shown, tuple) else (shown,)), thinking)
            return for_mcp(values, results) if mcp else values

        def build() -> list[dict]:
            for name, file_types in own_file_types.items():
                check_file_types(own[name], file_types)
            return build_turns(**own, history=given["history"])

        step = None
        for step in answer_request(
            backend,
            build,
            given["system_prompt"],
            given["reasoning"],
            given["answer_style"],
            tuple(given[name] for name in SETTING_NAMES),
            concurrency_limit,
            request,
            model=given["model"] or None,
        ):
            yield show(*step, False)
        if step is not None and own.get("stale"):
            yield show(*step, True)

    # gradio_client names the parameters, and tells required from optional, by the function's
    # signature: the media and the question are required, the rest default to their inputs'.
    # Gradio passes the request to the parameter annotated gr.Request and leaves it out of
    # the API.
    parameters = [
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)
    ]
    for index, (name, component) in enumerate(zip(names, inputs, strict=True)):
        default = inspect.Parameter.empty if index < 2 else component.value
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
        )
    endpoint.__signature__ = inspect.Signature(parameters)
    endpoint.__name__ = api_name
    # Gradio's API page shows the docstring's first part; its MCP server makes the tool's
    # description and parameter descriptions from all of it.
    endpoint.__doc__ = endpoint_docstring(
        description, backend.models or [backend.info.model], backend.info.model
    )
    trigger.click(
        endpoint,
        inputs,
        results,
        api_name=api_name,
        concurrency_id=MODEL_QUEUE,
        concurrency_limit=concurrency_limit,
        validator=client_limit_validator(len(inputs)),
    )


def take_file_types(components: list) -> dict[str, list[str]]:
    """The file types of the File inputs, by label, which the endpoint then checks itself.

    Gradio checks them while reading the inputs, which it also does to validate a request
    before queuing it; a wrong file would then reach gradio_client as a bare HTTP 400.
    """
    taken = {}
    for component in components:
        if isinstance(component, gr.File) and component.file_types:
            taken[component.label] = component.file_types
            component.file_types = None
    return taken


def check_file_types(files: str | list[str] | None, file_types: list[str]) -> None:
    """Refuse, with Gradio's own message, a file that is not of `file_types`."""
    for path in [files] if isinstance(files, str) else files or []:
        if not is_valid_file(path, file_types):
            raise InputError(
                f"Invalid file type. Please upload a file that is one of these formats: "
                f"{file_types}"
            )


def own_system_prompt(backend: Backend, model: str | None) -> str:
    """The model's own default system prompt (None: the default model's)."""
    return default_system_prompt(backend.describe(model))


def answer_request(
    backend: Backend,
    build_turns: Callable[[], list[dict]],
    system_prompt: str,
    reasoning: bool,
    answer_style: str,
    settings_values: tuple,
    concurrency_limit: int = 1,
    request: gr.Request | None = None,
    model: str | None = None,
):
    """Check an API request and stream (answer so far, thinking so far) (with `model`, None:
    the default); user errors end as a clean gr.Error.

    `build_turns()` returns the whole conversation (history + the new question, media attached).
    Notices (old turns left out) start the answer.
    """
    with refusals():
        try:
            settings = make_settings(*settings_values)
            turns = build_turns()
            for turn in turns:
                if turn["role"] == "assistant":
                    turn["text"] = without_notices(turn["text"])
            turns[-1].update(reasoning=bool(reasoning), answer_style=normalize_style(answer_style))
            if model and system_prompt == own_system_prompt(backend, None):
                # Left at the default model's own prompt: the chosen model's own instead, as
                # the UI's menu does (their templates may differ).
                system_prompt = own_system_prompt(backend, model)
            conversation = to_conversation(turns, system_prompt)
            conversation.check()
            thinking_mode = asked_to_think(backend, model, reasoning)
        except InputError:
            raise
        except (TypeError, ValueError, ArithmeticError) as error:  # e.g. a number sent as null
            raise InputError(f"Invalid parameter: {error}") from None
    notices: list[str] = []
    reader = ResultReader(request)
    steps = stream_answer(
        backend,
        conversation,
        settings,
        model=model,
        on_notice=notices.append,
        concurrency_limit=concurrency_limit,
        check_media=True,
    )
    try:
        with contextlib.closing(steps):  # an error below stops the model at once
            for text, stats, _seconds in steps:
                reader.check()
                thinking, answer = thinking_and_answer(text, thinking_mode, stats is not None)
                yield with_notices(answer, notices), thinking
    except Exception as error:
        raise failure(error) from None
