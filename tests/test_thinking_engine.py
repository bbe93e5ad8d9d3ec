"""The remote backend against a fake thinking engine on localhost (tests/fake_engine.py): every
way engines send thinking reaches the consumer as one `<think>...</think>` text, the next turn
never carries it back, and InternVL3.5's thinking mode is asked for with its own prompt."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from model_backend.base import Conversation, GenerationSettings, Turn
from model_backend.prompt import DEFAULT_SYSTEM_PROMPT
from model_backend.remote import OpenAIBackend
from model_backend.styles import REASONING_PREFIX
from model_backend.thinking import (
    THINK_CLOSE,
    THINK_OPEN,
    THINKING_SYSTEM_PROMPT,
    Reply,
    split_thinking,
)
from tests.fake_engine import STYLES, FakeEngine, Script

THINKING_MODEL = "OpenGVLab/InternVL3_5-8B"
MPO_MODEL = "OpenGVLab/InternVL2_5-8B-MPO"
SCRIPT = Script()


@pytest.fixture(scope="module")
def engine():
    with FakeEngine(THINKING_MODEL, models=[THINKING_MODEL, MPO_MODEL]) as engine:
        yield engine


@pytest.fixture
def remote(engine):
    engine.script, engine.requests[:] = SCRIPT, []
    return OpenAIBackend(engine.endpoint, engine="vllm")


def ask(question: str = "What is this?", reasoning: bool = False, earlier=()) -> Conversation:
    turns = (*earlier, Turn("user", question, reasoning=reasoning))
    return Conversation(turns, DEFAULT_SYSTEM_PROMPT)


def answer(remote, conversation: Conversation, model: str | None = None) -> str:
    with remote.stream(conversation, GenerationSettings(), model=model) as stream:
        return "".join(stream)


@pytest.mark.parametrize("style", [s for s in STYLES if s != "plain"])
def test_every_way_of_sending_thinking_becomes_one_thinking_and_one_answer(engine, remote, style):
    engine.script = replace(SCRIPT, style=style)
    text = answer(remote, ask())
    assert split_thinking(text, final=True) == Reply(SCRIPT.thinking, SCRIPT.answer, True)
    assert split_thinking(text, opened=True, final=True) == split_thinking(text, final=True)


def test_a_plain_answer_has_no_thinking(engine, remote):
    engine.script = replace(SCRIPT, style="plain")
    text = answer(remote, ask())
    assert text == SCRIPT.answer
    assert split_thinking(text, final=True) == Reply(None, SCRIPT.answer, True)


@pytest.mark.parametrize("style", ["reasoning_content", "reasoning", "duplicated"])
def test_thinking_sent_apart_streams_inline_and_never_shows_twice(engine, remote, style):
    engine.script = replace(SCRIPT, style=style)
    with remote.stream(ask(), GenerationSettings()) as stream:
        pieces = [piece for piece in stream if piece]
    assert pieces[0] == THINK_OPEN
    text = ""
    for piece in pieces:
        text += piece
        shown = split_thinking(text, opened=True)
        assert SCRIPT.thinking.startswith(shown.thinking or "")
        assert SCRIPT.answer.startswith(shown.answer)
    assert text.count(THINK_OPEN) == (2 if style == "duplicated" else 1)


def test_the_next_turn_sends_the_answer_without_its_thinking(engine, remote):
    for style in ("reasoning_content", "inline", "no_opening_tag"):
        engine.script = replace(SCRIPT, style=style)
        first = answer(remote, ask())
        earlier = (Turn("user", "What is this?"), Turn("assistant", first))
        answer(remote, ask("And its colour?", earlier=earlier))
        messages = engine.last_messages
        assert messages[2] == {"role": "assistant", "content": SCRIPT.answer}
        sent = json.dumps(messages)
        assert SCRIPT.thinking not in sent and "think>" not in sent


def test_the_switch_turns_internvl3_5_thinking_on_with_its_documented_prompt(engine, remote):
    assert remote.describe(THINKING_MODEL).thinking_mode
    answer(remote, ask("Why is the sky blue?", reasoning=True), model=THINKING_MODEL)
    system, question = engine.last_messages
    assert system == {"role": "system", "content": THINKING_SYSTEM_PROMPT}
    assert question == {"role": "user", "content": "Why is the sky blue?"}

    own = Conversation((Turn("user", "Why?", reasoning=True),), "Answer in French.")
    answer(remote, own, model=THINKING_MODEL)
    assert engine.last_messages[0]["content"] == f"{THINKING_SYSTEM_PROMPT}\n\nAnswer in French."

    answer(remote, ask("Why is the sky blue?"), model=THINKING_MODEL)  # the switch off
    assert engine.last_messages[0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}


def test_the_switch_keeps_the_mpo_prompt_for_internvl2_5(engine, remote):
    assert not remote.describe(MPO_MODEL).thinking_mode
    answer(remote, ask("Why is the sky blue?", reasoning=True), model=MPO_MODEL)
    system, question = engine.last_messages
    assert system == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
    assert question["content"].startswith(REASONING_PREFIX)


def test_stopped_while_thinking_the_thinking_is_closed(engine, remote):
    long_thinking = "I look closely at every part of the picture. " * 20
    engine.script = Script(thinking=long_thinking, delay_s=0.01)
    stream = remote.stream(ask(), GenerationSettings())
    text = ""
    for piece in stream:
        if text == THINK_OPEN and piece:
            stream.cancel()  # Stop at the first piece of thinking; what follows was read already
        text += piece
    assert text.endswith(THINK_CLOSE)
    reply = split_thinking(text, final=True)
    assert long_thinking.startswith(reply.thinking) and reply.thinking
    assert reply.answer == "" and reply.thinking_done
    assert stream.stats.stopped
