"""Likes on every answer, and Regenerate's earlier answers kept as alternatives the user can
prefer: the chat panel's handlers called directly (no browser), on the scripted backend."""

from __future__ import annotations

import json
import re
from pathlib import Path

import gradio as gr
import pytest

from interface.chat import ChatPanel, ChatTab, missing_file
from interface.conversation import (
    assistant_turn,
    chat_view,
    feedback_marks,
    to_chatbot,
    user_turn,
)
from interface.export import write_exports
from interface.grounding_chat import latest_answer_and_image
from interface.history import make_entry, restored_turns
from interface.image_chat import collect_image_turn
from interface.settings import SETTING_NAMES
from interface.video_chat import VIDEO_TYPES, collect_video_turn
from model_backend.base import GenerationSettings
from model_backend.errors import GenerationError, InputError
from tests.conftest import CAT, FakeStore
from tests.scripted_backend import ScriptedBackend

VALUES = [getattr(GenerationSettings(), name) for name in SETTING_NAMES]
MODEL = "scripted"


@pytest.fixture
def scripted():
    return ScriptedBackend("A cat.", seconds_per_piece=0)


@pytest.fixture
def store():
    return FakeStore()


@pytest.fixture
def panel(scripted, store):
    with gr.Blocks():
        tab = ChatTab(name="chat", collect_turn=lambda message, turns: {}, placeholder="")
        return ChatPanel(scripted, tab, feedback=store)


def answered(panel: ChatPanel, turns: list[dict]) -> list[dict]:
    """The conversation once the panel has answered its last question."""
    updates = list(panel.respond(None, turns, MODEL, "System.", *VALUES))
    return updates[-1][panel.state]


def regenerated(panel: ChatPanel, turns: list[dict], reply: str) -> list[dict]:
    panel.backend.reply = reply
    waiting = panel.drop_answer(turns, False, "Default", None)[panel.state]
    return answered(panel, waiting)


def liked(panel: ChatPanel, turns: list[dict], index: int, liked: bool | str = True):
    """Like (True), dislike (False) or take back ("") chatbot message `index`, as the page does:
    the new conversation, and the chatbot's marks."""
    data = gr.LikeData(panel.chatbot, {"index": index, "value": None, "liked": liked})
    updates = panel.like(data, turns, MODEL, "System.", *VALUES)
    return updates[panel.state], updates[panel.chatbot]["feedback_value"]


def message_of(turns: list[dict], turn: int, alternative: int | None = None) -> int:
    """The chatbot index of a turn's answer in use (or of its alternative)."""
    _, owners = chat_view(turns)
    return owners.index((turn, alternative))


def first_exchange(panel: ChatPanel) -> list[dict]:
    return answered(panel, [user_turn("What is it?", [CAT])])


def test_a_like_marks_its_answer_and_toggles_as_gradio_does(panel, store):
    turns = first_exchange(panel)
    turns = answered(panel, [*turns, {**user_turn("Sure?"), "reasoning": True}])
    second = message_of(turns, 3)  # the reasoning's bubble: the second answer's first message
    turns, marks = liked(panel, turns, second)
    assert [turn.get("feedback") for turn in turns] == [None, None, None, "like"]
    assert marks == [None, "Like", "Like"]  # the first answer, then both bubbles of the second
    turns, marks = liked(panel, turns, second, False)  # the other thumb
    assert turns[3]["feedback"] == "dislike" and marks == [None, "Dislike", "Dislike"]
    turns, marks = liked(panel, turns, second, "")  # taken back
    assert turns[3]["feedback"] is None and marks == [None, None, None]
    turns, marks = liked(panel, turns, message_of(turns, 1))
    assert turns[1]["feedback"] == "like" and marks == ["Like", None, None]
    assert store.pairs == []  # a like on an answer without an alternative is not a pair


