"""The chat controls' handlers, called directly (no browser): state in, state out."""

from __future__ import annotations

import pytest

from interface.conversation import (
    assistant_turn,
    history_to_turns,
    to_chatbot,
    to_conversation,
    user_turn,
)
from interface.image_chat import collect_image_turn, image_chat_turns
from interface.settings import make_settings
from model_backend.errors import InputError


def test_a_new_image_is_attached_once():
    first = collect_image_turn({"text": "What is it?"}, [], "/up/cat.jpg")
    assert first["images"] == ["/up/cat.jpg"]
    turns = [first, assistant_turn("A cat.")]
    follow_up = collect_image_turn({"text": "Colour?"}, turns, "/up/cat.jpg")
    assert follow_up["images"] == []  # already in the conversation
    replaced = collect_image_turn({"text": "And this?"}, turns, "/up/dog.jpg")
    assert replaced["images"] == ["/up/dog.jpg"]


def test_an_image_attached_in_the_textbox_wins():
    turn = collect_image_turn({"text": "Q", "files": ["/up/pasted.png"]}, [], "/up/cat.jpg")
    assert turn["images"] == ["/up/pasted.png"]


@pytest.mark.parametrize(
    ("message", "image", "error"),
    [
        ({"text": "  "}, "/up/cat.jpg", "type a question"),
        ({"text": "What is it?"}, None, "add an image first"),
    ],
)
def test_refusals(message, image, error):
    with pytest.raises(InputError, match=error):
        collect_image_turn(message, [], image)


def test_chatbot_shows_images_text_and_figures():
    turns = [user_turn("What?", ["/up/cat.jpg"]), assistant_turn("<ref>cat</ref>", "3 tokens")]
    messages = to_chatbot(turns)
    assert messages[0] == {"role": "user", "content": [{"path": "/up/cat.jpg"}, "What?"]}
    assert messages[1]["role"] == "assistant"
    assert messages[1]["content"].startswith("**cat**")
    assert "<sub>3 tokens</sub>" in messages[1]["content"]


def test_conversation_from_state():
    turns = [user_turn("What?", ["/up/cat.jpg"]), assistant_turn("A cat."), user_turn("Colour?")]
    conversation = to_conversation(turns, "System.")
    assert conversation.system_prompt == "System."
    assert conversation.image_paths == ["/up/cat.jpg"]
    assert [t.role for t in conversation.turns] == ["user", "assistant", "user"]


def test_api_history_accepts_plain_and_gradio_block_content():
    turns = history_to_turns(
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
        ]
    )
    assert [(t["role"], t["text"]) for t in turns] == [("user", "Hi"), ("assistant", "Hello")]
    with pytest.raises(InputError, match="history must be"):
        history_to_turns([{"role": "robot", "content": "beep"}])


def test_api_image_goes_to_the_first_question():
    turns = image_chat_turns(
        "/up/cat.jpg",
        "Colour?",
        [{"role": "user", "content": "What?"}, {"role": "assistant", "content": "A cat."}],
    )
    assert turns[0]["images"] == ["/up/cat.jpg"] and turns[2]["images"] == []
    with pytest.raises(InputError, match="image is required"):
        image_chat_turns(None, "Colour?", None)


def test_settings_from_sliders_are_checked():
    settings = make_settings(0.5, 0.9, 40.0, 1.2, 512.0, 6.0)
    assert settings.top_k == 40 and settings.max_new_tokens == 512 and settings.max_tiles == 6
    with pytest.raises(InputError, match="temperature"):
        make_settings(5, 0.9, 40, 1.2, 512, 6)


def test_reasoning_answers_show_the_steps_collapsible_and_the_final_answer_in_bold():
    from interface.conversation import answer_messages

    text = "Step 1: look.\nStep 2: think.\nFinal answer: B"
    steps, final = answer_messages(text, "9 tokens", reasoning=True)
    assert steps["metadata"] == {"title": "Reasoning", "status": "done"}
    assert steps["content"] == "Step 1: look.\nStep 2: think."
    assert final["content"].startswith("**Final answer:** B")
    assert "9 tokens" in final["content"]
    # While streaming, before the final answer: only the (pending) reasoning.
    (pending,) = answer_messages("Step 1: look.", None, reasoning=True)
    assert pending["metadata"]["status"] == "pending"
    # Without reasoning, an answer is one plain message.
    (plain,) = answer_messages(text, None, reasoning=False)
    assert plain["content"] == text


