"""The server's protections (interface.security), through HTTP: the Content-Security-Policy on
every response, login throttling per client address, and no route without a login.

The app is the real one, launched in-process with the options app.py passes to launch().
Requests come from several loopback addresses (127.0.0.2, ...) to act as different clients.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import gradio
import httpx
import pytest
from gradio_client import Client, handle_file

from interface.security import CONTENT_SECURITY_POLICY, LoginThrottle, self_hosted_page
from model_backend.remote import OpenAIBackend
from tests.conftest import EXAMPLES, wait_until
from tests.fake_engine import FakeEngine, Script
from tests.security_setup import secure_app

USER, PASSWORD = "ann", "secret"


@pytest.fixture(scope="module")
def engine():
    with FakeEngine("fake", Script(answer="A cat on a sofa.", style="plain")) as engine:
        yield engine


@pytest.fixture(scope="module")
def fake_backend(engine):
    return OpenAIBackend(engine.endpoint)


# A few free failures, then waits short enough for a test to sit out.
TEST_THROTTLE = {"free_failures": 3, "first_delay_s": 0.3, "max_delay_s": 0.6}


@pytest.fixture(scope="module")
def auth_url(fake_backend, gradio_temp_dir):
    throttle = LoginThrottle(**TEST_THROTTLE)
    with secure_app(fake_backend, throttle, auth=[(USER, PASSWORD)]) as (_, url):
        yield url


def from_address(address: str) -> httpx.Client:
    """An HTTP client whose requests come from `address` (any 127.x.y.z reaches the app)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


def login(http: httpx.Client, url: str, password: str = PASSWORD) -> httpx.Response:
    return http.post(f"{url}login", data={"username": USER, "password": password})


# -- the Content-Security-Policy ------------------------------------------------------------


def test_every_response_keeps_the_page_on_the_apps_own_host(auth_url):
    # Served by Gradio or refused by the middleware (login, throttle): all carry the policy.
    with from_address("127.0.0.7") as http:
        for path in ("", "theme.css", "config", "gradio_api/info", "no-such-page", "login"):
            response = http.request("POST" if path == "login" else "GET", f"{auth_url}{path}")
            policy = response.headers.get("content-security-policy", "")
            assert "default-src 'self'" in policy, path
            assert "img-src 'self' data: blob:" in policy, path
            assert response.headers.get("x-dns-prefetch-control") == "off", path


def test_the_policy_names_no_other_host():
    for directive in CONTENT_SECURITY_POLICY.split(";"):
        sources = directive.split()[1:]
        assert set(sources) <= {"'self'", "'unsafe-inline'", "data:", "blob:", "'none'"}


def test_the_share_page_loads_gradio_from_the_app_not_a_cdn():
    """With --share Gradio serves a page that loads its scripts from a CDN: the policy would
    block them, so the page is given the local entry point of the plain page."""
    frontend = Path(gradio.__file__).parent / "templates" / "frontend"
    share_page = (frontend / "share.html").read_bytes()
    assert b"https://gradio.s3" in share_page  # what Gradio ships
    page = self_hosted_page(share_page)
    assert b"https://gradio.s3" not in page
    index_page = (frontend / "index.html").read_bytes()
    assert page.split() == index_page.split()  # the plain page (up to blanks)
    assert self_hosted_page(index_page) == index_page


# -- logins -------------------------------------------------------------------------------------


def test_repeated_failed_logins_from_one_address_are_slowed(auth_url):
    with from_address("127.0.0.2") as attacker, from_address("127.0.0.3") as neighbour:
        for _ in range(TEST_THROTTLE["free_failures"]):
            assert login(attacker, auth_url, "wrong").status_code == 400
        refused = login(attacker, auth_url, "wrong")
        assert refused.status_code == 429
        assert "try again" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1
        # While it waits, even the right password is refused: guessing learns nothing.
        assert login(attacker, auth_url).status_code == 429
        # Another address is not affected.
        assert login(neighbour, auth_url).status_code == 200
        # After the wait, the right password works again (and clears the count).
        assert wait_until(lambda: login(attacker, auth_url).status_code == 200, timeout=10)
        assert login(attacker, auth_url, "wrong").status_code == 400


