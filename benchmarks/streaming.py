"""3. Streaming overhead: the app as a gradio_client sees it, against the backend alone.

Same tiny checkpoint, same image, greedy decoding (so both runs produce the same tokens).
Decode speed is measured from the first to the last increment; time to first token from the
request to the first increment.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

from benchmarks.common import REPO, table

IMAGE = str(REPO / "examples" / "cat.jpg")
TOKENS = 512


def backend_alone(backend, conversation, settings) -> tuple[float, float, int]:
    """(seconds to first increment, decode seconds, tokens)."""
    start = time.perf_counter()
    first = last = None
    stream = backend.stream(conversation, settings)
    for piece in stream:
        if piece:
            last = time.perf_counter()
            first = first or last
    return first - start, last - first, stream.stats.new_tokens


def through_app(client, tokens: int) -> tuple[float, float]:
    from gradio_client import handle_file

    start = time.perf_counter()
    first = last = None
    job = client.submit(
        image=handle_file(IMAGE),
        question="Describe the image.",
        max_new_tokens=tokens,
        temperature=0,
        api_name="/image_chat",
    )
    for answer, thinking in job:  # every chat endpoint's outputs end with its thinking
        if answer or thinking:  # a thinking model's first tokens are its thinking
            last = time.perf_counter()
            first = first or last
    return first - start, last - first


def start_app(checkpoint: str, *flags: str) -> tuple[subprocess.Popen, str]:
    """The app as users run it, in its own process (so it does not share the client's GIL)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "app.py", "--model", checkpoint, "--device", "cpu"]
    process = subprocess.Popen(
        [*command, "--port", str(port), *flags],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    for _ in range(600):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)  # poll
    process.kill()
    raise RuntimeError("the app did not start")


def run(runs: int = 5) -> str:
    from gradio_client import Client

    from model_backend.base import Conversation, GenerationSettings, Turn
    from model_backend.local import LocalBackend
    from model_backend.prompt import DEFAULT_SYSTEM_PROMPT
    from model_backend.tiny import write_tiny_checkpoint

    checkpoint = str(write_tiny_checkpoint(tempfile.mkdtemp(prefix="tiny-model-")))
    backend = LocalBackend(checkpoint, device="cpu")
    conversation = Conversation(
        (Turn("user", "Describe the image.", (IMAGE,)),), DEFAULT_SYSTEM_PROMPT
    )
    settings = GenerationSettings(max_new_tokens=TOKENS, temperature=0)
    process, url = start_app(checkpoint)
    client = Client(url, verbose=False)
    try:
        backend_alone(backend, conversation, settings)  # warm-up (and the image cache)
        through_app(client, TOKENS)
        alone, app = [], []
        for _ in range(runs):  # interleaved, so both see the same machine state
            alone.append(backend_alone(backend, conversation, settings))
            app.append(through_app(client, TOKENS))
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=30)
    tokens = alone[0][2]
    alone_rate = statistics.median(tokens / decode for _, decode, _ in alone)
    app_rate = statistics.median(tokens / decode for _, decode in app)
    alone_ttft = statistics.median(ttft for ttft, _, _ in alone)
    app_ttft = statistics.median(ttft for ttft, _ in app)
    rows = [
        ["", "backend alone", "through the app (gradio_client)", "ratio / difference"],
        ["decode tokens/s", f"{alone_rate:.0f}", f"{app_rate:.0f}", f"{app_rate / alone_rate:.2f}"],
        [
            "time to first token, ms",
            f"{alone_ttft * 1000:.0f}",
            f"{app_ttft * 1000:.0f}",
            f"+{(app_ttft - alone_ttft) * 1000:.0f} ms",
        ],
    ]
    title = f"### 3. Streaming overhead (tiny checkpoint, {tokens} tokens, CPU, medians of {runs})"
    return title + "\n\n" + table(rows)


if __name__ == "__main__":
    print(run())
