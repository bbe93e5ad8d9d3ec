"""Thinking shown properly: one collapsible "Thinking" message (with its duration) above the
answer in the chat, the thinking apart from the answer through the API, never sent back to the
model; InternVL 2.5's MPO reasoning still shown as before. On the scripted backend, and at the
end through an OpenAI-compatible fake engine that streams `reasoning_content`."""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import replace

import gradio as gr
import pytest
from gradio_client import Client, handle_file

from interface.chat import ChatPanel, ChatTab
from interface.conversation import (
    assistant_turn,
    history_to_turns,
    thinking_and_answer,
    to_chatbot,
    to_conversation,
    user_turn,
)
from interface.export import export_markdown, export_record
from interface.grounding_chat import render_boxes
from interface.history import MAX_TEXT_CHARS, clean_entry, make_entry, restored_turns
from interface.settings import SETTING_NAMES
from interface.streaming import ThinkingClock
from model_backend.base import GenerationSettings
from model_backend.errors import InputError
from model_backend.prompt import chat_messages
from model_backend.remote import OpenAIBackend
from tests.conftest import CAT, COFFEE, launched
from tests.fake_engine import FakeEngine, Script
from tests.scripted_backend import ScriptedBackend

THINKING = "The user asks what this is. I see <ref>a cat</ref><box>[[1, 2, 300, 400]]</box>."
ANSWER = "A cat."
INLINE = f"<think>{THINKING}</think>\n\n{ANSWER}"
NO_OPENING_TAG = f"{THINKING}</think>\n\n{ANSWER}"
VALUES = [getattr(GenerationSettings(), name) for name in SETTING_NAMES]


def contents(messages: list[dict]) -> str:
    return " ".join(str(message["content"]) for message in messages)


def titled(messages: list[dict], title: str) -> list[dict]:
    return [m for m in messages if (m.get("metadata") or {}).get("title") == title]


# -- the chat -----------------------------------------------------------------------------------


@pytest.mark.parametrize("reply", [INLINE, NO_OPENING_TAG], ids=["inline", "no-opening-tag"])
def test_a_reply_with_thinking_is_one_thinking_message_then_the_answer(reply):
    turns = [user_turn("What is it?"), assistant_turn(reply, "20 tokens", thinking_seconds=2.34)]
    _question, thinking, answer = to_chatbot(turns)
    assert thinking["metadata"] == {"title": "Thinking", "status": "done", "duration": 2.3}
    assert "I see" in thinking["content"] and "think>" not in thinking["content"]
    assert answer["content"].startswith(ANSWER) and "20 tokens" in answer["content"]
    assert "I see" not in answer["content"] and "think>" not in answer["content"]


def test_while_it_thinks_the_thinking_message_is_pending_and_alone():
    for streamed, thinking_mode in [("<think>The user asks", False), ("The user asks", True)]:
        turns = [
            user_turn("Q", reasoning=True),
            assistant_turn(streamed, None, None, None, thinking_mode),
        ]
        (_, thinking) = to_chatbot(turns)
        assert thinking["metadata"] == {"title": "Thinking", "status": "pending"}
        assert thinking["content"] == "The user asks"
    # Thought, the answer on its way: the duration is known.
    turns = [user_turn("Q"), assistant_turn(f"<think>{THINKING}</think>\n\nA c", None, None, 1.0)]
    _, thinking, answer = to_chatbot(turns)
    assert thinking["metadata"]["status"] == "done" and thinking["metadata"]["duration"] == 1
    assert answer["content"] == "A c"


def test_a_reply_stopped_while_thinking_says_there_is_no_answer():
    turns = [user_turn("Q"), assistant_turn("<think>Hmm, let", "3 tokens · stopped", None, 0.5)]
    _, thinking, answer = to_chatbot(turns)
    assert thinking["metadata"]["status"] == "done"
    assert answer["content"].startswith("(no answer)")


