"""Server-side protections, installed as one ASGI middleware on Gradio's app.

- Every response carries a Content-Security-Policy that lets the page load nothing from a host
  other than the app's own: a URL the model writes into an answer can never make a viewer's
  browser fetch it (and so leak the conversation), whatever markup slips through rendering.
- With --auth: repeated failed logins from one client address are slowed down (the address waits
  longer after each failure), and no route answers without a login except what the login page
  itself needs (Gradio leaves some session routes, /gradio_api/cancel and /reset, open).

app.py wires it in with `demo.launch(..., **secure_launch_options())`.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interface.i18n import with_language_choice

# 'unsafe-inline': Gradio's page has inline scripts (its config) and components set inline
# styles; neither lets the page reach another host. data:/blob: are same-page media.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "media-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "frame-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    ]
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    # Links in answers stay clickable; the browser must not resolve their hosts in advance
    # (a DNS lookup of a model-chosen name leaks as surely as a request).
    (b"x-dns-prefetch-control", b"off"),
]

# What the login page needs before anyone has logged in (with --auth, nothing else answers).
PUBLIC_PATHS = frozenset(
    {
        "/",  # Gradio serves the login form here until there is a login
        "/login",
        "/login/",
        "/logout",
        "/config",  # Gradio checks the login itself (and tells clients to log in)
        "/config/",
        "/favicon.ico",
        "/manifest.json",
        "/robots.txt",
        "/theme.css",
        "/gradio_api/theme.css",
        "/gradio_api/startup-events",  # launch() calls it; runs the start-up events once
    }
)
PUBLIC_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon")
LOGIN_PATHS = frozenset({"/login", "/login/"})


def secure_launch_options(throttle: LoginThrottle | None = None) -> dict:
    """Keyword arguments for `demo.launch()` that install the protections."""
    middleware = Middleware(SecurityMiddleware, throttle=throttle or LoginThrottle())
    # Server-side rendering would serve the page from Node, outside this middleware.
    return {"app_kwargs": {"middleware": [middleware]}, "ssr_mode": False}


# ---------------------------------------------------------------------------------------------
# Login throttling


@dataclass
class _Attempts:
    failures: int = 0
    in_flight: int = 0
    retry_at: float = 0.0  # no attempt before this time (clock seconds)
    last_failure: float = 0.0


@dataclass
class LoginThrottle:
    """Per client address: a few failed logins are free, then each failure doubles the wait
    before the next attempt (up to `max_delay_s`). Attempts made while waiting are refused
    without looking at the password, so guessing is slow even with many parallel requests."""

    free_failures: int = 5
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    forget_after_s: float = 600.0  # a quiet address starts afresh
    max_addresses: int = 10_000  # memory bound: the least recently seen are forgotten
    clock: Callable[[], float] = time.monotonic
    _addresses: OrderedDict[str, _Attempts] = field(default_factory=OrderedDict, repr=False)

    def begin(self, address: str) -> float | None:
        """Start an attempt: None if it may go ahead, else the seconds to wait first."""
        attempts = self._attempts(address)
        now = self.clock()
        if attempts.in_flight and attempts.failures + attempts.in_flight >= self.free_failures:
            return max(attempts.retry_at - now, self.first_delay_s)  # one at a time from here
        if now < attempts.retry_at:
            return attempts.retry_at - now
        attempts.in_flight += 1
        return None

    def end(self, address: str, failed: bool) -> None:
        """Record how an attempt started with `begin` went."""
        attempts = self._attempts(address)
        attempts.in_flight = max(0, attempts.in_flight - 1)  # 0 if forgotten meanwhile
        if not failed:
            # The count stays: with several accounts, a correct login with one of them must not
            # buy more free guesses at the others. A quiet address starts afresh instead.
            return
        attempts.failures += 1
        attempts.last_failure = self.clock()
        beyond = attempts.failures - self.free_failures
        if beyond >= 0:
            delay = min(self.max_delay_s, self.first_delay_s * 2 ** min(beyond, 32))
            attempts.retry_at = attempts.last_failure + delay

    def _attempts(self, address: str) -> _Attempts:
        attempts = self._addresses.pop(address, None) or _Attempts()
        quiet = self.clock() - max(attempts.last_failure, attempts.retry_at)
        if attempts.failures and not attempts.in_flight and quiet > self.forget_after_s:
            attempts = _Attempts()
        self._addresses[address] = attempts  # most recently seen last
        while len(self._addresses) > self.max_addresses:
            self._addresses.popitem(last=False)
        return attempts


# ---------------------------------------------------------------------------------------------
# The middleware


class SecurityMiddleware:
    """Adds the security headers to every response; with auth, gates and throttles logins."""

    def __init__(self, app: ASGIApp, throttle: LoginThrottle | None = None):
        self.app = app
        self.throttle = throttle or LoginThrottle()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        gradio_app = scope.get("app")  # Starlette puts the app itself here
        if requires_login(gradio_app):
            path = route_path(scope)
            if path in LOGIN_PATHS and scope.get("method") == "POST":
                await self.login(scope, receive, send)
                return
            if not is_public(path) and not logged_in(scope, gradio_app):
                await refuse(scope, send, 401, "Not authenticated: log in first.")
                return
        is_page = route_path(scope) == "/"  # only the page may need rewriting (see below)
        await self.app(scope, receive, with_security_headers(send, is_page))

    async def login(self, scope: Scope, receive: Receive, send: Send) -> None:
        address = (scope.get("client") or ("unknown",))[0]
        wait = self.throttle.begin(address)
        if wait is not None:
            seconds = math.ceil(wait)
            message = f"Too many failed logins from your address: try again in {seconds} s."
            await refuse(scope, send, 429, message, [(b"retry-after", str(seconds).encode())])
            return
        status: list[int] = []

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, with_security_headers(recording))
        finally:
            self.throttle.end(address, failed=not status or status[0] >= 400)


def requires_login(app) -> bool:
    """Gradio's own user:password auth is on. (A custom auth_dependency, as with OAuth, decides
    by itself which requests are logged in; this middleware then leaves the routes alone.)"""
    has_auth = getattr(app, "auth", None) is not None
    return has_auth and getattr(app, "auth_dependency", None) is None


def route_path(scope: Scope) -> str:
    """The path Gradio routes on (without a --root-path prefix the proxy may have left)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def logged_in(scope: Scope, app) -> bool:
    """The request carries a login cookie that Gradio issued (the same test as Gradio's)."""
    cookies = Request(scope).cookies
    names = (f"access-token-{app.cookie_id}", f"access-token-unsecure-{app.cookie_id}")
    return any(cookies.get(name) in app.tokens for name in names if cookies.get(name))


