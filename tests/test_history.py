"""History kept in the browser: a conversation -> a stored entry (text, thumbnails, a title),
entries -> the panel's list, restore -> turns without media and a notice, and the bounds that
keep it within the browser's storage."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from interface import history
from interface.conversation import assistant_turn, user_turn, video_dict
from interface.grounding_chat import collect_grounding_turn
from interface.image_chat import collect_image_turn
from interface.rendering import stats_line
from interface.video_chat import collect_video_turn
from model_backend.errors import InputError
from model_backend.types import GenerationStats
from tests.conftest import BOUNCING_BALL, CAT, COFFEE

MODELS = {"InternVL2_5-1B"}  # the models the demo serves


def answer(text: str = "A cat on a sofa.") -> dict:
    return assistant_turn(text, "12 tokens · 30 tokens/s", "InternVL2_5-1B")


def thumbnail_size(url: str) -> tuple[int, int]:
    assert url.startswith("data:image/jpeg;base64,")
    data = base64.b64decode(url.removeprefix("data:image/jpeg;base64,"))
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return image.size


def test_an_entry_keeps_the_text_a_title_and_small_thumbnails_but_no_server_path():
    turns = [user_turn("What is in   this image?", [CAT]), answer(), user_turn("Colour?"), answer()]
    entry = history.make_entry(turns, "abc")
    assert entry["title"] == "What is in this image?"
    assert [t["role"] for t in entry["turns"]] == ["user", "assistant"] * 2
    first = entry["turns"][0]
    assert first["media"] == ["cat.jpg"]
    (thumbnail,) = first["thumbnails"]
    assert max(thumbnail_size(thumbnail)) == history.THUMBNAIL_SIDE  # 451x300 -> 96x64
    assert len(thumbnail) < 8000
    assert entry["turns"][1] == {
        "role": "assistant",
        "text": "A cat on a sofa.",
        "stats": "12 tokens · 30 tokens/s",
        "model": "InternVL2_5-1B",
    }
    assert CAT not in json.dumps(entry)  # where the file was on the server is not kept


def test_a_video_is_kept_as_one_frame_and_a_missing_file_as_its_name():
    clip = video_dict(BOUNCING_BALL, 8, None, None, 1)
    entry = history.make_entry([user_turn("What moves?", video=clip), answer()], "v")
    (frame,) = entry["turns"][0]["thumbnails"]
    assert max(thumbnail_size(frame)) <= history.THUMBNAIL_SIDE
    assert entry["turns"][0]["media"] == ["bouncing_ball.mp4"]

    gone = history.make_entry([user_turn("What?", ["/gone/photo.png"]), answer()], "g")
    assert gone["turns"][0]["media"] == ["photo.png"]
    assert gone["turns"][0]["thumbnails"] == []


def test_the_list_is_newest_first_with_title_and_time():
    entries = []
    for number, saved_at in enumerate((1_700_000_000, 1_700_000_600)):
        entry = history.make_entry([user_turn(f"Question {number}", [CAT]), answer()], str(number))
        entries = history.saved(entries, entry, saved_at)
    assert history.choices(entries) == [
        ("Question 1 · 2023-11-14 22:23 UTC", "1"),
        ("Question 0 · 2023-11-14 22:13 UTC", "0"),
    ]
    # Saved again (a new answer): replaced, and first in the list, under its first title.
    longer = [user_turn("Question 0", [CAT]), answer(), user_turn("More?"), answer()]
    entries = history.saved(entries, history.make_entry(longer, "0"), 1_700_001_000)
    assert [e["id"] for e in entries] == ["0", "1"]
    assert len(entries[0]["turns"]) == 4
    assert history.without(entries, "0") == entries[1:]


def test_a_title_is_the_first_question_shortened():
    long = "Describe " + "every detail " * 20
    assert history.title_of([user_turn(long)]).endswith("…")
    assert len(history.title_of([user_turn(long)])) == history.TITLE_CHARS
    # Grounding's "Detect all": nothing was typed, the prompt is the title.
    detect = collect_grounding_turn({"text": ""}, [], COFFEE, "detect")
    prompt = " ".join(detect["text"].split())
    assert history.title_of([detect]) == history.capped(prompt, history.TITLE_CHARS)


def test_restore_gives_the_text_back_without_media_and_a_notice():
    turns = [user_turn("What is it?", [CAT]), answer(), user_turn("And the colour?"), answer()]
    entry = history.saved([], history.make_entry(turns, "c"), 1_700_000_000)[0]
    restored = history.restored_turns(entry)
    assert [(t["role"], t["text"]) for t in restored] == [(t["role"], t["text"]) for t in turns]
    assert all(not t["images"] and not t["video"] for t in restored)
    assert restored[1]["model"] == "InternVL2_5-1B" and restored[1]["stats"]
    notice = history.restore_notice(entry)
    assert "What is it?" in notice and "cat.jpg" in notice
    assert "Attach the original files again" in notice
    assert notice.count("<img src='data:image/jpeg;base64,") == 1
    # Saving the restored conversation again finds nothing new (the thumbnails come along).
    assert history.make_entry(restored, "c")["turns"] == entry["turns"]


def test_a_restored_conversation_is_not_continued_without_its_files():
    entry = history.make_entry([user_turn("What is it?", [CAT]), answer()], "c")
    restored = history.restored_turns(entry)
    with pytest.raises(InputError, match="add an image first"):
        collect_image_turn({"text": "Colour?"}, restored, None)
    assert collect_image_turn({"text": "Colour?"}, restored, CAT)["images"] == [CAT]

    clip = video_dict(BOUNCING_BALL, 8, None, None, 1)
    video_entry = history.make_entry([user_turn("What moves?", video=clip), answer()], "v")
    with pytest.raises(InputError, match="add a video first"):
        collect_video_turn(
            {"text": "Faster?"}, history.restored_turns(video_entry), None, 8, 0, 0, 1
        )


def test_texts_turns_and_thumbnails_are_bounded():
    long = "word " * 5000
    entry = history.make_entry([user_turn(long, [CAT] * 12), answer(long)], "big")
    assert all(len(t["text"]) == history.MAX_TEXT_CHARS for t in entry["turns"])
    assert len(entry["turns"][0]["thumbnails"]) == history.MAX_THUMBNAILS
    # A very long conversation keeps its newest exchanges within MAX_ENTRY_BYTES.
    turns = [turn for _ in range(40) for turn in (user_turn("漢字" * 3000), answer("答" * 3000))]
    entry = history.make_entry(turns, "long")
    assert history.json_bytes(entry) <= history.MAX_ENTRY_BYTES
    assert entry["partial"] and entry["turns"][-1]["text"] == history.capped("答" * 3000)
    assert "oldest turns were left out" in history.restore_notice(entry)


def test_the_store_keeps_the_newest_conversations_within_its_bytes():
    entries = []
    for number in range(history.MAX_ENTRIES + 10):
        entry = history.make_entry([user_turn(f"Q{number}"), answer()], str(number))
        entries = history.saved(entries, entry, 1_700_000_000 + number)
    assert len(entries) == history.MAX_ENTRIES
    assert entries[0]["id"] == str(history.MAX_ENTRIES + 9)  # the newest kept
    big = []
    for number in range(history.MAX_ENTRIES):
        turns = [user_turn("x" * 3000, [CAT, COFFEE]), answer("y" * 4000)] * 3
        big = history.saved(big, history.make_entry(turns, str(number)), 1_700_000_000 + number)
    assert history.json_bytes(big) <= history.MAX_STORE_BYTES
    assert big[0]["id"] == str(history.MAX_ENTRIES - 1)
    # Four tabs, encrypted as base64 (4/3), stay under the browser's 5 MB.
    assert 4 * history.MAX_STORE_BYTES * 4 / 3 < 5_000_000 * 0.7


def test_what_the_browser_sends_is_checked():
    good = history.make_entry([user_turn("<b>Hi</b>", [CAT]), answer()], "ok")
    bad_thumbnail = json.loads(json.dumps(good))
    bad_thumbnail["id"] = "svg"
    bad_thumbnail["turns"][0]["thumbnails"] = ["data:image/svg+xml;base64,PHN2Zz4="]
    value = [good, "junk", {"id": "x"}, {"id": "y", "title": "t", "turns": [{"role": "robot"}]}]
    entries = history.valid_entries([*value, bad_thumbnail, good], MODELS)
    assert [e["id"] for e in entries] == ["ok", "svg"]
    assert entries[1]["turns"][0]["thumbnails"] == []
    assert history.valid_entries(None, MODELS) == []
    assert history.valid_entries({"a": 1}, MODELS) == []
    notice = history.restore_notice(entries[0])
    assert "<b>" not in notice and "&lt;b&gt;Hi&lt;/b&gt;" in notice


def test_only_completed_answers_are_saved():
    assert not history.answered([])
    assert not history.answered([user_turn("Q")])
    assert not history.answered([user_turn("Q"), assistant_turn("streaming…")])
    assert history.answered([user_turn("Q"), answer()])


def test_votes_are_announced_and_kept_only_with_a_feedback_folder(tmp_path, monkeypatch):
    from interface.layout import UIOptions, build_demo
    from tests.scripted_backend import ScriptedBackend

    def notes(demo) -> list[str]:
        return [b.value for b in demo.blocks.values() if b.elem_id == "feedback-note"]

    monkeypatch.chdir(tmp_path)
    assert UIOptions().feedback_dir is None
    assert notes(build_demo(ScriptedBackend("ok"))) == []
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere without the option

    folder = tmp_path / "votes"
    demo = build_demo(ScriptedBackend("ok"), UIOptions(feedback_dir=str(folder)))
    (note,) = notes(demo)
    assert "kept on this server" in note and str(folder) in note
    assert folder.is_dir()


def test_every_tab_has_its_own_history_in_the_browser():
    import gradio as gr

    from interface.layout import build_demo
    from tests.scripted_backend import ScriptedBackend

    demo = build_demo(ScriptedBackend("ok"))
    stores = [b for b in demo.blocks.values() if isinstance(b, gr.BrowserState)]
    assert sorted(s.storage_key for s in stores) == [
        f"internvl-demo-history-v1-{tab}"
        for tab in ("document-chat", "grounding", "image-chat", "multi-image", "video-chat")
    ]
    ids = {b.elem_id for b in demo.blocks.values()}
    for tab in ("image-chat", "multi-image", "document-chat", "video-chat", "grounding"):
        assert {f"{tab}-history-list", f"{tab}-history-notice", f"{tab}-chatbot"} <= ids


def test_likes_survive_a_reload_and_nothing_else_is_taken_as_one():
    liked, disliked = {**answer(), "feedback": "like"}, {**answer("No."), "feedback": "dislike"}
    turns = [user_turn("What is it?", [CAT]), liked, user_turn("Sure?"), disliked]
    entry = history.make_entry(turns, "abc")
    from_browser = json.loads(json.dumps(entry))  # as the browser gives it back
    from_browser["turns"][3]["feedback"] = "<script>"  # tampered with in the browser
    (cleaned,) = history.valid_entries([from_browser], MODELS)
    restored = history.restored_turns(cleaned)
    assert restored[1]["feedback"] == "like"
    assert restored[3].get("feedback") is None


def test_a_new_conversation_never_overwrites_a_saved_one():
    import gradio as gr

    from interface.chat import ChatPanel, ChatTab
    from tests.scripted_backend import ScriptedBackend

    with gr.Blocks() as demo:
        tab = ChatTab(name="chat", collect_turn=lambda message, turns: {}, placeholder="")
        panel = ChatPanel(ScriptedBackend("ok"), tab)
        saved = history.History("chat")
        saved.wire(panel, history.restore_notice_box("chat"))

    def observed(turns, current):
        updates = saved.observe(turns, current)
        return updates[saved.current], updates[saved.pending]

    first = [user_turn("What is in this image?", [CAT]), answer()]
    current, entry = observed(first, None)
    # A follow-up, Regenerate and a like go on under the same id.
    longer = [*first, user_turn("Colour?"), answer("Grey.")]
    assert observed(longer, current)[1]["id"] == entry["id"]
    current, _ = observed(longer, current)
    again = [*first, user_turn("Colour?"), {**answer("Black."), "feedback": "like"}]
    assert observed(again, current)[1]["id"] == entry["id"]

    # The same first question in another conversation is not the saved one.
    other = [user_turn("What is in this image?", [CAT]), answer("A dog.")]
    assert observed(other, current)[1]["id"] != entry["id"]

    # Clear (the button or the chatbot's own) forgets which conversation was saved.
    for block, event in ((panel.clear_btn, "click"), (panel.chatbot, "clear")):
        (clear,) = [
            fn
            for fn in demo.fns.values()
            if (block._id, event) in map(tuple, fn.targets) and saved.current in fn.outputs
        ]
        assert clear.fn()[saved.current] is None
    assert observed([], current)[0] is None  # emptied by any other way too
    assert observed(first, None)[1]["id"] != entry["id"]


def test_figures_and_models_from_the_browser_are_kept_only_as_the_demo_writes_them():
    stats = GenerationStats(1234, 50, 0.25, 3.0, stopped=True, reused_tokens=2048).summary()
    good = history.make_entry([user_turn("Q"), assistant_turn("A", stats, "InternVL2_5-1B")], "g")
    forged = json.loads(json.dumps(good))
    forged["id"] = "f"
    forged["turns"][1].update(stats="<img src=x onerror=alert(1)> ![](http://evil/x.png)")
    forged["turns"][1].update(model="GPT-9")
    kept, cleaned = history.valid_entries([good, forged], MODELS)
    assert kept["turns"][1]["stats"] == stats and kept["turns"][1]["model"] == "InternVL2_5-1B"
    assert "stats" not in cleaned["turns"][1] and "model" not in cleaned["turns"][1]
    # Figures are made safe where they are shown, too.
    line = stats_line("<img src=x onerror=alert(1)> ![](http://evil/x.png)")
    assert "<img" not in line and "\\![" in line  # a tag and an image shown as text


def test_what_the_browser_sends_is_bounded_like_what_is_saved():
    many = [turn for n in range(5000) for turn in (user_turn(f"Q{n}"), answer(f"A{n}"))]
    raw = json.loads(json.dumps({"id": "many", "time": None, "title": "t", "turns": []}))
    raw["turns"] = [history.stored_turn(turn) for turn in many]
    (entry,) = history.valid_entries([raw], MODELS)
    assert len(entry["turns"]) == history.MAX_TURNS and entry["partial"]
    assert entry["turns"][-1]["text"] == "A4999"
    assert len(history.make_entry(many, "m")["turns"]) == history.MAX_TURNS  # saved the same

    huge = "data:image/jpeg;base64," + "A" * 1_000_000
    fat = history.make_entry([user_turn("What is it?", [CAT]), answer()], "fat")
    fat["turns"][0]["thumbnails"] = [huge] * 100
    fat["turns"] = fat["turns"] * 40
    (entry,) = history.valid_entries([fat], MODELS)
    assert history.json_bytes(entry) <= history.MAX_ENTRY_BYTES
    assert huge not in json.dumps(entry)

    one = history.make_entry([user_turn("x" * 3000, [CAT, COFFEE]), answer("y" * 4000)] * 3, "")
    big = [{**one, "id": str(n)} for n in range(history.MAX_ENTRIES * 3)]
    entries = history.valid_entries(big, MODELS)
    assert history.json_bytes(entries) <= history.MAX_STORE_BYTES
    assert entries[0]["id"] == "0"
