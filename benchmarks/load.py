"""5. Concurrency: many clients at once on every tab, some pressing Stop.
6. Long conversation: 200 turns with images; memory and threads after Clear.

`concurrency(clients)` and `long_conversation(turns)` are also run small by the test suite.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field

import psutil

from benchmarks.common import REPO, percentile, table

EXAMPLES = REPO / "examples"


@dataclass
class Outcome:
    endpoint: str
    stopped: bool
    seconds: float = 0.0
    error: str | None = None
    partials: int = 0
    queue_ranks: list[int] = field(default_factory=list)


def requests(index: int):
    """The i-th client's request: the four tabs in turn."""
    from gradio_client import handle_file

    image = handle_file(str(EXAMPLES / "cat.jpg"))
    kinds = [
        ("/image_chat", {"image": image, "question": "Describe it."}),
        (
            "/multi_image_chat",
            {
                "images": [image, handle_file(str(EXAMPLES / "coffee.jpg"))],
                "question": "Compare Image-1 and Image-2.",
            },
        ),
        (
            "/video_chat",
            {
                "video": handle_file(str(EXAMPLES / "bouncing_ball.mp4")),
                "question": "What happens?",
                "num_frames": 8,
            },
        ),
        ("/grounding", {"image": image, "query": "the cat's nose", "mode": "find"}),
    ]
    return kinds[index % len(kinds)]


def one_client(url: str, index: int, stop: bool, tokens: int) -> Outcome:
    from gradio_client import Client

    endpoint, arguments = requests(index)
    outcome = Outcome(endpoint, stop)
    client = Client(url, verbose=False)
    start = time.perf_counter()
    try:
        job = client.submit(**arguments, max_new_tokens=tokens, api_name=endpoint)
        while not job.done():
            status = job.status()
            if status.rank is not None and status.code.name in ("IN_QUEUE", "SENDING_DATA"):
                outcome.queue_ranks.append(status.rank)
            outcome.partials = len(job.outputs())
            if stop and outcome.partials >= 2:
                job.cancel()
                break
            time.sleep(0.02)  # poll
        if not stop or not job.done():
            job.result(timeout=600)
        outcome.partials = len(job.outputs())
    except Exception as error:  # recorded: the figure to report is that there are none
        if not stop:
            outcome.error = f"{type(error).__name__}: {error}"
    outcome.seconds = time.perf_counter() - start
    client.close()
    return outcome


def concurrency(url: str, clients: int = 16, tokens: int = 256, stop_every: int = 4):
    """All clients at once; every `stop_every`-th presses Stop after two partial answers."""
    outcomes: list[Outcome] = [None] * clients  # type: ignore[list-item]

    def run(i: int) -> None:
        outcomes[i] = one_client(url, i, stop=(i % stop_every == stop_every - 1), tokens=tokens)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def long_conversation(backend, turns: int = 200, tokens: int = 16) -> dict:
    """One conversation of `turns` questions, each bringing a new image; then Clear."""
    from PIL import Image

    import model_backend.media as media
    from model_backend.base import Conversation, GenerationSettings, Turn
    from model_backend.prompt import DEFAULT_SYSTEM_PROMPT

    process = psutil.Process()
    folder = tempfile.mkdtemp(prefix="long-conversation-")
    rng = random.Random(0)
    settings = GenerationSettings(max_new_tokens=tokens, temperature=0)
    warm_up = Conversation((Turn("user", "Hi?", (str(EXAMPLES / "cat.jpg"),)),))
    "".join(backend.stream(warm_up, settings))  # first use starts the long-lived helpers
    backend.clear_cache()
    media.PIXEL_CACHE.clear()
    baseline = {"rss": process.memory_info().rss, "threads": threading.active_count()}
    history: list[Turn] = []
    peak = 0
    dropped = 0
    for turn in range(turns):
        path = f"{folder}/image-{turn}.png"
        colour = tuple(rng.randrange(256) for _ in range(3))
        Image.new("RGB", (640, 480), colour).save(path)
        history.append(Turn("user", f"Question {turn}: what colour is Image-{turn + 1}?", (path,)))
        stream = backend.stream(Conversation(tuple(history), DEFAULT_SYSTEM_PROMPT), settings)
        answer = "".join(stream)
        dropped += bool(stream.notices)
        history.append(Turn("assistant", answer))
        peak = max(peak, process.memory_info().rss)
    history.clear()
    media.PIXEL_CACHE.clear()  # for this measure, the shared media caches (bounded) too
    media.FRAME_CACHE.clear()
    backend.clear_cache()  # what the Clear button does
    return {
        "baseline MiB": baseline["rss"] / 2**20,
        "peak MiB": peak / 2**20,
        "after Clear MiB": process.memory_info().rss / 2**20,
        "threads before": baseline["threads"],
        "threads after": threading.active_count(),
        "answers with old turns left out": dropped,
    }


def run(clients: int = 16, turns: int = 200) -> str:
    from benchmarks.streaming import start_app
    from model_backend.local import LocalBackend
    from model_backend.tiny import write_tiny_checkpoint

    checkpoint = str(write_tiny_checkpoint(tempfile.mkdtemp(prefix="tiny-model-")))
    # Every client of this benchmark comes from 127.0.0.1: allow them all.
    process, url = start_app(checkpoint, "--jobs-per-address", str(clients))
    try:
        outcomes = concurrency(url, clients)
    finally:
        process.terminate()
        process.wait(timeout=30)
    finished = [o for o in outcomes if not o.stopped]
    latencies = [o.seconds for o in finished]
    errors = [o.error for o in outcomes if o.error]
    ranks = max((max(o.queue_ranks) for o in outcomes if o.queue_ranks), default=None)
    rows = [
        [
            "clients",
            "stopped",
            "completed",
            "errors",
            "p50 s",
            "p95 s",
            "largest queue position seen",
        ],
        [
            str(clients),
            str(sum(o.stopped for o in outcomes)),
            str(len(finished)),
            str(len(errors)),
            f"{statistics.median(latencies):.1f}",
            f"{percentile(latencies, 0.95):.1f}",
            str(ranks),
        ],
    ]
    text = (
        f"### 5. Concurrency ({clients} clients at once, the four tabs in turn, 256 tokens "
        f"each, one generation at a time, CPU)\n\n" + table(rows)
    )
    if errors:
        text += "\n\nErrors: " + "; ".join(errors[:5])
    backend = LocalBackend(checkpoint, device="cpu")
    figures = long_conversation(backend, turns)
    rows = [
        list(figures),
        [f"{v:.0f}" if isinstance(v, float) else str(v) for v in figures.values()],
    ]
    text += (
        f"\n\n### 6. Long conversation ({turns} turns, a new image each, tiny checkpoint)\n\n"
        + table(rows)
    )
    return text


if __name__ == "__main__":
    print(run())