async def refuse(
    scope: Scope, send: Send, status: int, detail: str, headers: list | None = None
) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"detail": detail}).encode()
    extra = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    start = {"type": "http.response.start", "status": status, "headers": extra + (headers or [])}
    await with_security_headers(send)(start)
    await send({"type": "http.response.body", "body": body})


def with_security_headers(send: Send, is_page: bool = False) -> Send:
    """`send`, adding the security headers to the response; for the page (`is_page`), also
    keeping its scripts on this host and applying the reader's choice of language before Gradio
    starts (interface.i18n). (Only the page is held in memory to be rewritten: other HTML, such
    as an uploaded file, can be large.)"""
    held: list[Message] = []
    body: list[bytes] = []

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            names = {name.lower() for name, _ in message.get("headers", [])}
            headers = [*message.get("headers", [])]
            headers += [(n, v) for n, v in SECURITY_HEADERS if n not in names]
            message = {**message, "headers": headers}
            if is_page and is_html(headers):  # held until the page is complete, to rewrite it
                held.append(message)
                return
        elif held and message["type"] == "http.response.body":
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            html = with_language_choice(self_hosted_page(b"".join(body)))
            start = held.pop()
            headers = [(n, v) for n, v in start["headers"] if n.lower() != b"content-length"]
            headers.append((b"content-length", str(len(html)).encode()))
            await send({**start, "headers": headers})
            message = {"type": "http.response.body", "body": html}
        await send(message)

    return sending


def is_html(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(n.lower() == b"content-type" and v.startswith(b"text/html") for n, v in headers)


# ---------------------------------------------------------------------------------------------
# The --share page

# With --share, Gradio serves a page whose scripts come from its CDN; the policy would block
# them, so the page gets the same local entry point as the plain page.
CDN_ENTRY = re.compile(rb'<script[^>]*\ssrc="https://gradio\.s3[^"]*"[^>]*>\s*</script>')


def self_hosted_page(page: bytes) -> bytes:
    if b"https://gradio.s3" not in page:
        return page
    return CDN_ENTRY.sub(lambda _: local_entry_tags(), page)


@lru_cache(maxsize=1)
def local_entry_tags() -> bytes:
    """The <script>/<link> lines of Gradio's own page that load the app from ./assets/."""
    import gradio

    page = Path(gradio.__file__).parent / "templates" / "frontend" / "index.html"
    lines = page.read_bytes().splitlines()
    return b"\n".join(line.strip() for line in lines if b'="./assets/' in line)