def test_a_like_on_a_question_changes_nothing(panel):
    turns = first_exchange(panel)
    assert liked(panel, turns, 0) == (turns, [None])


def test_regenerate_keeps_the_earlier_answer_and_sends_only_the_answer_in_use(panel, scripted):
    turns = first_exchange(panel)
    scripted.reply = "A dog."
    waiting = panel.drop_answer(turns, False, "Default", None)[panel.state]
    # While the new answer is on its way the earlier one stays in view, collapsed.
    shown = to_chatbot(waiting)
    assert shown[-1]["metadata"]["title"] == "Other answer (1 of 2)"
    assert shown[-1]["content"].startswith("A cat.")
    assert latest_answer_and_image(waiting) == (None, CAT)  # the grounding tab draws nothing
    turns = answered(panel, waiting)
    assert [t.role for t in scripted.conversations[-1].turns] == ["user"]  # asked again, alone
    assert turns[-1]["text"] == "A dog." and turns[-1]["number"] == 2
    assert [(a["text"], a["number"]) for a in turns[-1]["alternatives"]] == [("A cat.", 1)]
    assert "previous_answer" not in turns[0]
    messages = to_chatbot(turns)
    assert messages[1]["metadata"]["title"] == "Other answer (1 of 2)"  # above the new one
    assert messages[2]["content"].startswith("A dog.")
    assert latest_answer_and_image(turns) == ("A dog.", CAT)

    scripted.reply = "Yes."
    answered(panel, [*turns, user_turn("Sure?")])
    sent = scripted.conversations[-1].turns
    assert [t.text for t in sent] == ["What is it?", "A dog.", "Sure?"]


def test_a_like_on_the_earlier_answer_makes_it_the_answer_and_writes_one_pair(
    panel, scripted, store
):
    turns = regenerated(panel, first_exchange(panel), "A dog.")
    earlier = message_of(turns, 1, 0)
    turns, marks = liked(panel, turns, earlier)
    assert turns[1]["text"] == "A cat." and turns[1]["feedback"] == "like"
    assert [(a["text"], a["number"]) for a in turns[1]["alternatives"]] == [("A dog.", 2)]
    assert to_chatbot(turns)[1]["metadata"]["title"] == "Other answer (2 of 2)"
    assert marks == [None, "Like"]  # the other answer, then the liked one now in use
    assert len(store.pairs) == 1
    pair = store.pairs[0]
    assert (pair["chosen"], pair["rejected"]) == ("A cat.", "A dog.")
    assert (pair["chosen_model"], pair["rejected_model"]) == (MODEL, MODEL)
    assert pair["media"] == [CAT] and pair["question"] == "What is it?"
    assert pair["source"] == "like" and pair["settings"]["system_prompt"] == "System."
    assert latest_answer_and_image(turns) == ("A cat.", CAT)  # the grounding tab draws it

    # Taken back and given again: still one pair.
    turns, _ = liked(panel, turns, message_of(turns, 1), "")
    turns, _ = liked(panel, turns, message_of(turns, 1))
    assert len(store.pairs) == 1

    scripted.reply = "Yes."
    answered(panel, [*turns, user_turn("Sure?")])
    assert [t.text for t in scripted.conversations[-1].turns] == ["What is it?", "A cat.", "Sure?"]


def test_a_like_on_the_new_answer_prefers_it_to_the_earlier_one(panel, store):
    turns = regenerated(panel, first_exchange(panel), "A dog.")
    turns, _ = liked(panel, turns, message_of(turns, 1))
    assert turns[1]["text"] == "A dog."
    assert [(p["chosen"], p["rejected"]) for p in store.pairs] == [("A dog.", "A cat.")]


def test_a_dislike_on_the_earlier_answer_only_marks_it(panel, store):
    turns = regenerated(panel, first_exchange(panel), "A dog.")
    turns, marks = liked(panel, turns, message_of(turns, 1, 0), False)
    assert turns[1]["text"] == "A dog." and turns[1]["alternatives"][0]["feedback"] == "dislike"
    assert marks == ["Dislike", None] and store.pairs == []


