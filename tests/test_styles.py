"""Answer styles, the MPO reasoning wrapper and final-answer splitting (pure Python, fast)."""

from __future__ import annotations

import pytest

from model_backend.errors import InputError
from model_backend.styles import (
    ANSWER_STYLES,
    apply_answer_style,
    normalize_style,
    split_final_answer,
    style_question,
    wrap_reasoning,
)

# Written out by hand from the MPO paper, not built from the module's constants.
MPO_WRAPPED_WHAT = (
    "Your task is to answer the question below. Give step by step reasoning before you answer, "
    'and when you\'re ready to answer, please use the format "Final answer: .."\n\n'
    "Question:\n\n"
    "What is in the image?"
)


def test_wrapper_is_exactly_the_mpo_prompt():
    assert wrap_reasoning("What is in the image?") == MPO_WRAPPED_WHAT


def test_wrapper_strips_the_question_and_is_idempotent():
    assert wrap_reasoning("  What is in the image?\n") == MPO_WRAPPED_WHAT
    assert wrap_reasoning(MPO_WRAPPED_WHAT) == MPO_WRAPPED_WHAT


def test_styles_in_ui_order():
    assert list(ANSWER_STYLES) == ["Default", "Yes/No", "Multiple choice", "Short", "Detailed"]


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("Default", "Is it red?"),
        ("Yes/No", "Is it red? Please answer with 'Yes' or 'No'."),
        ("Multiple choice", "Is it red? Please select a correct choice."),
        ("Short", "Is it red? Answer concisely."),
        ("Detailed", "Is it red? Provide an extensive response."),
    ],
)
def test_each_style_suffix(style, expected):
    assert apply_answer_style("Is it red?", style) == expected


def test_default_leaves_question_untouched_and_others_strip_trailing_whitespace():
    assert apply_answer_style("Is it red?  \n", "Default") == "Is it red?  \n"
    assert apply_answer_style("Is it red?  \n", "Short") == "Is it red? Answer concisely."


@pytest.mark.parametrize("style", list(ANSWER_STYLES))
def test_apply_answer_style_is_idempotent(style):
    once = apply_answer_style("Is it red?", style)
    assert apply_answer_style(once, style) == once
    if style != "Default":  # Default returns its input untouched, whitespace and all
        assert apply_answer_style(once + "  ", style) == once


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("Default", "Default"),
        ("default", "Default"),
        ("", "Default"),
        (None, "Default"),
        ("Yes/No", "Yes/No"),
        ("yes_no", "Yes/No"),
        ("yes-no", "Yes/No"),
        ("YESNO", "Yes/No"),
        ("Multiple choice", "Multiple choice"),
        ("multiple_choice", "Multiple choice"),
        ("multiple-choice", "Multiple choice"),
        ("short", "Short"),
        (" Short ", "Short"),
        ("detailed", "Detailed"),
        ("DETAILED", "Detailed"),
    ],
)
def test_normalize_style_spellings(spelling, canonical):
    assert normalize_style(spelling) == canonical
    assert canonical in ANSWER_STYLES


def test_api_spelling_works_in_apply():
    assert apply_answer_style("Is it red?", "yes_no") == (
        "Is it red? Please answer with 'Yes' or 'No'."
    )


@pytest.mark.parametrize("bad", ["verbose", "yes", "multiple choices", 3])
def test_unknown_style_raises_input_error_listing_valid_names(bad):
    with pytest.raises(InputError) as info:
        normalize_style(bad)
    message = str(info.value)
    for name in ANSWER_STYLES:
        assert name in message
    with pytest.raises(InputError):
        apply_answer_style("Is it red?", bad)


def test_style_question_puts_the_style_inside_the_reasoning_wrapper():
    expected = (
        "Your task is to answer the question below. Give step by step reasoning before you "
        'answer, and when you\'re ready to answer, please use the format "Final answer: .."\n\n'
        "Question:\n\n"
        "Is it red? Please answer with 'Yes' or 'No'."
    )
    assert style_question("Is it red?", True, "yes_no") == expected
    assert style_question(expected, True, "yes_no") == expected  # idempotent