def test_grounding_gives_back_what_was_typed_not_the_prompt():
    from interface.chat import typed
    from interface.grounding_chat import collect_grounding_turn

    turn = collect_grounding_turn({"text": "the cup"}, [], "/up/coffee.jpg", "find")
    assert turn["text"].endswith("<ref>the cup</ref>")  # what the model is asked
    assert typed(turn) == "the cup"  # what Undo or a failed request puts back in the box
    assert typed(user_turn("plain question")) == "plain question"


def test_new_turns_are_checked_a_few_at_a_time(backend):
    """Checking a new turn decodes its video: unbounded, a crowd of uploads held a server
    thread each while they waited for a decoding slot."""
    from interface.chat import INPUT_CONCURRENCY, INPUT_QUEUE
    from interface.layout import build_demo

    demo = build_demo(backend)
    add_turns = [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "add_turn"]
    assert add_turns
    for function in add_turns:
        assert function.concurrency_id == INPUT_QUEUE
        assert function.concurrency_limit == INPUT_CONCURRENCY


def test_switching_models_gives_the_tabs_the_new_models_system_prompt():
    """InternVL2-8B-MPO has another default system message than InternVL 2.5: switching to it
    kept the first model's, unless the user had written their own."""
    from interface.layout import build_demo, prompts_after_switch, system_prompt_boxes
    from model_backend.prompt import DEFAULT_SYSTEM_PROMPT, INTERNVL2_SYSTEM_PROMPT
    from tests.scripted_backend import ScriptedBackend

    assert prompts_after_switch(
        [DEFAULT_SYSTEM_PROMPT, "Be brief."], DEFAULT_SYSTEM_PROMPT, INTERNVL2_SYSTEM_PROMPT
    ) == [INTERNVL2_SYSTEM_PROMPT, "Be brief."]
    demo = build_demo(ScriptedBackend("An answer.", models=["scripted", "another"]))
    boxes = {box._id for box in system_prompt_boxes(demo)}
    assert len(boxes) == 6  # one per tab, Document chat and Compare included
    switch = [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "switch"]
    assert len(switch) == 1 and boxes <= {block._id for block in switch[0].outputs}


def test_a_video_turn_with_numbers_that_are_not_finite_is_refused_by_name():
    """The UI's own handlers (callable by fn_index) turned inf into an OverflowError."""
    from interface.conversation import video_dict
    from model_backend.errors import InputError

    with pytest.raises(InputError, match="num_frames must be a finite number"):
        video_dict("clip.mp4", float("inf"), None, None, 1)
    with pytest.raises(InputError, match="end must be a finite number"):
        video_dict("clip.mp4", 8, 0.0, float("nan"), 1)
    assert video_dict("clip.mp4", 8.0, None, 2, 1)["end"] == 2.0


def test_a_new_video_turn_is_checked_by_the_clips_own_rules():
    """The panel's one early check (model_backend.media.check_turn) refuses what VideoClip
    refuses, in its words; the video tab only converts its boxes."""
    from types import SimpleNamespace

    import gradio as gr

    from interface.video_chat import build_video_chat_tab
    from model_backend.base import GenerationSettings
    from tests.scripted_backend import ScriptedBackend

    with gr.Blocks() as demo:
        build_video_chat_tab(ScriptedBackend("ok"), GenerationSettings(), "", 1)
    (add_turn,) = [fn.fn for fn in demo.fns.values() if fn.name == "add_turn"]
    request = SimpleNamespace(session_hash="session")
    message = {"text": "What happens?", "files": []}
    with pytest.raises(gr.Error, match=r"The start \(1.5 s\) must come before the end \(0.5 s\)"):
        add_turn(request, message, [], False, "Default", "clip.mp4", 8, 1.5, 0.5, 1)
    with pytest.raises(gr.Error, match=r"num_frames \(frames\) must be between 1 and 64"):
        add_turn(request, message, [], False, "Default", "clip.mp4", 65, None, None, 1)


def test_streaming_does_not_depend_on_gradio():
    from tests.test_structure import imported_after

    assert "gradio" not in imported_after("import interface.streaming")
