"""Model-chosen URLs in a real browser (Debian's chromium): an answer full of markup that would
make the page fetch a URL must leave a logging server on 127.0.0.1 without a single request.

Two layers, each tested alone: answers are rendered through an allow-list (no element that
loads anything is created), and the server's Content-Security-Policy blocks any load from
another host even when raw markup does reach the page. Gradio's own page, fonts, KaTeX and the
login page must all still work under that policy.
"""

from __future__ import annotations

import pytest

from model_backend.remote import OpenAIBackend
from tests.conftest import CHROMIUM, EXAMPLES, playwright_expect, wait_until
from tests.fake_engine import FakeEngine, Script
from tests.security_setup import RequestLog, secure_app

expect = playwright_expect()  # waits up to 30 s: a loaded 2-core machine is slow to render

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed"),
]

# Every way the red-team pass made chromium fetch a model-chosen URL, and a few more; each
# points at its own path of the logging server.
PAYLOADS = """\
Here is what I see.

![see [this] here]({log}/markdown-nested)

![reference image][r1] and ![shortcut]

[r1]: {log}/markdown-reference
[shortcut]: {log}/markdown-shortcut

<video poster="{log}/video-poster" src="{log}/video-src"></video>

<audio src="{log}/audio-src" autoplay controls></audio>

<input type="image" src="{log}/input-image">

<svg><image href="{log}/svg-image"></image></svg>

<div style="background-image:url({log}/inline-background)">background</div>

<img src="{log}/img" srcset="{log}/img-srcset 2x">

<picture><source srcset="{log}/picture-source"><img alt="p"></picture>

<iframe src="{log}/iframe"></iframe> <object data="{log}/object"></object>

<link rel="stylesheet" href="{log}/stylesheet"><style>@import url({log}/css-import);</style>

The <ref><img src="{log}/ref-label"></ref><box>[[10, 20, 300, 400]]</box> sits there.

Inline `<img src="{log}/inline-code">` and maths $x^2 + y^2 = z^2$, $a<b$.

```html
<img src="{log}/fenced-code">
```

Done.
"""
# What each payload must still show as text.
SHOWN = [
    "see [this] here",
    "reference image",
    '<video poster="',
    '<audio src="',
    '<input type="image"',
    "<svg><image href=",
    "background-image:url(",
    '<img src="',
    "<iframe src=",
    "sits there",
    'Inline <img src="',
    "Done.",
]
# Elements that could load something; none may come from an answer.
LOADING = "img, video, audio, source, input[type=image], image, iframe, object, embed, link"

RECORD_VIOLATIONS = """
window.violations = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.violations.push(e.violatedDirective + " " + e.blockedURI));
"""
# Attributes anywhere in the page that name the logging server, but for those that load
# nothing: a link's href (it needs a click), and text for screen readers or tooltips.
URL_ATTRIBUTES = """
(origin) => [...document.querySelectorAll("*")].flatMap((el) =>
    [...el.attributes]
        .filter((a) => a.value.includes(origin))
        .filter((a) => !(el.tagName === "A" && a.name === "href"))
        .filter((a) => !a.name.startsWith("aria-") && a.name !== "title")
        .map((a) => `${el.tagName.toLowerCase()} ${a.name}`))
"""


@pytest.fixture(scope="module")
def request_log():
    log = RequestLog()
    yield log
    log.close()


@pytest.fixture(scope="module")
def engine(request_log):
    payloads = PAYLOADS.format(log=request_log.origin)
    with FakeEngine("fake", Script(answer=payloads, style="plain", chunk_chars=24)) as engine:
        yield engine


@pytest.fixture(scope="module")
def secure(engine, gradio_temp_dir):
    """(demo, url) of the app with its protections, on the engine that writes the payloads."""
    with secure_app(OpenAIBackend(engine.endpoint)) as launched:
        yield launched


@pytest.fixture
def secure_url(secure):
    return secure[1]


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def ask_with_image(page, tab: str, image_id: str, question: str = "What is this?"):
    """Upload the cat, ask, and return the first answer bubble once the answer has ended."""
    page.locator(f"#{image_id} input[type='file']").set_input_files(str(EXAMPLES / "cat.jpg"))
    expect(page.locator(f"#{image_id} img")).to_be_visible()
    box = page.locator(f"#{tab}-input textarea")
    box.fill(question)
    box.press("Enter")
    answer = page.locator(f"#{tab}-chatbot [data-testid='bot']").first
    expect(answer).to_contain_text("to first token", timeout=30_000)  # the stats line: ended
    return answer


def test_model_written_urls_are_shown_never_fetched(page, secure_url, request_log):
    page.goto(secure_url)
    answer = ask_with_image(page, "image-chat", "image-chat-image")
    for text in SHOWN:
        expect(answer).to_contain_text(text)
    expect(answer.locator(".katex").first).to_be_visible()  # maths still typeset
    expect(answer.locator("pre code")).to_contain_text(f'<img src="{request_log.origin}')
    expect(answer.locator(LOADING)).to_have_count(0)
    # The grounding tab shows the same answer with its boxes: table, drawing and chat.
    page.get_by_role("tab", name="Grounding").click()
    ask_with_image(page, "grounding", "grounding-image", "the cat")
    expect(page.locator("#grounding-table")).to_contain_text('<img src="')
    assert page.evaluate(URL_ATTRIBUTES, request_log.origin) == []
    # Nothing was even attempted (so nothing of Gradio's own was blocked either).
    assert page.evaluate("window.violations") == []
    assert request_log.requests == []


def test_the_policy_alone_blocks_what_raw_markup_would_fetch(
    page, secure_url, request_log, monkeypatch
):
    """Without the allow-list the raw answer reaches the page; the browser tries to load its
    URLs (each attempt is reported as a policy violation) and none gets out."""
    import interface.conversation

    monkeypatch.setattr(interface.conversation, "render_answer", lambda text: text)
    page.goto(secure_url)
    ask_with_image(page, "image-chat", "image-chat-image")

    def blocked() -> list[str]:
        return [v for v in page.evaluate("window.violations") if request_log.origin in v]

    assert wait_until(lambda: len(blocked()) >= 5 or request_log.requests, timeout=15)
    assert request_log.requests == []
    assert all(v.startswith(("img-src", "media-src", "frame-src", "style-src")) for v in blocked())


def test_gradio_page_fonts_and_login_work_under_the_policy(browser, engine, gradio_temp_dir):
    context = browser.new_context()
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    with secure_app(OpenAIBackend(engine.endpoint), auth=[("ann", "secret")]) as (_, url):
        page.goto(url)
        page.get_by_label("username").fill("ann")
        page.get_by_label("password").fill("secret")
        page.get_by_role("button", name="Login").click()
        expect(page.locator("#image-chat-chatbot")).to_be_visible()
        loaded = "async () => { await document.fonts.ready; return [...document.fonts]" + (
            ".filter((f) => f.status === 'loaded').map((f) => f.family); }"
        )
        assert "Source Sans Pro" in page.evaluate(loaded)
        assert page.evaluate("window.violations") == []
    context.close()


def test_the_share_page_works_under_the_policy(page, secure):
    """--share serves Gradio's share page (its scripts from a CDN); it must load from the app."""
    demo, url = secure
    outside = []
    page.on("request", lambda r: r.url.startswith(url) or outside.append(r.url))
    demo.share = True  # the page Gradio serves with --share (no tunnel needed for that)
    try:
        page.goto(url)
        expect(page.locator("#image-chat-chatbot")).to_be_visible()
    finally:
        demo.share = False
    assert page.evaluate("window.violations") == []
    assert outside == []
