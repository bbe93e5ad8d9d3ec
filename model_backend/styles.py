"""Answer styles and the MPO reasoning prompt for the latest user question. Pure Python.

Answer styles are MMInstruct's four instruction types (Judgement, Multiple-choice, Short VQA,
Long VQA), appended to the question as InternVL 2.5 saw them in training. "Default" changes
nothing.

Reasoning mode wraps the question in the chain-of-thought prompt used to evaluate the -MPO models;
the reply then ends with "Final answer: ..", which `split_final_answer` separates from the
reasoning (also on partial, streaming text).

`style_question` is the one entry point the prompt builder calls for the latest user question:
the answer style goes onto the question first, then the reasoning wrapper goes around the result.
"""

from __future__ import annotations

import re

from model_backend.errors import InputError

# UI/API names -> suffix appended to the question, in the order the UI lists them.
ANSWER_STYLES: dict[str, str] = {
    "Default": "",
    "Yes/No": " Please answer with 'Yes' or 'No'.",
    "Multiple choice": " Please select a correct choice.",
    "Short": " Answer concisely.",
    "Detailed": " Provide an extensive response.",
}
DEFAULT_STYLE = "Default"

# The chain-of-thought prompt of the MPO paper, exactly; `{question}` is the (styled) question.
REASONING_PREFIX = (
    "Your task is to answer the question below. Give step by step reasoning before you answer, "
    'and when you\'re ready to answer, please use the format "Final answer: .."\n\nQuestion:\n\n'
)
REASONING_TEMPLATE = REASONING_PREFIX + "{question}"


def _key(name: str) -> str:
    """Lower case with everything but letters and digits removed: "Yes/No" -> "yesno"."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


# Spellings accepted for each style (compared after `_key`): the UI names, API spellings such as
# "yes_no" or "multiple-choice", and MMInstruct's own type names.
_ALIASES: dict[str, str] = {_key(name): name for name in ANSWER_STYLES}
_ALIASES.update(
    {
        "": "Default",
        "none": "Default",
        "judgement": "Yes/No",
        "judgment": "Yes/No",
        "multiplechoice": "Multiple choice",
        "choice": "Multiple choice",
        "shortvqa": "Short",
        "longvqa": "Detailed",
        "long": "Detailed",
    }
)


def normalize_style(name: str | None) -> str:
    """The canonical `ANSWER_STYLES` key for a UI or API spelling of a style.

    Case and separators (spaces, "_", "-", "/") are ignored; None and "" mean "Default".
    Raises InputError naming the valid styles for anything else.
    """
    if name is None:
        return DEFAULT_STYLE
    if not isinstance(name, str):
        raise InputError(
            f"The answer style must be a string, not {type(name).__name__}. "
            f"Valid styles: {', '.join(ANSWER_STYLES)}."
        )
    canonical = _ALIASES.get(_key(name))
    if canonical is None:
        raise InputError(
            f"Unknown answer style {name!r}. Valid styles: {', '.join(ANSWER_STYLES)} "
            "(case and separators are ignored, e.g. 'yes_no', 'multiple-choice')."
        )
    return canonical


def apply_answer_style(question: str, style: str | None) -> str:
    """The question with the style's instruction appended.

    "Default" returns the question unchanged. Otherwise trailing whitespace is removed first and
    the suffix is appended, unless the question already ends with it (any case), so applying a
    style twice changes nothing. An empty question gets the instruction alone.
    """
    suffix = ANSWER_STYLES[normalize_style(style)]
    if not suffix:
        return question
    stripped = question.rstrip()
    if stripped.lower().endswith(suffix.strip().lower()):
        return stripped
    return (stripped + suffix).lstrip()


def wrap_reasoning(question: str) -> str:
    """The question inside the MPO chain-of-thought prompt (surrounding whitespace removed).

    A question that is already wrapped is returned unchanged, so wrapping twice does nothing.
    """
    question = question.strip()
    if question.startswith(REASONING_PREFIX.strip()):
        return question
    return REASONING_TEMPLATE.format(question=question)


def style_question(question: str, reasoning: bool, style: str | None) -> str:
    """The latest user question as sent to the model: answer style first, then the reasoning
    wrapper around the result (so the style instruction ends up inside the wrapper)."""
    styled = apply_answer_style(question, style)
    return wrap_reasoning(styled) if reasoning else styled


# "Final answer:" anywhere (not glued to a preceding letter), any case, optionally in markdown
# bold: "**Final answer:**", "**Final answer**:", "__Final answer:__". Asterisks/underscores right
# after the colon belong to the marker, so a streaming "**Final answer:*" has an empty answer.
_FINAL_MARKER = re.compile(
    r"(?<![A-Za-z])(?:\*\*|__)?final[ \t]+answer[ \t]*(?:\*\*|__)?[ \t]*:[*_]*",
    re.IGNORECASE,
)
# Fallback: "Answer:" at the start of a line (leading spaces and bold allowed).
_ANSWER_MARKER = re.compile(
    r"^[ \t]*(?:\*\*|__)?answer[ \t]*(?:\*\*|__)?[ \t]*:[*_]*",
    re.IGNORECASE | re.MULTILINE,
)
# A final answer wholly in bold, "**B**", is given without the asterisks.
_BOLD_ANSWER = re.compile(r"\*\*([^*]+)\*\*")


def split_final_answer(text: str) -> tuple[str, str | None]:
    """(reasoning, final answer) of a reply.

    The final answer is the text after the LAST "Final answer:" (any case, optionally bold), or
    failing that after the last line starting with "Answer:"; the reasoning is the text before
    that marker. Both are stripped, and a final answer wholly in bold ("**B**") loses the
    asterisks. A marker with nothing after it yet gives the final answer "" (the marker was
    seen; on streaming text the answer is still to come). Without a marker - including partial
    streaming text that has not reached it - the result is (text, None), text as given.
    """
    matches = list(_FINAL_MARKER.finditer(text)) or list(_ANSWER_MARKER.finditer(text))
    if not matches:
        return text, None
    match = matches[-1]
    reasoning = text[: match.start()].strip()
    final = text[match.end() :].strip()
    bold = _BOLD_ANSWER.fullmatch(final)
    if bold:
        final = bold.group(1).strip()
    return reasoning, final