def test_parallel_guesses_get_no_more_tries(auth_url):
    """Failures are counted as they happen: a burst of parallel guesses cannot all go through
    before the first one is counted."""
    statuses: list[int] = []
    barrier = threading.Barrier(12)

    def guess() -> None:
        with from_address("127.0.0.4") as http:
            barrier.wait()
            statuses.append(login(http, auth_url, "wrong").status_code)

    threads = [threading.Thread(target=guess) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses.count(400) <= TEST_THROTTLE["free_failures"]
    assert statuses.count(429) >= 12 - TEST_THROTTLE["free_failures"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "gradio_api/cancel", {"session_hash": "s", "fn_index": 0, "event_id": "e"}),
        ("POST", "gradio_api/reset", {"session_hash": "s", "fn_index": 0, "event_id": "e"}),
        ("POST", "gradio_api/stream/e", {"data": [], "fn_index": 0, "session_hash": "s"}),
        ("POST", "gradio_api/stream/e/close", None),
        ("GET", "gradio_api/heartbeat/s", None),
        ("GET", "gradio_api/stream/s/0/1/playlist.m3u8", None),
        ("GET", "gradio_api/app_id", None),
    ],
)
def test_session_routes_need_a_login(auth_url, method, path, body):
    def status(http: httpx.Client) -> int:
        # Only the status: some of these routes stream for as long as the session lives.
        with http.stream(method, f"{auth_url}{path}", json=body) as response:
            return response.status_code

    with from_address("127.0.0.5") as http:
        assert status(http) == 401
        assert login(http, auth_url).status_code == 200
        assert status(http) != 401


def test_the_login_page_and_the_api_client_still_work(auth_url):
    with from_address("127.0.0.6") as http:
        page = http.get(auth_url)
        assert page.status_code == 200 and '"auth_required":true' in page.text
        script = re.search(r'src="\./(assets/index-[^"]+\.js)"', page.text)[1]
        assert http.get(f"{auth_url}{script}").status_code == 200
        assert http.get(f"{auth_url}theme.css").status_code == 200
        assert http.get(f"{auth_url}gradio_api/info").status_code == 401
    client = Client(auth_url, auth=(USER, PASSWORD), verbose=False)
    try:
        answer, _thinking = client.predict(
            image=handle_file(str(EXAMPLES / "cat.jpg")),
            question="What is it?",
            max_new_tokens=8,
            api_name="/image_chat",
        )
        assert "A cat on a sofa." in answer
    finally:
        client.close()


# -- the throttle's arithmetic, on a clock the test moves ------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(throttle: LoginThrottle, address: str = "a") -> float | None:
    wait = throttle.begin(address)
    if wait is None:
        throttle.end(address, failed=True)
    return wait


def test_each_failure_beyond_the_free_ones_doubles_the_wait_up_to_a_cap():
    clock = Clock()
    throttle = LoginThrottle(free_failures=2, first_delay_s=1, max_delay_s=8, clock=clock)
    assert fail(throttle) is None and fail(throttle) is None
    waits = []
    for _ in range(6):
        waits.append(fail(throttle))  # refused: the wait is still running
        clock.now += waits[-1]
        assert fail(throttle) is None  # the attempt after the wait goes through (and fails)
    assert waits == [1, 2, 4, 8, 8, 8]


def test_a_long_quiet_clears_the_count_a_success_does_not():
    """A correct login with one account once reset the count: an attacker holding one account
    could guess others' passwords between its own logins, never slowed down."""
    clock = Clock()
    throttle = LoginThrottle(free_failures=1, first_delay_s=1, forget_after_s=60, clock=clock)
    fail(throttle)
    assert fail(throttle) == 1
    clock.now += 1
    assert throttle.begin("a") is None
    throttle.end("a", failed=False)  # someone logs in correctly from the same address
    assert fail(throttle) is None  # the attempt is let through (the wait has passed) ...
    assert fail(throttle) == 2  # ... but the count went on: the wait doubled, not restarted
    clock.now += 61
    assert fail(throttle) is None


def test_the_throttle_forgets_the_oldest_addresses_beyond_its_bound():
    throttle = LoginThrottle(free_failures=0, max_addresses=3, clock=Clock())
    for address in "abcd":
        fail(throttle, address)
    assert fail(throttle, "d") is not None  # still remembered
    assert fail(throttle, "a") is None  # forgotten: a fresh start