def test_mpo_reasoning_still_shows_reasoning_and_the_final_answer_in_bold():
    reply = "Step 1: count the cats.\nFinal answer: one"
    _, reasoning, final = to_chatbot(
        [user_turn("How many?", reasoning=True), assistant_turn(reply, "9 tokens")]
    )
    assert reasoning["metadata"] == {"title": "Reasoning", "status": "done"}
    assert final["content"].startswith("**Final answer:** one")
    # A thinking model asked with the switch gets no MPO prompt: its plain reply is an answer.
    turn = assistant_turn("One cat.", "3 tokens", None, None, thinking_mode=True)
    (_, plain) = to_chatbot([user_turn("How many?", reasoning=True), turn])
    assert "metadata" not in plain and plain["content"].startswith("One cat.")


def test_a_tag_just_begun_is_shown_nowhere():
    (_, shown) = to_chatbot([user_turn("Q"), assistant_turn("<thi")])
    assert shown["content"] == "…" and "metadata" not in shown
    assert thinking_and_answer("<thi", False, False) == ("", "")
    assert thinking_and_answer("A cat. ", False, True) == ("", "A cat. ")  # as written


EMPTY_THINKING = "<think>\n\n</think>\n\nThe answer is 4."  # a model told not to think


def test_an_empty_thinking_block_and_a_tag_still_streaming_are_never_shown():
    (_, shown) = to_chatbot([user_turn("2 + 2?"), assistant_turn(EMPTY_THINKING, "5 tokens")])
    assert "metadata" not in shown and shown["content"].startswith("The answer is 4.")
    assert "think>" not in shown["content"]
    (_, streaming) = to_chatbot([user_turn("2 + 2?"), assistant_turn("The answer </thi")])
    assert streaming["content"] == "The answer"
    record = export_record(
        [user_turn("2 + 2?"), assistant_turn(EMPTY_THINKING, "5 tokens")], "m", {}
    )
    assert record["turns"][1]["text"] == "The answer is 4."


def test_boxes_are_drawn_from_the_answer_only(tmp_path):
    image = tmp_path / "coffee.jpg"  # a file of its own: drawings are cached by file
    shutil.copy(COFFEE, image)
    turns = [user_turn("Find it.", [str(image)]), assistant_turn(INLINE, "9 tokens")]
    assert not any(isinstance(m["content"], dict) for m in to_chatbot(turns))  # no drawing
    assert render_boxes(turns) == (None, [], None)
    boxed = f"<think>{THINKING}</think><ref>the cup</ref><box>[[100, 200, 500, 800]]</box>"
    turns[-1] = assistant_turn(boxed, "9 tokens")
    drawn, table, _ = render_boxes(turns)
    assert drawn and [row[0] for row in table] == ["the cup"]


def test_the_thinking_clock_runs_from_the_first_text_to_the_closing_tag():
    clock, text = ThinkingClock(), ""
    for piece in ["", "<think>Hm", "m.</th", "ink>", "A cat."]:
        text += piece
        clock.add(text, piece)
        if piece == "m.</th":
            assert clock.seconds is None  # still thinking
    assert clock.seconds is not None and clock.seconds >= 0
    cut_off = ThinkingClock()
    cut_off.add("<think>Hm", "<think>Hm")
    cut_off.end("<think>Hm")
    assert cut_off.seconds is not None
    plain = ThinkingClock()
    plain.add("A cat.", "A cat.")
    plain.end("A cat.")
    assert plain.seconds is None


class ThinkingScripted(ScriptedBackend):
    """The scripted backend, as a model with a thinking mode (InternVL3.5)."""

    def describe(self, model=None):
        return replace(super().describe(model), thinking_mode=True)


