"""The Compare tab and its `/compare` and `/compare_vote` endpoints.

Through gradio_client on the tiny checkpoint (both sides stream, the reasoning switch, Stop),
and on a scripted backend whose answer names its model (which answer a vote chose). The tab's
own events run as the page runs them (by number, each session's state kept on the server).
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from interface.compare import build_compare_tab
from interface.settings import SETTING_NAMES, default_system_prompt
from model_backend.base import GenerationSettings
from model_backend.styles import style_question
from tests.conftest import BOUNCING_BALL, CAT, REPO, FakeStore, generate_threads, wait_until
from tests.scripted_backend import ScriptedBackend

SMALL, LARGE = "InternVL2_5-1B", "InternVL2_5-8B"


class ModelNamingBackend(ScriptedBackend):
    """Answers "An answer from <model>.": a vote's chosen and rejected answers tell apart."""

    def stream(self, conversation, settings, *, model=None, chat=None):
        self.reply = f"An answer from {self.check_model(model)}."  # one request at a time
        return super().stream(conversation, settings, model=model, chat=chat)


@contextmanager
def compare_app(backend, feedback=None, concurrency_limit: int = 1):
    """A page with just the Compare tab, launched in this process."""
    with gr.Blocks() as demo:
        build_compare_tab(
            backend,
            GenerationSettings(),
            default_system_prompt(backend.info),
            concurrency_limit,
            feedback=feedback,
        )
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        yield demo, url
    finally:
        demo.close()


@contextmanager
def client_of(url: str):
    client = Client(url, verbose=False)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def tiny_app(backend, gradio_temp_dir):
    with compare_app(backend) as app:
        yield app


@pytest.fixture
def tiny_client(tiny_app):
    with client_of(tiny_app[1]) as client:
        yield client


@pytest.fixture(scope="module")
def store():
    return FakeStore()


@pytest.fixture(scope="module")
def scripted_app(gradio_temp_dir, store):
    backend = ModelNamingBackend("", models=[SMALL, LARGE])
    with compare_app(backend, feedback=store) as (demo, url):
        yield backend, demo, url


@pytest.fixture
def scripted_client(scripted_app, store):
    store.pairs.clear()
    with client_of(scripted_app[2]) as client:
        yield client


class Page:
    """One browser session: runs the tab's events by number; its state stays on the server."""

    def __init__(self, demo, url: str, name: str):
        self.demo, self.url, self.hash = demo, url, name

    def event(self, name: str) -> int:
        return min(index for index, fn in self.demo.fns.items() if fn.name == name)

    def run(self, name: str, data: list) -> dict:
        """Run a queued event to its end; the final message."""
        joined = httpx.post(
            f"{self.url}gradio_api/queue/join",
            json={"data": data, "fn_index": self.event(name), "session_hash": self.hash},
        )
        joined.raise_for_status()
        event_id = joined.json()["event_id"]
        url = f"{self.url}gradio_api/queue/data"
        with httpx.stream("GET", url, params={"session_hash": self.hash}, timeout=60) as reply:
            for line in reply.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line.removeprefix("data:"))
                if message.get("event_id") == event_id and message["msg"] == "process_completed":
                    return message
        raise AssertionError(f"{name} did not complete")

    def click(self, name: str) -> None:
        """An event outside the queue (Stop)."""
        body = {"data": [], "fn_index": self.event(name), "session_hash": self.hash}
        httpx.post(f"{self.url}gradio_api/run/predict", json=body).raise_for_status()

    def upload(self, path: str) -> dict:
        with open(path, "rb") as file:
            (uploaded,) = httpx.post(f"{self.url}gradio_api/upload", files={"files": file}).json()
        return {
            "path": uploaded,
            "orig_name": Path(path).name,
            "meta": {"_type": "gradio.FileData"},
        }

    def ask(self, question: str, images: list | None, models: list[str], max_new_tokens: int):
        """Add a question (left without reasoning, right with), then stream both answers; the
        final message of the answers."""
        added = self.run("add_question", [question, None, None, images, None, 8, False, True,
                                          "Default"])  # fmt: skip
        assert added["success"], added
        settings = {**vars(GenerationSettings()), "max_new_tokens": max_new_tokens}
        values = [settings[name] for name in SETTING_NAMES]
        system_prompt = self.demo.fns[self.event("respond")].inputs[5].value
        return self.run("respond", [None, None, *models, None, system_prompt, *values])


def chatbot_text(messages: list[dict]) -> str:
    return " ".join(str(message["content"]) for message in messages)


def grew(texts: list[str]) -> bool:
    """The answer was seen growing: several lengths, each longer than the one before."""
    lengths = [len(text) for text in dict.fromkeys(texts) if text]
    return len(lengths) >= 2 and lengths == sorted(lengths)


# -- streaming ----------------------------------------------------------------------------------


