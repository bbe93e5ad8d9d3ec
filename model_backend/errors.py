"""Errors a user can cause. The interface turns them into a clear message (gr.Error)."""


class InputError(ValueError):
    """Bad input from the user: a broken file, an empty question, a limit exceeded.

    The message is shown to the user as it is, so it must say what was wrong and what to do.
    """


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message is a paragraph meant for the terminal."""


class GenerationError(RuntimeError):
    """Generation failed for a reason the user can act on (out of memory, engine down, ...).

    The message says what happened and what to try.
    """