def test_without_a_store_a_like_still_chooses(scripted):
    with gr.Blocks():
        tab = ChatTab(name="chat", collect_turn=lambda message, turns: {}, placeholder="")
        panel = ChatPanel(scripted, tab)
    turns = regenerated(panel, first_exchange(panel), "A dog.")
    turns, _ = liked(panel, turns, message_of(turns, 1, 0))
    assert turns[1]["text"] == "A cat."


def test_a_third_answer_keeps_both_earlier_ones(panel, scripted):
    turns = regenerated(panel, first_exchange(panel), "A dog.")
    turns, _ = liked(panel, turns, message_of(turns, 1, 0))  # back to the first answer
    turns = regenerated(panel, turns, "A fox.")
    assert turns[1]["text"] == "A fox." and turns[1]["number"] == 3
    assert [a["text"] for a in turns[1]["alternatives"]] == ["A cat.", "A dog."]
    titles = [m["metadata"]["title"] for m in to_chatbot(turns) if m.get("metadata")]
    assert titles == ["Other answer (1 of 3)", "Other answer (2 of 3)"]
    assert [t.role for t in scripted.conversations[-1].turns] == ["user"]


def test_a_failed_regenerate_gives_the_earlier_answer_back(panel, scripted, monkeypatch):
    turns = first_exchange(panel)
    waiting = panel.drop_answer(turns, False, "Default", None)[panel.state]

    def fail(*args, **kwargs):
        raise GenerationError("The model failed.")

    monkeypatch.setattr(scripted, "stream", fail)
    updates = []
    with pytest.raises(gr.Error, match="The model failed"):
        for update in panel.respond(None, waiting, MODEL, "System.", *VALUES):
            updates.append(update)
    assert updates[-1][panel.state] == turns  # as before Regenerate
    assert panel.textbox not in updates[-1]  # the question is still in the chat


def test_likes_wait_while_an_answer_streams(panel):
    assert panel.busy(True)[panel.chatbot].feedback_options == ()
    assert panel.busy(False)[panel.chatbot].feedback_options == ("Like", "Dislike")


def test_the_chatbot_renders_a_turn_again_when_its_answers_change(panel):
    turns = regenerated(panel, first_exchange(panel), "A dog.")
    later = [*turns, user_turn("Sure?")]  # the answer turn is now an earlier, remembered one
    before = to_chatbot(later)
    swapped, _ = liked(panel, turns, message_of(turns, 1, 0))
    after = to_chatbot([*swapped, user_turn("Sure?")])
    assert before[1]["metadata"]["title"] == "Other answer (1 of 2)"
    assert after[1]["metadata"]["title"] == "Other answer (2 of 2)"
    assert after[1]["content"].startswith("A dog.") and after[2]["content"].startswith("A cat.")
    # A like changes the marks, not the messages: they are not rendered again.
    marked, marks = liked(panel, swapped, message_of(swapped, 1), False)
    assert to_chatbot([*marked, user_turn("Sure?")]) == after and marks == [None, "Dislike"]
    assert feedback_marks(marked, chat_view(marked)[1]) == marks


def test_the_export_shows_likes_and_the_answers_not_used(panel):
    turns = regenerated(panel, first_exchange(panel), "A dog.")
    turns, _ = liked(panel, turns, message_of(turns, 1, 0))  # the first answer, liked
    turns = [*turns, user_turn("Sure?"), {**assistant_turn("Yes.", model=MODEL)}]
    turns, _ = liked(panel, turns, message_of(turns, 3), False)
    json_path, md_path = write_exports(turns, MODEL, {"temperature": 0})
    record = json.loads(Path(json_path).read_text())
    first, second = record["turns"][1], record["turns"][3]
    assert (first["text"], first["feedback"], first["number"]) == ("A cat.", "like", 1)
    assert [(a["text"], a["number"]) for a in first["alternatives"]] == [("A dog.", 2)]
    assert second["feedback"] == "dislike" and "alternatives" not in second
    markdown = Path(md_path).read_text()
    assert "## Assistant · 👍 liked · answer 1 of 2, in use\n\n\nA cat.\n" in markdown
    assert "### Assistant · answer 2 of 2, not used\n\nA dog.\n" in markdown
    assert "## Assistant · 👎 disliked\n\n\nYes.\n" in markdown