def test_both_sides_stream_one_after_the_other_on_a_local_backend(tiny_client, slow_backend):
    job = tiny_client.submit(
        "What is in the image?",
        images=[handle_file(CAT)],
        max_new_tokens=24,
        api_name="/compare",
    )
    outputs = list(job)
    lefts, rights = [o[0] for o in outputs], [o[1] for o in outputs]
    assert grew(lefts) and grew(rights), "each answer should stream"
    # One generation at a time: the left answer streamed while the right one waited.
    assert any(left and not right for left, right, *_ in outputs)
    left, right, left_figures, right_figures, *thinking = job.result()
    assert thinking == ["", ""]  # neither side thinks
    assert left and right
    for figures in (left_figures, right_figures):
        assert "tokens" in figures and "stopped" not in figures


def test_the_tab_says_how_the_answers_run(tiny_app):
    demo, _ = tiny_app
    (note,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "compare-note"]
    assert "one answer at a time" in note.value
    assert "Votes are not kept" in note.value


def test_the_reasoning_switch_changes_only_that_sides_prompt(tiny_client, stream_spy):
    tiny_client.predict(
        "What is in the image?",
        images=[handle_file(CAT)],
        right_reasoning=True,
        max_new_tokens=4,
        api_name="/compare",
    )
    left, right = (call.conversation.turns[-1] for call in stream_spy)  # left first, locally
    assert (left.reasoning, right.reasoning) == (False, True)
    asked = [style_question(turn.text, turn.reasoning, turn.answer_style) for turn in (left, right)]
    assert asked[0] == "What is in the image?" and asked[1] != asked[0]
    assert len(left.images) == len(right.images) == 1


def test_stop_ends_both_answers(tiny_app, slow_backend):
    demo, url = tiny_app
    page = Page(demo, url, "stop-session")
    model = slow_backend.info.model

    def stop_once_generating():
        assert wait_until(lambda: generate_threads(), timeout=60)
        page.click("stop")

    stopper = threading.Thread(target=stop_once_generating)
    stopper.start()
    done = page.ask("Describe the image.", [page.upload(CAT)], [model, model], 4000)
    stopper.join()
    assert done["success"], done
    left, right = done["output"]["data"][2:4]  # the two chatbots
    assert "stopped" in chatbot_text(left[-1:]) and "stopped" in chatbot_text(right[-1:])
    assert wait_until(lambda: not generate_threads(), timeout=15), "nothing keeps running"


def test_cancelling_a_compare_job_stops_the_model(tiny_client, slow_backend, stream_spy):
    job = tiny_client.submit(
        "Describe the image.", images=[handle_file(CAT)], max_new_tokens=4000, api_name="/compare"
    )
    left_started = lambda: any(output[0] for output in job.outputs())  # noqa: E731
    assert wait_until(left_started, timeout=60), "the left answer should start streaming"
    job.cancel()
    assert wait_until(lambda: not generate_threads(), timeout=15), "nothing keeps generating"
    # The right answer was never started, and the model answers the next request.
    assert len(stream_spy) == 1
    left, right, *_ = tiny_client.predict(
        "What is it?", images=[handle_file(CAT)], max_new_tokens=4, api_name="/compare"
    )
    assert left and right
    assert [call.conversation.turns[-1].text for call in stream_spy[1:]] == ["What is it?"] * 2