def test_the_chat_records_the_thinking_and_the_next_prompt_holds_none():
    backend = ThinkingScripted(NO_OPENING_TAG, seconds_per_piece=0.002)
    with gr.Blocks():
        tab = ChatTab(name="chat", collect_turn=lambda message, turns: {}, placeholder="")
        panel = ChatPanel(backend, tab)
    turns = [user_turn("What is it?", reasoning=True)]
    updates = list(panel.respond(None, turns, "scripted", "", *VALUES))
    shown = [update[panel.chatbot]["value"] for update in updates]
    pending = [m for messages in shown for m in titled(messages, "Thinking")
               if m["metadata"]["status"] == "pending"]  # fmt: skip
    assert pending, "the Thinking message should be pending while the model thinks"
    answered = updates[-1][panel.state]
    assert answered[-1]["thinking_mode"] is True and answered[-1]["thinking_seconds"] > 0
    final = shown[-1]
    assert (
        len(titled(final, "Thinking")) == 1
        and "duration" in titled(final, "Thinking")[0]["metadata"]
    )
    assert contents(final).count(ANSWER) == 1
    # The next question: the model sees the earlier answer alone.
    follow_up = [*answered, user_turn("Sure?")]
    list(panel.respond(None, follow_up, "scripted", "", *VALUES))
    prompt = str(chat_messages(backend.conversations[-1]))
    assert ANSWER in prompt and "I see" not in prompt and "think>" not in prompt


# -- history and export -------------------------------------------------------------------------


def test_history_keeps_the_thinking_and_bounds_what_the_browser_sends():
    long_thinking = "x" * (3 * MAX_TEXT_CHARS)
    turn = assistant_turn(f"<think>{long_thinking}</think>\n\n{ANSWER}", "9 tokens", None, 12.5)
    entry = make_entry([user_turn("Q"), turn], "one")
    restored = restored_turns(clean_entry(entry, models=[]))[-1]
    assert restored["thinking_seconds"] == 12.5
    assert restored["text"].endswith(ANSWER)  # the answer survives a long thinking's cut
    _, thinking, answer = to_chatbot([user_turn("Q"), restored])
    assert thinking["metadata"]["title"] == "Thinking" and answer["content"].startswith(ANSWER)
    for bad in (math.nan, math.inf, -1, "12", True, 1e12):
        sent = {
            **entry,
            "turns": [entry["turns"][0], {**entry["turns"][1], "thinking_seconds": bad}],
        }
        assert "thinking_seconds" not in clean_entry(sent, models=[])["turns"][1]
    sent = {**entry, "turns": [entry["turns"][0], {**entry["turns"][1], "thinking_mode": "yes"}]}
    assert "thinking_mode" not in clean_entry(sent, models=[])["turns"][1]


def test_export_keeps_the_thinking_apart_from_the_answer():
    turns = [user_turn("Q"), assistant_turn(INLINE, "9 tokens", "m", 3.0)]
    record = export_record(turns, "m", {})
    answer = record["turns"][1]
    assert (answer["text"], answer["thinking"], answer["thinking_seconds"]) == (
        ANSWER,
        THINKING,
        3.0,
    )
    markdown = export_markdown(record)
    assert "<summary>Thinking (3.0 s)</summary>" in markdown
    assert markdown.index("I see") < markdown.rindex(ANSWER)


# -- the API ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripted():
    return ScriptedBackend(INLINE, seconds_per_piece=0.005)


@pytest.fixture(scope="module")
def client(scripted, gradio_temp_dir):
    with launched(scripted) as url:
        client = Client(url, verbose=False)
        yield client
        client.close()


def test_the_api_gives_the_thinking_apart_from_the_answer(client):
    job = client.submit(handle_file(CAT), "What is it?", api_name="/image_chat")
    outputs = list(job)
    assert job.result() == (ANSWER, THINKING)
    assert any(thinking and not answer for answer, thinking in outputs)  # thinking streams first
    assert not any("think>" in answer or "I see" in answer for answer, _ in outputs)
    returns = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for name, endpoint in returns.items():
        labels = [output["label"] for output in endpoint["returns"]]
        if name == "/compare":
            assert labels[-2:] == ["left_thinking", "right_thinking"]
        elif name != "/compare_vote":
            assert labels[0] == "answer" and labels[-1] == "thinking", name


