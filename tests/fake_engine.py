"""A fake OpenAI-compatible engine on localhost that streams a scripted thinking-model reply.

It serves what OpenAIBackend uses: `GET /v1/models` (the names given) and
`POST /v1/chat/completions` (streamed as server-sent events, or whole), plus `GET /health`.
Every chat request's JSON body is kept in `.requests`, so tests can check what the demo sent
(the system prompt, the questions, earlier answers without their thinking).

The reply is `.script` (a Script, changeable between requests), sent in one of the ways
engines send a thinking model's reply (`STYLES`):

- "reasoning_content": the thinking as `reasoning_content` deltas, then the answer as content
  (vLLM, LMDeploy, SGLang with a reasoning parser);
- "reasoning": the same under vLLM's newer field name `reasoning`;
- "both_fields": each thinking delta under both names (vLLM while it renames the field);
- "duplicated": `reasoning_content` deltas, then content that repeats the thinking inline;
- "inline": content `<think>thinking</think>\\n\\nanswer` (no reasoning parser);
- "no_opening_tag": content `thinking</think>\\n\\nanswer` (a template that opened the thinking);
- "plain": content `answer` alone (no thinking).

Use it as a context manager or with start()/stop():

    with FakeEngine("OpenGVLab/InternVL3_5-8B") as engine:
        backend = OpenAIBackend(engine.endpoint)

Or run it for the app: `python -m tests.fake_engine --port 8001 --style inline`, then
`python app.py --backend openai --endpoint http://127.0.0.1:8001/v1`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STYLES = (
    "reasoning_content",
    "reasoning",
    "both_fields",
    "duplicated",
    "inline",
    "no_opening_tag",
    "plain",
)
DEFAULT_MODEL = "OpenGVLab/InternVL3_5-8B"


@dataclass(frozen=True)
class Script:
    """One reply: its thinking, its answer, and how the engine sends them (one of STYLES).
    `chunk_chars`: characters per streamed delta (small, so tags are cut across deltas);
    `delay_s`: the wait before each delta (for tests that stop a reply midway)."""

    thinking: str = "The user asks about the picture. I see an orange cat on a sofa."
    answer: str = "An orange cat is lying on a sofa."
    style: str = "reasoning_content"
    chunk_chars: int = 5
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, not {self.style!r}")

    def deltas(self) -> list[dict]:
        """The reply as chat-completion deltas, in order."""
        thinking, answer = self.thinking, self.answer
        separate = {
            "reasoning_content": ("reasoning_content",),
            "reasoning": ("reasoning",),
            "both_fields": ("reasoning_content", "reasoning"),
            "duplicated": ("reasoning_content",),
        }.get(self.style, ())
        content = {
            "inline": f"<think>{thinking}</think>\n\n{answer}",
            "no_opening_tag": f"{thinking}</think>\n\n{answer}",
            "duplicated": f"<think>\n{thinking}\n</think>\n\n{answer}",
        }.get(self.style, answer)
        deltas: list[dict] = [{"role": "assistant", "content": ""}]
        if separate:
            deltas += [dict.fromkeys(separate, piece) for piece in self.pieces(thinking)]
        deltas += [{"content": piece} for piece in self.pieces(content)]
        return deltas

    def pieces(self, text: str) -> list[str]:
        size = self.chunk_chars
        return [text[start : start + size] for start in range(0, len(text), size)]

    def message(self) -> dict:
        """The whole reply as one message (a request with `stream: false`)."""
        message: dict = {"role": "assistant", "content": ""}
        for delta in self.deltas():
            for key, value in delta.items():
                if key != "role":
                    message[key] = (message.get(key) or "") + value
        return message


class FakeEngine:
    """The engine, served from a thread on 127.0.0.1 (port 0: a free one)."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        script: Script | None = None,
        *,
        models: list[str] | None = None,
        port: int = 0,
    ):
        self.models = list(models or [model])
        if model not in self.models:
            self.models.insert(0, model)
        self.script = script or Script()
        self.requests: list[dict] = []  # every chat request's body, in order
        self.port = port
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """The base URL for OpenAIBackend / `--endpoint`."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def last_messages(self) -> list[dict]:
        """The messages of the latest chat request."""
        return self.requests[-1]["messages"]

    def start(self) -> FakeEngine:
        engine = self

        class Handler(EngineHandler):
            owner = engine

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="fake-engine", daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> FakeEngine:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class EngineHandler(BaseHTTPRequestHandler):
    """The engine's three routes. `owner` (the FakeEngine) is set by a subclass per engine."""

    owner: FakeEngine

    def log_message(self, format, *args) -> None:  # quiet: tests read the requests instead
        pass

    def send_json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            data = [
                {"id": name, "object": "model", "created": 0, "owned_by": "fake-engine"}
                for name in self.owner.models
            ]
            self.send_json(200, {"object": "list", "data": data})
        elif self.path == "/health":
            self.send_json(200, {"status": "ok"})
        else:
            self.send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self.send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.owner.requests.append(body)
        model, script = body.get("model"), self.owner.script
        if model not in self.owner.models:
            self.send_json(404, {"error": {"message": f"The model `{model}` does not exist."}})
            return
        if not body.get("stream"):
            choice = {"index": 0, "message": script.message(), "finish_reason": "stop"}
            self.send_json(200, completion(model, "chat.completion", choice))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        deltas = [(delta, None) for delta in script.deltas()] + [({}, "stop")]
        try:
            for delta, finish in deltas:
                if script.delay_s:
                    time.sleep(script.delay_s)  # the engine "generating"
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
                self.send_event(json.dumps(completion(model, "chat.completion.chunk", choice)))
            self.send_event("[DONE]")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client closed the stream (Stop): an engine stops generating

    def send_event(self, data: str) -> None:
        self.wfile.write(f"data: {data}\n\n".encode())
        self.wfile.flush()


def completion(model: str, kind: str, choice: dict) -> dict:
    """A chat completion (or one chunk of a streamed one) holding `choice`."""
    return {
        "id": "chatcmpl-fake",
        "object": kind,
        "created": 0,
        "model": model,
        "choices": [choice],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible thinking engine.")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model", action="append", help="a served name (repeatable)")
    parser.add_argument("--style", choices=STYLES, default="reasoning_content")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds between deltas")
    args = parser.parse_args()
    models = args.model or [DEFAULT_MODEL]
    script = Script(style=args.style, delay_s=args.delay)
    with FakeEngine(models[0], script, models=models, port=args.port) as engine:
        print(f"Serving {', '.join(engine.models)} ({args.style}) at {engine.endpoint}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops it
            engine.thread.join()


if __name__ == "__main__":
    main()