def test_style_question_without_reasoning_is_just_the_style():
    assert style_question("Is it red?", False, "Short") == "Is it red? Answer concisely."
    assert style_question("Is it red?", False, "Default") == "Is it red?"
    assert style_question("Is it red?", True, "Default") == wrap_reasoning("Is it red?")


@pytest.mark.parametrize(
    ("reply", "reasoning", "final"),
    [
        # plain marker
        ("Final answer: B", "", "B"),
        ("The sky is blue.\nFinal answer: B", "The sky is blue.", "B"),
        # markdown bold variants
        ("Step 1.\n**Final answer:** B", "Step 1.", "B"),
        ("Step 1.\n**Final answer**: B", "Step 1.", "B"),
        ("Step 1.\nFinal answer: **B**", "Step 1.", "B"),
        # case-insensitive
        ("Step 1.\nfinal answer: yes", "Step 1.", "yes"),
        ("Step 1.\nFINAL ANSWER: Yes", "Step 1.", "Yes"),
        # several markers: the last one wins
        (
            "Final answer: A\nWait, recheck.\nFinal answer: C",
            "Final answer: A\nWait, recheck.",
            "C",
        ),
        # "Final answer" mid-line counts
        ("So the Final answer: 42", "So the", "42"),
        # "Answer:" fallback only at line start
        ("Thinking.\nAnswer: A", "Thinking.", "A"),
        ("Thinking.\n  **Answer:** A", "Thinking.", "A"),
        ("The Answer: is not a marker mid-line", "The Answer: is not a marker mid-line", None),
        # "Final answer:" beats a later "Answer:" line
        ("Final answer: B\nAnswer: C", "", "B\nAnswer: C"),
        # no marker / empty / marker without a colon
        ("It is a cat.", "It is a cat.", None),
        ("", "", None),
        ("The final answer is B", "The final answer is B", None),
        # marker at the very end: seen, nothing after it yet -> ""
        ("Reasoning here.\nFinal answer:", "Reasoning here.", ""),
        ("Reasoning here.\n**Final answer:**  \n", "Reasoning here.", ""),
        # multi-line final answers keep their lines
        ("Steps.\nFinal answer:\n- red\n- blue\n", "Steps.", "- red\n- blue"),
        ("Steps.\nFinal answer: Line one.\nLine two.", "Steps.", "Line one.\nLine two."),
    ],
)
def test_split_final_answer_table(reply, reasoning, final):
    assert split_final_answer(reply) == (reasoning, final)


def test_no_marker_returns_text_as_given():
    assert split_final_answer("  partial reasoning \n") == ("  partial reasoning \n", None)


@pytest.mark.parametrize(
    "reply",
    [
        "First, the red ball is left.\nSo it is B.\nFinal answer: The red ball.",
        "First, the red ball is left.\nSo it is B.\n**Final answer:** The red ball.",
        "First, the red ball is left.\nSo it is B.\n**Final answer**: The red ball.",
    ],
)
def test_split_final_answer_on_streaming_prefixes(reply):
    marker_end = reply.index(":") + 1
    while reply[marker_end] == "*":
        marker_end += 1
    for cut in range(len(reply) + 1):
        prefix = reply[:cut]
        reasoning, final = split_final_answer(prefix)
        colon_reached = ":" in prefix
        if not colon_reached:
            assert (reasoning, final) == (prefix, None), prefix
        else:
            assert reasoning == "First, the red ball is left.\nSo it is B.", prefix
            assert final is not None
            assert "The red ball.".startswith(final), (prefix, final)
    assert split_final_answer(reply)[1] == "The red ball."
    assert split_final_answer(reply[:marker_end]) == (
        "First, the red ball is left.\nSo it is B.",
        "",
    )
