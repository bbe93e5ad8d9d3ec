"""Thinking models' replies split into thinking and answer, and InternVL3.5's thinking mode."""

from __future__ import annotations

from dataclasses import replace

import pytest

from model_backend.base import Conversation, Turn
from model_backend.loading import text_model_type
from model_backend.prompt import DEFAULT_SYSTEM_PROMPT, build_prompt, chat_messages
from model_backend.styles import REASONING_PREFIX
from model_backend.thinking import (
    THINK_CLOSE,
    THINK_OPEN,
    THINKING_SYSTEM_PROMPT,
    Reply,
    apply_thinking_mode,
    has_thinking_mode,
    split_thinking,
    strip_thinking,
)

THINKING = "The user asks about the cat. It is orange."
ANSWER = "An orange cat."


def streamed(text: str, **options) -> list[Reply]:
    """What a consumer sees after every character of a reply as it streams in."""
    return [split_thinking(text[:end], **options) for end in range(1, len(text) + 1)]


# -- split_thinking ------------------------------------------------------------------------------


def test_inline_thinking_comes_apart_from_the_answer():
    reply = split_thinking(f"\n<think>\n{THINKING}\n</think>\n\n{ANSWER}\n", final=True)
    assert reply == Reply(thinking=THINKING, answer=ANSWER, thinking_done=True)


def test_a_closing_tag_without_an_opening_one_ends_the_thinking():
    # Engines whose chat template opened the thinking send only its end.
    reply = split_thinking(f"{THINKING}</think>\n\n{ANSWER}")
    assert reply == Reply(thinking=THINKING, answer=ANSWER, thinking_done=True)


def test_a_reply_without_thinking_is_all_answer():
    assert split_thinking(ANSWER) == Reply(thinking=None, answer=ANSWER, thinking_done=True)
    assert split_thinking(ANSWER, final=True) == split_thinking(ANSWER)
    assert split_thinking("") == Reply(thinking=None, answer="", thinking_done=True)


def test_a_think_tag_later_in_the_answer_is_text():
    text = "Models write <think> before they reason and </think> after."
    assert split_thinking(text, final=True) == Reply(None, text, True)
    assert split_thinking("Use the <think> tag.", final=True).thinking is None
    reply = split_thinking(f"<think>{THINKING}</think>{ANSWER} Its tag is <think>.")
    assert reply.answer == f"{ANSWER} Its tag is <think>."


def test_opened_thinking_streams_as_thinking_until_it_closes():
    text = f"{THINKING}</think>\n\n{ANSWER}"
    steps = streamed(text, opened=True)
    before_close = steps[: text.index(THINK_CLOSE)]
    assert all(step.answer == "" and not step.thinking_done for step in before_close)
    assert before_close[-1].thinking == THINKING
    assert steps[-1] == Reply(THINKING, ANSWER, True)


def test_opened_thinking_that_never_came_is_all_answer_at_the_end():
    # The prompt asked for thinking; the model answered straight away.
    assert split_thinking(ANSWER, opened=True) == Reply(ANSWER, "", False)
    assert split_thinking(ANSWER, opened=True, final=True) == Reply(None, ANSWER, True)


def test_partial_tags_are_held_back_while_streaming():
    text = f"<think>{THINKING}</think>\n\n{ANSWER}"
    for step in streamed(text):
        assert "<" not in step.answer and "<" not in (step.thinking or "")
        assert THINKING.startswith(step.thinking or "")
        assert ANSWER.startswith(step.answer)
    assert split_thinking("<thi") == Reply(None, "", True)
    assert split_thinking(f"<think>{THINKING}</th") == Reply(THINKING, "", False)
    assert split_thinking(f"{ANSWER} <") == Reply(None, ANSWER, True)
    # Once the reply has ended nothing is held back.
    assert split_thinking(f"{ANSWER} <", final=True).answer == f"{ANSWER} <"


def test_an_open_tag_alone_is_thinking_that_has_not_started():
    assert split_thinking(THINK_OPEN) == Reply(thinking="", answer="", thinking_done=False)


