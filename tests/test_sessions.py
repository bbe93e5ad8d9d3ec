"""A model per browser session, and the API's `model` parameter, on a scripted backend that
records the model and the conversation id of every request.

Sessions speak to the app as the page does (events by number, each session's state kept on the
server), so two sessions run side by side without a browser.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from interface.chat import ChatPanel
from interface.layout import CSS, build_demo, system_prompt_boxes
from model_backend.base import GenerationSettings
from model_backend.prompt import DEFAULT_SYSTEM_PROMPT, INTERNVL2_SYSTEM_PROMPT
from tests.conftest import EXAMPLES
from tests.scripted_backend import ScriptedBackend

CAT = str(EXAMPLES / "cat.jpg")
PROMPTS = {"InternVL2_5-8B": DEFAULT_SYSTEM_PROMPT, "InternVL2-8B-MPO": INTERNVL2_SYSTEM_PROMPT}
FIRST, SECOND = PROMPTS
SETTINGS = [getattr(GenerationSettings(), name) for name in ("temperature", "top_p", "top_k")]


@contextmanager
def two_model_app():
    backend = ScriptedBackend("An answer.", models=list(PROMPTS), prompts=PROMPTS)
    demo = build_demo(backend)
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, css=CSS)
    try:
        yield backend, demo, url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def app(gradio_temp_dir):
    with two_model_app() as running:
        yield running


@pytest.fixture
def scripted(app):
    backend, _, _ = app
    backend.too_large.clear()
    return backend


class Session:
    """One browser session: runs the page's events by number; its state stays on the server."""

    def __init__(self, demo, url: str, name: str):
        self.demo, self.url, self.hash = demo, url, name

    def event(self, name: str, output_elem_id: str | None = None) -> int:
        """The number of an event running function `name` (that updates `output_elem_id`)."""
        return min(
            index
            for index, fn in self.demo.fns.items()
            if fn.name == name
            and (output_elem_id is None or output_elem_id in {b.elem_id for b in fn.outputs})
        )

    def run(self, name: str, data: list, output_elem_id: str | None = None) -> dict:
        """Run an event to its end; the final message (`success`, `output`)."""
        index = self.event(name, output_elem_id)
        joined = httpx.post(
            f"{self.url}gradio_api/queue/join",
            json={"data": data, "fn_index": index, "session_hash": self.hash, "event_data": None},
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

    def switch(self, model: str) -> dict:
        prompts = [DEFAULT_SYSTEM_PROMPT] * len(system_prompt_boxes(self.demo))  # every tab's
        return self.run("switch", [model, None, *prompts])

    def ask(self, question: str) -> dict:
        """A question about the cat in the Image chat tab, and its answer."""
        with open(CAT, "rb") as file:
            (path,) = httpx.post(f"{self.url}gradio_api/upload", files={"files": file}).json()
        image = {"path": path, "orig_name": "cat.jpg", "meta": {"_type": "gradio.FileData"}}
        message = {"text": question, "files": []}
        added = self.run("add_turn", [message, None, False, "Default", image], "image-chat-chatbot")
        assert added["success"], added
        # The conversation and the session's model come from the server's state (None here).
        settings = [*SETTINGS, 1.1, 16, 12]
        return self.run("respond", [None, None, "", *settings], "image-chat-chatbot")


def test_each_session_answers_with_its_own_model(app, scripted):
    _, demo, url = app
    one, other = Session(demo, url, "session-one"), Session(demo, url, "session-two")
    switched = one.switch(SECOND)
    assert switched["success"], switched
    header, *prompts = switched["output"]["data"][1:]
    assert f"Model: `{SECOND}`" in header  # this session's header
    # Every tab's box now holds the new model's default system prompt.
    assert prompts == [INTERNVL2_SYSTEM_PROMPT] * len(system_prompt_boxes(demo))
    assert SECOND in scripted.loaded
    scripted.requests.clear()
    assert one.ask("What is it?")["success"]
    assert other.ask("What is it?")["success"]
    assert one.ask("And now?")["success"]
    assert scripted.requests == [
        (SECOND, "session-one/image-chat"),
        (FIRST, "session-two/image-chat"),  # the other session keeps the default model
        (SECOND, "session-one/image-chat"),
    ]


def test_an_export_records_the_sessions_model(app, scripted):
    _, demo, url = app
    session = Session(demo, url, "session-five")
    assert session.switch(SECOND)["success"]
    assert session.ask("What is it?")["success"]
    settings = [*SETTINGS, 1.1, 16, 12]
    exported = session.run("exports", [None, None, "", *settings], "image-chat-export-json")
    json_file = exported["output"]["data"][0]["value"]["path"]
    record = json.loads(httpx.get(f"{url}gradio_api/file={json_file}").text)
    assert record["model"] == SECOND
    assert record["turns"][1]["text"] == "An answer."


def test_a_switch_that_fails_leaves_the_session_on_its_model(app, scripted):
    _, demo, url = app
    session = Session(demo, url, "session-three")
    scripted.too_large.add(SECOND)
    failed = session.switch(SECOND)
    assert not failed["success"]
    assert "does not fit in memory" in failed["output"]["error"]
    scripted.requests.clear()
    assert session.ask("What is it?")["success"]
    assert scripted.requests == [(FIRST, "session-three/image-chat")]


def test_clear_forgets_only_that_conversation(app, scripted):
    _, demo, url = app
    session = Session(demo, url, "session-four")
    scripted.cleared.clear()
    session.run("clear", [], "image-chat-chatbot")
    assert scripted.cleared == ["session-four/image-chat"]


def test_the_menu_goes_back_to_the_sessions_model_after_a_failed_switch(app):
    _, demo, _ = app
    (switch,) = [fn for fn in demo.fns.values() if fn.name == "switch"]
    put_back = [fn for fn in demo.fns.values() if fn.trigger_after == switch._id]
    assert len(put_back) == 1 and put_back[0].trigger_only_on_failure
    assert [b.elem_id for b in put_back[0].outputs] == ["model-choice"]
    assert put_back[0].fn(FIRST) == FIRST  # the session's model, as its state holds it


# -- the API ----------------------------------------------------------------------------------


@pytest.fixture
def client(app):
    _, _, url = app
    client = Client(url, verbose=False)
    yield client
    client.close()


@pytest.mark.parametrize(
    ("api_name", "arguments"),
    [
        ("/image_chat", {"image": handle_file(CAT), "question": "Q?"}),
        ("/multi_image_chat", {"images": [handle_file(CAT)], "question": "Q?"}),
        ("/grounding", {"image": handle_file(CAT), "query": "the cat"}),
    ],
)
def test_every_endpoint_takes_a_model(client, scripted, api_name, arguments):
    scripted.requests.clear()
    client.predict(**arguments, model=SECOND, api_name=api_name)
    client.predict(**arguments, api_name=api_name)  # none: the default model
    client.predict(**arguments, model="", api_name=api_name)
    assert scripted.requests == [(SECOND, None), (FIRST, None), (FIRST, None)]


def test_the_video_endpoint_takes_a_model(client, scripted, tmp_path):
    from tests.media_files import X264, write_video

    video = write_video(tmp_path / "clip.mp4", "libx264", 10, 20, options=X264)
    scripted.requests.clear()
    client.predict(
        video=handle_file(str(video)),
        question="Q?",
        num_frames=4,
        model=SECOND,
        api_name="/video_chat",
    )
    assert scripted.requests == [(SECOND, None)]


def test_an_unknown_model_is_refused_naming_the_choices(client, scripted):
    with pytest.raises(AppError, match=f"'GPT-9' is not one of this demo's models: {FIRST}, "):
        client.predict(handle_file(CAT), "Q?", model="GPT-9", api_name="/image_chat")
    assert client.predict(handle_file(CAT), "Q?", api_name="/image_chat") == ("An answer.", "")


def test_the_model_parameter_comes_after_the_others(client, scripted):
    """Clients that pass arguments by position keep working."""
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for api_name, endpoint in endpoints.items():
        if api_name.startswith("/compare"):  # its own parameters: two models, no history
            continue
        names = [p["parameter_name"] for p in endpoint["parameters"]]
        assert names[-2:] == ["max_tiles", "model"]
    scripted.requests.clear()
    everything_but_the_model = [None, "", False, "Default", 8, 0.2, 0.7, 0, 1.1, 12]
    client.predict(handle_file(CAT), "Q?", *everything_but_the_model, api_name="/image_chat")
    client.predict(
        handle_file(CAT), "Q?", *everything_but_the_model, SECOND, api_name="/image_chat"
    )
    assert scripted.requests == [(FIRST, None), (SECOND, None)]


def test_the_api_uses_the_chosen_models_own_system_prompt_unless_one_is_given(client, scripted):
    scripted.conversations.clear()
    client.predict(handle_file(CAT), "Q?", model=SECOND, api_name="/image_chat")
    client.predict(handle_file(CAT), "Q?", api_name="/image_chat")
    client.predict(handle_file(CAT), "Q?", system_prompt="Be brief.", model=SECOND,
                   api_name="/image_chat")  # fmt: skip
    prompts = [conversation.system_prompt for conversation in scripted.conversations]
    assert prompts == [INTERNVL2_SYSTEM_PROMPT, DEFAULT_SYSTEM_PROMPT, "Be brief."]


def test_a_sessions_model_is_loaded_again_outside_the_model_queue(app, scripted):
    """A session's model unloaded to make room for another's is loaded before its answer takes
    the model queue (a load takes minutes: nobody else's answer waits for it)."""
    _, demo, url = app
    by_id = {fn._id: fn for fn in demo.fns.values()}
    answers = [
        fn
        for fn in demo.fns.values()
        if fn.name == "respond" and isinstance(getattr(fn.fn, "__self__", None), ChatPanel)
    ]  # (the Compare tab chains its own, tested in test_compare.py)
    panels = {fn.fn.__self__ for fn in answers}
    assert len(panels) >= 5 and len(answers) == 3 * len(panels)  # Send, Regenerate, retry
    for respond in answers:
        load = by_id[respond.trigger_after]
        assert load.name == "load_model" and respond.trigger_only_on_success
        assert load.concurrency_id != respond.concurrency_id
    session = Session(demo, url, "session-six")
    assert session.switch(SECOND)["success"]
    assert session.ask("What is it?")["success"]
    scripted.too_large.add(SECOND)  # unloaded meanwhile, and there is no room for it now
    with open(CAT, "rb") as file:
        (path,) = httpx.post(f"{url}gradio_api/upload", files={"files": file}).json()
    image = {"path": path, "orig_name": "cat.jpg", "meta": {"_type": "gradio.FileData"}}
    message = {"text": "And now?", "files": []}
    assert session.run("add_turn", [message, None, False, "Default", image], "image-chat-chatbot")[
        "success"
    ]
    loaded = session.run("load_model", [None, None], "image-chat-chatbot")
    _, chatbot, question = loaded["output"]["data"]
    assert question["value"]["text"] == "And now?"  # the question is given back to edit
    assert chatbot[-1]["role"] == "assistant"  # and taken out of the chat