def test_both_answers_stream_at_the_same_time_on_an_engine(gradio_temp_dir):
    backend = ScriptedBackend("An answer that takes a while. " * 4, seconds_per_piece=0.02)
    with compare_app(backend, concurrency_limit=2) as (demo, url), client_of(url) as client:
        (note,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", "") == "compare-note"]
        assert "Both answers stream at the same time" in note.value
        outputs = list(client.submit("What?", api_name="/compare"))
    partial = [o for o in outputs if 0 < len(o[0]) < len(backend.reply)]
    assert any(0 < len(right) < len(backend.reply) for _, right, *_ in partial)
    assert outputs[-1][:2] == (backend.reply, backend.reply)


# -- follow-ups and models ----------------------------------------------------------------------


def test_a_follow_up_goes_to_both_sides_with_their_own_histories(scripted_app):
    backend, demo, url = scripted_app
    page = Page(demo, url, "follow-up-session")
    backend.conversations.clear()
    backend.requests.clear()
    assert page.ask("What is it?", [page.upload(CAT)], [SMALL, LARGE], 64)["success"]
    assert page.ask("And its colour?", None, [SMALL, LARGE], 64)["success"]
    left, right = backend.conversations[2:]
    assert [t.text for t in left.turns] == ["What is it?", f"An answer from {SMALL}.",
                                            "And its colour?"]  # fmt: skip
    assert [t.text for t in right.turns] == ["What is it?", f"An answer from {LARGE}.",
                                             "And its colour?"]  # fmt: skip
    for conversation in (left, right):  # the image belongs to the first question
        assert [len(turn.images) for turn in conversation.turns] == [1, 0, 0]
    assert [t.reasoning for t in right.turns if t.role == "user"] == [True, True]
    chats = [chat for _, chat in backend.requests]
    assert chats == ["follow-up-session/compare-left", "follow-up-session/compare-right"] * 2


def test_both_models_are_loaded_outside_the_model_queue(scripted_app):
    _, demo, _ = scripted_app
    by_id = {fn._id: fn for fn in demo.fns.values()}
    (respond,) = [fn for fn in demo.fns.values() if fn.name == "respond"]
    load = by_id[respond.trigger_after]
    assert load.name == "load_models" and respond.trigger_only_on_success
    assert load.concurrency_id != respond.concurrency_id == "model"


# -- votes --------------------------------------------------------------------------------------


def test_a_vote_writes_the_pair_with_the_winner_chosen(scripted_client, store):
    left, right, *_ = scripted_client.predict(
        "Which animal is it?",
        images=[handle_file(CAT)],
        left_model=SMALL,
        right_model=LARGE,
        right_reasoning=True,
        api_name="/compare",
    )
    assert (left, right) == (f"An answer from {SMALL}.", f"An answer from {LARGE}.")
    message = scripted_client.predict("right", api_name="/compare_vote")
    assert "Kept as a preference pair" in message
    (pair,) = store.pairs
    assert pair["question"] == "Which animal is it?"
    assert (pair["chosen"], pair["rejected"]) == (right, left)
    assert (pair["chosen_model"], pair["rejected_model"]) == (LARGE, SMALL)
    assert pair["source"] == "vote"
    (media,) = pair["media"]
    assert Path(media).read_bytes() == Path(CAT).read_bytes()
    assert pair["settings"]["chosen"]["reasoning"] and not pair["settings"]["rejected"]["reasoning"]
    # One vote per comparison.
    with pytest.raises(AppError, match="already voted on this comparison"):
        scripted_client.predict("left", api_name="/compare_vote")
    assert len(store.pairs) == 1


def test_a_vote_on_a_video_keeps_the_frames_the_model_saw(scripted_client, store):
    scripted_client.predict(
        "What does the ball do?",
        video=handle_file(BOUNCING_BALL),
        num_frames=4,
        left_model=SMALL,
        right_model=LARGE,
        api_name="/compare",
    )
    scripted_client.predict("left", api_name="/compare_vote")
    (pair,) = store.pairs
    assert [Path(media).name for media in pair["media"]] == [Path(BOUNCING_BALL).name]
    settings = pair["settings"]
    assert (settings["num_frames"], settings["start"], settings["end"]) == (4, None, None)


def test_a_video_pair_in_the_store_has_as_many_frames_as_the_model_saw(tmp_path, gradio_temp_dir):
    from interface.preferences import PreferenceStore

    store = PreferenceStore(tmp_path / "feedback")
    backend = ModelNamingBackend("", models=[SMALL, LARGE])
    with compare_app(backend, feedback=store) as (_, url), client_of(url) as client:
        client.predict(
            "What does the ball do?",
            video=handle_file(BOUNCING_BALL),
            num_frames=5,
            right_model=LARGE,
            api_name="/compare",
        )
        client.predict("right", api_name="/compare_vote")
    (pair,) = store.pairs()
    assert len(pair["image"]) == 5  # the frames, as JPEG pictures in images/
    assert pair["question"].startswith("Frame1: <image>\n")
    assert pair["question"].count("<image>") == 5
    assert all((store.folder / frame).is_file() for frame in pair["image"])


def test_a_tie_or_two_bad_answers_write_no_pair(scripted_client, store):
    for choice in ("tie", "both_bad"):
        scripted_client.predict("What is it?", images=[handle_file(CAT)], api_name="/compare")
        message = scripted_client.predict(choice, api_name="/compare_vote")
        assert "nothing was written" in message
    assert store.pairs == []


def test_a_vote_without_a_comparison_is_refused(scripted_client, store):
    with pytest.raises(AppError, match="no comparison to vote on yet"):
        scripted_client.predict("left", api_name="/compare_vote")
    with pytest.raises(AppError, match="choice must be one of left, right, tie, both_bad"):
        scripted_client.predict("middle", api_name="/compare_vote")
    assert store.pairs == []


def test_without_feedback_a_vote_writes_nothing(tiny_client, gradio_temp_dir):
    tiny_client.predict("What is it?", images=[handle_file(CAT)], max_new_tokens=4,
                        api_name="/compare")  # fmt: skip
    message = tiny_client.predict("left", api_name="/compare_vote")
    assert "keeps no votes: nothing was written" in message
    for folder in (REPO, gradio_temp_dir):
        assert not list(folder.rglob("pairs.jsonl"))


def test_bad_requests_are_refused_clearly(scripted_client):
    with pytest.raises(AppError, match="Please type a question"):
        scripted_client.predict("  ", api_name="/compare")
    with pytest.raises(AppError, match="not one of this demo's models"):
        scripted_client.predict("Q?", left_model="GPT-9", api_name="/compare")
    with pytest.raises(AppError, match="images or on a video, not both"):
        scripted_client.predict(
            "Q?", images=[handle_file(CAT)], video=handle_file(BOUNCING_BALL), api_name="/compare"
        )