def test_thinking_cut_off_at_the_end_has_no_answer():
    reply = split_thinking(f"<think>{THINKING}", final=True)
    assert reply == Reply(thinking=THINKING, answer="", thinking_done=True)
    assert split_thinking(f"<think>{THINKING}") == Reply(THINKING, "", False)


def test_thinking_sent_apart_and_inline_shows_once():
    # An engine's reasoning_content (put inline by the remote backend) and the same inline.
    text = f"<think>{THINKING}</think><think>\n{THINKING}\n</think>\n\n{ANSWER}"
    assert split_thinking(text, final=True) == Reply(THINKING, ANSWER, True)
    for step in streamed(text):
        assert THINKING.startswith(step.thinking or "") and ANSWER.startswith(step.answer)


def test_a_second_different_thinking_block_is_kept():
    text = f"<think>First.</think><think>Second.</think>{ANSWER}"
    assert split_thinking(text, final=True) == Reply("First.\n\nSecond.", ANSWER, True)


def test_thousands_of_thinking_blocks_are_split_at_once():
    # An API history may send anything back; only the second block is merged, no deeper.
    text = "<think>a</think>" * 5000 + ANSWER
    assert split_thinking(text, final=True).thinking == "a"
    assert strip_thinking(text).endswith(ANSWER)


def test_a_stray_second_closing_tag_is_dropped():
    text = f"<think>{THINKING}</think></think>{ANSWER}"
    assert split_thinking(text, final=True) == Reply(THINKING, ANSWER, True)


def test_an_empty_thinking_block_is_no_thinking():
    assert split_thinking(f"<think>\n\n</think>\n\n{ANSWER}") == Reply(None, ANSWER, True)


# -- strip_thinking ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"<think>{THINKING}</think>\n\n{ANSWER}",
        f"{THINKING}</think>{ANSWER}",
        f"<think>{THINKING}</think><think>{THINKING}</think>{ANSWER}",
        f"<think>\n</think>\n{ANSWER}",
    ],
)
def test_strip_thinking_keeps_the_answer_alone(text):
    assert strip_thinking(text) == ANSWER


def test_strip_thinking_leaves_other_text_as_it_is():
    for text in (f"{ANSWER}\n", "  A <think> tag.", "Final answer: 3\n\n"):
        assert strip_thinking(text) == text
    assert strip_thinking(f"<think>{THINKING}") == ""  # cut off while thinking: no answer


# -- has_thinking_mode -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "OpenGVLab/InternVL3_5-8B",
        "OpenGVLab/InternVL3_5-1B-HF",
        "OpenGVLab/InternVL3_5-241B-A28B-HF",
        "internvl3.5-8b",
        "/models/INTERNVL3-5-38B",
        "OpenGVLab/InternVL3_5-GPT-OSS-20B-A4B-Preview",
    ],
)
def test_internvl3_5_has_a_thinking_mode(name):
    assert has_thinking_mode(name)


@pytest.mark.parametrize(
    "name",
    ["OpenGVLab/InternVL2_5-8B-MPO", "OpenGVLab/InternVL3-8B-hf", "InternVL2-8B-MPO", "gpt-4o"],
)
def test_other_models_have_none(name):
    assert not has_thinking_mode(name)


def test_a_local_checkpoint_is_known_by_its_language_model():
    assert has_thinking_mode("/data/my-finetune", "qwen3")
    assert has_thinking_mode("/data/my-finetune", "qwen3_moe")
    assert has_thinking_mode("/data/my-finetune", "gpt_oss")
    assert not has_thinking_mode("/data/my-finetune", "qwen2")
    native = {"model_type": "internvl", "text_config": {"model_type": "qwen3"}}
    original = {"model_type": "internvl_chat", "llm_config": {"model_type": "qwen3"}}
    assert text_model_type(native) == text_model_type(original) == "qwen3"
    assert text_model_type({"model_type": "internvl"}) is None