def test_a_like_on_a_follow_up_keeps_the_questions_before_it(panel, store):
    turns = answered(panel, [*first_exchange(panel), user_turn("Sure?")])
    turns = regenerated(panel, turns, "Yes.")
    liked(panel, turns, message_of(turns, 3, 0))
    (pair,) = store.pairs
    assert pair["question"] == "Sure?" and pair["settings"]["earlier_questions"] == ["What is it?"]
    assert pair["media"] == [CAT]


def test_a_pair_is_written_once_even_after_another_regenerate(panel, store):
    turns = regenerated(panel, first_exchange(panel), "A dog.")
    turns, _ = liked(panel, turns, message_of(turns, 1, 0))  # 1 over 2
    turns = regenerated(panel, turns, "A fox.")
    turns, _ = liked(panel, turns, message_of(turns, 1, 1))  # 2 over 3
    turns, _ = liked(panel, turns, message_of(turns, 1, 0))  # 1 over 2 again: known
    assert [(p["chosen"], p["rejected"]) for p in store.pairs] == [
        ("A cat.", "A dog."),
        ("A dog.", "A fox."),
    ]


def browser_copy(turns: list[dict], **forged) -> list[dict]:
    """The conversation as restored from the browser's history, its first answer edited there."""
    entry = json.loads(json.dumps(make_entry(turns, "saved")))
    entry["turns"][1].update(forged)
    return restored_turns(entry)


@pytest.fixture
def infos(monkeypatch) -> list[str]:
    shown: list[str] = []
    monkeypatch.setattr(gr, "Info", shown.append)
    return shown


def test_text_restored_from_the_browser_never_becomes_a_pair(panel, store, infos):
    text_only = answered(panel, [user_turn("Tell me a joke.")])
    restored = browser_copy(text_only, text="FORGED chosen text", model="GPT-9")
    turns = regenerated(panel, restored, "A joke.")
    turns, marks = liked(panel, turns, message_of(turns, 1, 0))
    assert turns[1]["text"] == "FORGED chosen text" and marks == [None, "Like"]  # chosen...
    assert store.pairs == [] and "not kept as a preference pair" in infos[0]  # ...not kept
    turns, _ = liked(panel, turns, message_of(turns, 1, 0))  # the new answer over it
    assert store.pairs == [] and len(infos) == 2


def test_a_restored_question_without_its_image_is_not_asked_again(panel, store, infos):
    restored = browser_copy(first_exchange(panel))
    with pytest.raises(InputError) as refused:
        collect_image_turn({"text": "And now?"}, restored, None)  # a new question
    with pytest.raises(gr.Error, match=re.escape(str(refused.value))):
        panel.drop_answer(restored, False, "Default", None)
    video_tab = ChatTab("video", lambda message, turns: {}, "", file_types=tuple(VIDEO_TYPES))
    with pytest.raises(InputError, match=re.escape(missing_file(video_tab))):
        collect_video_turn({"text": "And now?"}, [], None, 8, None, None, 1)

    # With the image attached again a follow-up is answered, but its pair would lack the
    # image of the first question: none is written.
    turns = answered(panel, [*restored, collect_image_turn({"text": "Sure?"}, restored, CAT)])
    turns = regenerated(panel, turns, "Yes.")
    liked(panel, turns, message_of(turns, 3, 0))
    assert store.pairs == [] and infos
