"""How a failed request reaches the user, for the chat panel and the API alike.

Gradio shows the user only a gr.Error's text (anything else is a bare "Error"), so every
refusal and failure ends as one, raised `from None` (its traceback is of no use to the user).
The interface's own messages are translated (interface.i18n); the backend's stay in English.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import gradio as gr

from interface.i18n import translate
from interface.streaming import user_message
from model_backend.errors import GenerationError, InputError

log = logging.getLogger(__name__)


def failure(error: Exception) -> gr.Error:
    """The gr.Error telling the user that a request failed. Call it inside `except`: an
    unexpected error (a bug, not the user's input nor a known failure) is logged with its
    traceback first."""
    if not isinstance(error, InputError | GenerationError):
        log.exception("generation failed")
    return gr.Error(translate(user_message(error)), print_exception=False)


@contextmanager
def refusals() -> Iterator[None]:
    """An InputError raised inside (input the user can fix) reaches them as a gr.Error."""
    try:
        yield
    except InputError as error:
        raise gr.Error(translate(str(error)), print_exception=False) from None
