"""What the security tests run against, all on 127.0.0.1.

secure_app: the real app, launched in-process with the protections app.py installs.
FakeEngine: an OpenAI-compatible engine that streams a reply the test chooses, so that the real
OpenAI backend and the real UI render exactly what a model might write.
RequestLog: a server that only records what reaches it; a page that must fetch nothing from other
hosts must leave it empty.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from interface.security import LoginThrottle, secure_launch_options


@contextmanager
def secure_app(backend, throttle: LoginThrottle | None = None, **launch_options):
    """The real app with the protections app.py installs; yields (demo, url)."""
    from interface.i18n import language_options
    from interface.layout import CSS, build_demo

    demo = build_demo(backend)
    demo.queue()
    options = {**secure_launch_options(throttle), **language_options(), **launch_options}
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, css=CSS, **options)
    try:
        yield demo, url
    finally:
        demo.close()


class _Server:
    """A ThreadingHTTPServer on a free loopback port, served from a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _EngineHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        engine: FakeEngine = self.server.owner
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
        reply = engine.reply
        for start in range(0, len(reply), engine.piece_size):
            delta = {"content": reply[start : start + engine.piece_size]}
            self._event({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self.wfile.write(b"data: [DONE]\n\n")

    def _event(self, payload: dict) -> None:
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "fake"}
        self.wfile.write(f"data: {json.dumps({**chunk, **payload})}\n\n".encode())
        self.wfile.flush()


class FakeEngine(_Server):
    """Streams `reply` in pieces of `piece_size` characters to every chat completion."""

    def __init__(self, reply: str = "Hello.", piece_size: int = 16):
        self.reply, self.piece_size = reply, piece_size
        super().__init__(_EngineHandler)
        self.endpoint = f"http://127.0.0.1:{self.port}/v1"


class _LogHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _record(self) -> None:
        self.server.owner.requests.append(f"{self.command} {self.path}")
        self.send_response(204)
        self.end_headers()

    do_GET = do_POST = do_HEAD = do_OPTIONS = _record


class RequestLog(_Server):
    """Records every request that reaches it (method and path)."""

    def __init__(self):
        self.requests: list[str] = []
        super().__init__(_LogHandler)
        self.origin = f"http://127.0.0.1:{self.port}"