def test_grounding_and_compare_return_the_thinking_apart(client):
    answer, boxes, _drawing, thinking = client.predict(
        image=handle_file(CAT), query="the cat", mode="ask", api_name="/grounding"
    )
    assert (answer, boxes, thinking) == (ANSWER, [], THINKING)  # the thinking's box is not one
    left, right, _, _, left_thinking, right_thinking = client.predict("What?", api_name="/compare")
    assert (left, right, left_thinking, right_thinking) == (ANSWER, ANSWER, THINKING, THINKING)


def test_the_api_answer_holds_no_empty_thinking_block_nor_a_tag_in_streaming(client, scripted):
    scripted.reply = EMPTY_THINKING  # streamed 4 characters at a time: "<thi", "</th" ...
    try:
        job = client.submit(handle_file(CAT), "2 + 2?", api_name="/image_chat")
        outputs = list(job)
    finally:
        scripted.reply = INLINE
    assert job.result() == ("The answer is 4.", "")
    assert outputs and not any("<" in answer or thinking for answer, thinking in outputs)


def test_a_history_copied_from_the_chatbot_sends_no_thinking_nor_collapsible():
    history = [
        {"role": "user", "content": "What is it?"},
        {"role": "assistant", "content": THINKING, "metadata": {"title": "Thinking"}},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "How many?"},
        {"role": "assistant", "content": "Step 1: count.", "metadata": {"title": "Reasoning"}},
        {"role": "assistant", "content": "**Final answer:** one"},
        {"role": "user", "content": "Sure?"},
        {"role": "assistant", "content": "Two.", "metadata": {"title": "Other answer (1 of 2)"}},
        {"role": "assistant", "content": "One.", "metadata": None},
    ]
    turns = history_to_turns(history)
    assert [(t["role"], t["text"]) for t in turns] == [
        ("user", "What is it?"),
        ("assistant", ANSWER),
        ("user", "How many?"),
        ("assistant", "**Final answer:** one"),
        ("user", "Sure?"),
        ("assistant", "One."),
    ]
    prompt = str(chat_messages(to_conversation([*turns, user_turn("And?")], "")))
    assert "I see" not in prompt and "Step 1" not in prompt and "Two." not in prompt


def test_thinking_sent_back_in_history_never_reaches_the_model(client, scripted):
    history = [
        {"role": "user", "content": "What is it?"},
        {"role": "assistant", "content": INLINE, "thinking": "secret", "reasoning_content": "x"},
        {"role": "user", "content": "And?"},
        {
            "role": "assistant",
            "content": [{"type": "thinking", "text": "secret"}, {"type": "text", "text": "Two."}],
        },
    ]
    client.predict(handle_file(CAT), "Sure?", history=history, api_name="/image_chat")
    prompt = str(chat_messages(scripted.conversations[-1]))
    assert ANSWER in prompt and "Two." in prompt
    assert "I see" not in prompt and "secret" not in prompt and "think>" not in prompt


# -- end to end: an engine streaming reasoning_content -------------------------------------------


def test_an_engine_streaming_reasoning_content_through_the_app(gradio_temp_dir):
    thinking = "Orange fur, a sofa. " * 4  # streamed for a while: the page sees it grow
    script = Script(thinking=thinking, answer="An orange cat.", chunk_chars=4, delay_s=0.01)
    with FakeEngine(script=script) as engine, launched(OpenAIBackend(engine.endpoint)) as url:
        client = Client(url, verbose=False)
        try:
            job = client.submit(
                handle_file(CAT), "What is it?", reasoning=True, api_name="/image_chat"
            )
            outputs = list(job)
            assert job.result() == ("An orange cat.", thinking.strip())
            assert any(thinking and not answer for answer, thinking in outputs)
            system = engine.last_messages[0]
            assert system["role"] == "system" and "<think>" in str(system["content"])
            history = [
                {"role": "user", "content": "What is it?"},
                {
                    "role": "assistant",
                    "content": job.result()[0],
                    "reasoning_content": "Orange fur",
                },
            ]
            client.predict(handle_file(CAT), "Sure?", history=history, api_name="/image_chat")
        finally:
            client.close()
    sent = str(engine.last_messages)
    assert "An orange cat." in sent and "Orange fur" not in sent


