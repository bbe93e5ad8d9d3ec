"""What one client can do to everyone else, through the API: requests cancelled while their
input is prepared, more jobs than its share, results nobody reads; and what API clients are
told when old turns are left out."""

from __future__ import annotations

import threading

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import ValidationError
from gradio_client.utils import Status

from interface import queueing
from model_backend.base import raise_if_cancelled
from tests.conftest import EXAMPLES, launched, wait_until
from tests.scripted_backend import ScriptedBackend

CAT = str(EXAMPLES / "cat.jpg")
STARTED = {Status.PROCESSING, Status.ITERATING}
LONG_REPLY = "word " * 2000  # 2,000 pieces at 0.01 s: 20 s unless stopped


class GatedBackend(ScriptedBackend):
    """A scripted backend whose preparation is held until `gate` opens (as a long prompt build
    would hold it; it stops when cancelled, as a backend's preparation should), that counts
    the preparations running at once, records how many pieces each answer had sent when it
    ended, and adds `notices` to its streams."""

    def __init__(self):
        super().__init__("An answer.")
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.gate.set()
        self.reply = "An answer."
        self.preparing = self.most_preparing = 0
        self.pieces_sent: list[int] = []  # by each answer, once it has ended
        self.notices: list[str] = []

    def stream(self, conversation, settings, **request):
        with self.lock:
            self.preparing += 1
            self.most_preparing = max(self.most_preparing, self.preparing)
        try:
            while not self.gate.wait(0.01):  # poll
                raise_if_cancelled()
        finally:
            with self.lock:
                self.preparing -= 1
        stream = super().stream(conversation, settings, **request)
        stream.notices.extend(self.notices)
        stream.pieces = self.counted(stream.pieces)
        return stream

    def counted(self, pieces):
        sent = 0
        try:
            for piece in pieces:
                sent += 1
                yield piece
        finally:
            self.pieces_sent.append(sent)

    def pieces_in(self, reply: str) -> int:
        return -(-len(reply) // self.piece_size)


@pytest.fixture(scope="module")
def gated_app(gradio_temp_dir):
    backend = GatedBackend()
    with launched(backend) as url:
        yield backend, url


@pytest.fixture
def app(gated_app):
    backend, url = gated_app
    backend.reset()
    clients = []

    def new_client() -> Client:
        clients.append(Client(url, verbose=False))
        return clients[-1]

    yield backend, url, new_client
    backend.gate.set()
    for client in clients:
        client.close()
    assert wait_until(lambda: backend.preparing == 0)


def ask(client: Client, question: str = "What is it?", **arguments):
    return client.submit(
        image=handle_file(CAT), question=question, api_name="/image_chat", **arguments
    )


# -- a request cancelled while its input is prepared ------------------------------------------


def test_cancelled_requests_leave_no_preparation_working(app):
    backend, _url, new_client = app
    client = new_client()
    backend.gate.clear()  # every preparation takes until cancelled
    first = ask(client)
    assert wait_until(lambda: backend.preparing == 1)
    first.cancel()
    for _ in range(2):  # the model's place is free again: the next requests start
        job = ask(client)
        assert wait_until(lambda job=job: job.status().code in STARTED)
        job.cancel()
    # Never two preparations at once (concurrency 1), and none left working.
    assert wait_until(lambda: backend.preparing == 0, timeout=10)
    assert backend.most_preparing == 1
    backend.gate.set()
    assert ask(client).result() == ("An answer.", "")


# -- one client's share of the queue ----------------------------------------------------------


def test_a_client_may_queue_only_its_share(app):
    backend, url, new_client = app
    backend.gate.clear()  # the first job holds the model; the others wait in the queue
    client = new_client()
    jobs = [ask(client) for _ in range(queueing.MAX_JOBS_PER_SESSION)]
    assert wait_until(lambda: all(job.status().code in {Status.IN_QUEUE, *STARTED} for job in jobs))
    with pytest.raises(ValidationError, match="the most one client may have"):
        ask(client).result()
    # Other sessions from the same address have the rest of the address's share.
    others = [ask(new_client()) for _ in range(queueing.MAX_JOBS_PER_ADDRESS - len(jobs))]
    assert wait_until(lambda: all(job.status().code == Status.IN_QUEUE for job in others))
    with pytest.raises(ValidationError, match="per address"):
        ask(new_client()).result()
    # The plain HTTP API gets the message too.
    posted = post_call(url, question="Q?")
    assert posted.status_code == 422 and "the most one client may have" in posted.text
    backend.gate.set()
    assert [job.result() for job in jobs + others] == [("An answer.", "")] * 8


def test_an_answer_nobody_reads_stops(app, monkeypatch):
    backend, url, _ = app
    monkeypatch.setattr(queueing, "ABANDONED_AFTER_S", 0.5)
    backend.reply = LONG_REPLY
    posted = post_call(url, question="Tell me a story.")
    assert posted.status_code == 200  # and its result is never fetched
    assert wait_until(lambda: backend.pieces_sent, timeout=10)
    assert backend.pieces_sent[-1] < backend.pieces_in(LONG_REPLY)


def test_an_answer_being_read_goes_on(app, monkeypatch):
    backend, _url, new_client = app
    monkeypatch.setattr(queueing, "ABANDONED_AFTER_S", 0.5)
    backend.reply = "word " * 100  # 1.25 s, more than ABANDONED_AFTER_S
    assert ask(new_client()).result() == (backend.reply, "")
    assert backend.pieces_sent == [backend.pieces_in(backend.reply)]


def post_call(url: str, **arguments) -> httpx.Response:
    """The first half of a plain HTTP API call (/call/v2, arguments by name) about the cat."""
    with open(CAT, "rb") as file:
        (path,) = httpx.post(f"{url}gradio_api/upload", files={"files": file}).json()
    image = {"path": path, "meta": {"_type": "gradio.FileData"}}
    return httpx.post(
        f"{url}gradio_api/call/v2/image_chat", json={"image": image, **arguments}, timeout=30
    )


# -- API clients are told about left-out turns ------------------------------------------------

NOTICE = "The conversation is too long: its oldest question was left out."


@pytest.mark.parametrize(
    ("api_name", "arguments"),
    [
        ("/image_chat", {"image": handle_file(CAT), "question": "Q?"}),
        ("/multi_image_chat", {"images": [handle_file(CAT)], "question": "Q?"}),
        ("/grounding", {"image": handle_file(CAT), "query": "the cat"}),
    ],
)
def test_api_answers_start_with_the_notices(app, api_name, arguments):
    backend, _url, new_client = app
    backend.notices.append(NOTICE)
    result = new_client().predict(**arguments, api_name=api_name)
    answer = result[0] if isinstance(result, tuple | list) else result
    assert answer == f"⚠️ Notice: {NOTICE}\n\nAn answer."


def test_video_chat_answers_start_with_the_notices(app, tmp_path):
    from tests.media_files import X264, write_video

    backend, _url, new_client = app
    backend.notices.append(NOTICE)
    video = write_video(tmp_path / "clip.mp4", "libx264", 10, 20, options=X264)
    answer, _thinking = new_client().predict(
        video=handle_file(str(video)), question="Q?", num_frames=4, api_name="/video_chat"
    )
    assert answer == f"⚠️ Notice: {NOTICE}\n\nAn answer."


def test_an_answer_sent_back_in_history_loses_its_notices(app):
    backend, _url, new_client = app
    client = new_client()
    backend.notices.append(NOTICE)
    first, _ = client.predict(image=handle_file(CAT), question="Q?", api_name="/image_chat")
    history = [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": first}]
    ask(client, "And?", history=history).result()
    assert backend.conversations[-1].turns[1].text == "An answer."


def test_a_real_left_out_turn_is_reported(client, backend, monkeypatch):
    """The tiny checkpoint, its context shortened so the first image turn no longer fits."""
    from model_backend.base import Conversation, GenerationSettings, Turn

    turns = (Turn("user", "First?", (CAT,)), Turn("assistant", "One."), Turn("user", "Second?"))
    settings = GenerationSettings(max_new_tokens=16)
    short = backend.prepare(Conversation(turns[2:]), settings).input_ids.shape[1]
    monkeypatch.setattr(backend.pool.get(backend.info.model), "context_length", short + 16)
    answer, _thinking = client.predict(
        image=handle_file(CAT),
        question="Second?",
        system_prompt="",
        history=[{"role": "user", "content": "First?"}, {"role": "assistant", "content": "One."}],
        max_new_tokens=16,
        api_name="/image_chat",
    )
    assert answer.startswith("⚠️ Notice: The conversation is longer than the model's context")
    assert "1 oldest question(s)" in answer.split("\n\n")[0]


def outcome(url: str, event_id: str) -> str:
    """How a plain HTTP API call ended: the last SSE event's name (complete or error)."""
    with httpx.stream("GET", f"{url}gradio_api/call/image_chat/{event_id}", timeout=60) as reply:
        events = [line for line in reply.iter_lines() if line.startswith("event:")]
    return events[-1].removeprefix("event:").strip()


def test_a_burst_of_calls_from_one_address_gets_only_its_share(app):
    """Gradio runs the validators of a burst before it queues any of the calls: 19 of 20
    calls at once got through a limit of 8."""
    from concurrent.futures import ThreadPoolExecutor

    backend, url, _ = app
    backend.gate.clear()  # the first job holds the model while the burst arrives
    with ThreadPoolExecutor(20) as pool:
        posted = list(pool.map(lambda _: post_call(url, question="Q?"), range(20)))
    accepted = [reply.json()["event_id"] for reply in posted if reply.status_code == 200]
    backend.gate.set()
    assert 0 < len(accepted) <= queueing.MAX_JOBS_PER_ADDRESS
    refused = [reply for reply in posted if reply.status_code != 200]
    assert all(reply.status_code == 422 and "per address" in reply.text for reply in refused)
    assert [outcome(url, event_id) for event_id in accepted] == ["complete"] * len(accepted)