# -- apply_thinking_mode -------------------------------------------------------------------------


def asked(reasoning: bool, system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> Conversation:
    return Conversation(
        (
            Turn("user", "Describe it.", ("a.jpg",), reasoning=True),
            Turn("assistant", f"<think>{THINKING}</think>{ANSWER}"),
            Turn("user", "What colour is it?", reasoning=reasoning, answer_style="Short"),
        ),
        system_prompt,
    )


def test_the_switch_asks_for_thinking_with_the_documented_prompt_not_the_mpo_wrapper():
    messages = chat_messages(apply_thinking_mode(asked(True), DEFAULT_SYSTEM_PROMPT))
    assert messages[0] == ("system", THINKING_SYSTEM_PROMPT)
    assert messages[1] == ("user", "<image>\nDescribe it.")
    assert messages[3] == ("user", "What colour is it? Answer concisely.")  # the style stays
    assert not any(REASONING_PREFIX in text for _, text in messages)


def test_a_system_prompt_the_user_wrote_comes_after_the_thinking_prompt():
    conversation = apply_thinking_mode(asked(True, "Answer in French."), DEFAULT_SYSTEM_PROMPT)
    assert conversation.system_prompt == f"{THINKING_SYSTEM_PROMPT}\n\nAnswer in French."
    # The model's own prompt and an emptied one are replaced; applying it twice changes nothing.
    assert apply_thinking_mode(asked(True, ""), "").system_prompt == THINKING_SYSTEM_PROMPT
    assert apply_thinking_mode(conversation, DEFAULT_SYSTEM_PROMPT) == conversation


def test_without_the_switch_the_conversation_is_unchanged():
    conversation = Conversation((Turn("user", "What is it?"),), DEFAULT_SYSTEM_PROMPT)
    assert apply_thinking_mode(conversation, DEFAULT_SYSTEM_PROMPT) is conversation


def test_the_switch_turned_off_leaves_no_question_in_the_mpo_wrapper():
    # Asked first with the switch on, then with it off: no thinking prompt, and the earlier
    # question is not wrapped in the MPO prompt either (a thinking model never gets it).
    messages = chat_messages(apply_thinking_mode(asked(False), DEFAULT_SYSTEM_PROMPT))
    assert messages[0] == ("system", DEFAULT_SYSTEM_PROMPT)
    assert messages[1] == ("user", "<image>\nDescribe it.")
    assert not any(REASONING_PREFIX in text for _, text in messages)


def test_the_prompt_holds_earlier_answers_without_their_thinking():
    conversation = asked(False)
    assert chat_messages(conversation)[2] == ("assistant", ANSWER)
    prompt = build_prompt(conversation, [1], tokens_per_tile=1)
    assert THINKING not in prompt and THINK_OPEN not in prompt


def test_the_local_backend_uses_the_thinking_prompt_of_a_model_that_has_it(backend, monkeypatch):
    from model_backend.base import GenerationSettings

    conversation = Conversation((Turn("user", "Think first.", reasoning=True),))
    slot = backend._default()
    assert not slot.info.thinking_mode  # the tiny checkpoint's language model is qwen2

    def prompt_text() -> str:
        ids = backend.prepare(conversation, GenerationSettings()).input_ids[0]
        return backend.tokenizer.decode(ids)

    assert REASONING_PREFIX in prompt_text()
    monkeypatch.setattr(slot, "info", replace(slot.info, thinking_mode=True))
    assert THINKING_SYSTEM_PROMPT in prompt_text()
    assert REASONING_PREFIX not in prompt_text()


def test_thinking_tags_stay_in_the_text_even_when_a_tokenizer_marks_them_special(
    tiny_checkpoint,
):
    from transformers import AutoTokenizer

    from model_backend.streamer import hidden_token_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    hidden = hidden_token_ids(tokenizer)
    assert tokenizer.convert_tokens_to_ids("<think>") not in hidden
    assert tokenizer.convert_tokens_to_ids("</think>") not in hidden
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in hidden  # the others stay hidden