# -- in a browser ---------------------------------------------------------------------------------


@pytest.mark.browser
def test_compare_shows_each_sides_thinking_folded_above_its_answer(browser, gradio_temp_dir):
    from tests.conftest import ARTIFACTS, playwright_expect
    from tests.test_compare import compare_app

    expect = playwright_expect()
    backend = ScriptedBackend(INLINE, piece_size=6, seconds_per_piece=0.01)
    with compare_app(backend) as (_, url):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(url)
        question = page.locator("#compare-input textarea")
        question.fill("What is it?")
        question.press("Enter")
        for side in ("left", "right"):
            chatbot = page.locator(f"#compare-{side}-chatbot")
            expect(chatbot).to_contain_text("tokens")  # answered
            expect(chatbot.get_by_text("Thinking", exact=True)).to_have_count(1)
            expect(chatbot).to_contain_text(re.compile(r"Thinking\s*\(\d+(\.\d)?m?s\)"))
            expect(chatbot.get_by_text("I see")).to_be_hidden()  # folded once done
            expect(chatbot).to_contain_text(ANSWER)
            expect(chatbot).not_to_contain_text("think>")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "thinking.png"), full_page=True)
        page.close()


def test_a_long_thinking_does_not_count_against_the_answer_length_limit():
    from model_backend.types import MAX_ANSWER_CHARS

    long_thinking = "<think>" + "hmm " * (MAX_ANSWER_CHARS // 2) + "</think>\n\nA cat."
    turns = [
        {"role": "user", "text": "What is it?"},
        {"role": "assistant", "text": long_thinking},
        {"role": "user", "text": "Sure?"},
    ]
    conversation = to_conversation(turns, "")
    conversation.check()  # refused as "answer too long" before the thinking was left out
    assert chat_messages(conversation)[1] == ("assistant", "A cat.")
    too_long = {"role": "assistant", "text": "<think>Hm.</think>" + "a" * (MAX_ANSWER_CHARS + 1)}
    with pytest.raises(InputError, match="answer"):
        to_conversation([turns[0], too_long, turns[2]], "").check()


def test_an_answer_that_speaks_of_the_closing_tag_reaches_the_model_whole():
    # The thinking is left out once, by the prompt builder: a second pass would cut the answer.
    answer = "Close the block with </think> when done."
    turns = [user_turn("How?"), assistant_turn(f"<think>plan</think>{answer}"), user_turn("Ok?")]
    assert chat_messages(to_conversation(turns, ""))[1] == ("assistant", answer)


def test_a_file_message_in_a_history_copied_from_the_chatbot_is_not_taken_for_text():
    from interface.conversation import history_to_turns

    history = [
        {"role": "user", "content": {"path": "/tmp/cat.jpg", "mime_type": "image/jpeg"}},
        {"role": "user", "content": "Where is the <ref>cat</ref>?"},
        {"role": "assistant", "content": {"type": "text", "text": "<ref>cat</ref> here."}},
        {"role": "assistant", "content": {"path": "/tmp/drawing.png"}},  # the boxes drawn
    ]
    turns = history_to_turns(history)
    assert [(turn["role"], turn["text"]) for turn in turns] == [
        ("user", "Where is the <ref>cat</ref>?"),
        ("assistant", "<ref>cat</ref> here."),
    ]
