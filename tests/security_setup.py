"""What the security tests run against, all on 127.0.0.1.

secure_app: the real app, launched in-process with the protections app.py installs.
RequestLog: a server that only records what reaches it; a page that must fetch nothing from other
hosts must leave it empty.
The engine the tests answer from is tests/fake_engine.py's.
"""

from __future__ import annotations

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
