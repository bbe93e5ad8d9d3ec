"""The interface in English and Chinese: the tables, every text the page shows, and the
language of the messages the server writes (the browser journeys are in test_i18n_browser.py)."""

from __future__ import annotations

import json
import string
from types import SimpleNamespace

import gradio as gr
import pytest
from gradio.i18n import I18nData

from interface.chat import NOT_A_PAIR
from interface.compare import VOTES
from interface.document_chat import document_limits, upload_hint
from interface.history import NOT_SAVED
from interface.i18n import (
    EN,
    LANGUAGE_COOKIE,
    LANGUAGE_HEADER,
    LANGUAGE_SCRIPT,
    RAISED_TEMPLATES,
    ZH,
    english,
    language_of,
    translate,
    with_language_choice,
)
from interface.layout import UIOptions, build_demo
from interface.multi_image_chat import check_image_limit
from interface.queueing import refuse_if_over
from interface.tab_helpers import ADD_A_DOCUMENT, ADD_A_VIDEO, ADD_AN_IMAGE, EXAMPLES_LABEL
from model_backend.documents import limits_text
from model_backend.errors import InputError
from model_backend.thinking import THINKING_TEMPERATURE
from tests.scripted_backend import ScriptedBackend

MODELS = ["first", "second"]
I18N_PREFIX = "__i18n__"  # how Gradio writes a translation key into a string value


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_both_tables_have_the_same_texts_and_every_translation_keeps_its_fields():
    assert EN.keys() == ZH.keys()
    for text, chinese in ZH.items():
        assert fields(chinese) == fields(text), text
        # The frontend formats them as ICU messages, where tags are markup.
        assert "<" not in text + chinese, text


def key_of(value) -> str | None:
    """The translation key a component's text carries, or None for a plain string."""
    if isinstance(value, I18nData):
        return value.key
    if isinstance(value, str) and value.startswith(I18N_PREFIX):  # a button's or Markdown's
        return json.loads(value[len(I18N_PREFIX) :])["key"]
    return None


def hidden(block) -> bool:
    """Inside a layout that is never shown (the API endpoints' parameters)."""
    parent = block.parent
    while parent is not None:
        if parent.visible is False:
            return True
        parent = parent.parent
    return False


def shown_texts(demo: gr.Blocks):
    """(where, text) for every text the page shows: labels, hints, placeholders, tab names,
    buttons, Markdown, and the names of choices."""
    for block in demo.blocks.values():
        if hidden(block) or isinstance(block, gr.State):
            continue
        where = f"{type(block).__name__} {block.elem_id or ''}"
        for prop in ("label", "info", "placeholder"):
            yield f"{where} {prop}", getattr(block, prop, None)
        if isinstance(block, gr.Button | gr.DownloadButton | gr.Markdown):
            yield f"{where} value", block.value
        for name, value in getattr(block, "choices", None) or ():
            if value not in MODELS:  # the models' names are names
                yield f"{where} choice", name


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    backend = ScriptedBackend("A cat.", models=MODELS)  # two: the model menu too
    feedback_dir = str(tmp_path_factory.mktemp("votes"))
    return build_demo(backend, UIOptions(feedback_dir=feedback_dir))


def test_every_text_the_page_shows_is_translated(demo):
    untranslated = []
    for where, text in shown_texts(demo):
        if text is None or text == "" or isinstance(text, bool):
            continue
        key = key_of(text)
        if key is None or key not in ZH:
            untranslated.append(f"{where}: {text!r}")
    assert untranslated == []


def test_the_tabs_main_texts_are_among_them(demo):
    keys = {key_of(text) for _, text in shown_texts(demo)}
    tabs = ["Image chat", "Multi-image chat", "Document chat", "Video chat", "Grounding"]
    assert {*tabs, "Compare", "Regenerate", "Clear", "中文"} <= keys
    assert ZH["Image chat"] == "图像对话" and ZH["中文"] == "English"


def test_the_hints_say_to_press_enter_as_the_send_button_is_an_arrow(demo):
    keys = [key_of(text) or str(text) for _, text in shown_texts(demo)]
    assert [k for k in keys if "press Send" in k] == []
    assert [c for c in ZH.values() if "按发送" in c] == []
    assert "Examples (click one, then press Enter)" in keys


def test_the_reasoning_hint_gives_the_thinking_temperature(demo):
    hint = next(key_of(t) for where, t in shown_texts(demo) if "image-chat-reasoning info" in where)
    assert hint.endswith(f"its thinking mode (temperature {THINKING_TEMPERATURE} advised)")
    assert ZH[hint].endswith(f"其思考模式（建议温度 {THINKING_TEMPERATURE}）")


def test_the_messages_the_interface_writes_are_translated():
    messages = [NOT_A_PAIR, ADD_AN_IMAGE, ADD_A_VIDEO, ADD_A_DOCUMENT, NOT_SAVED, EXAMPLES_LABEL]
    assert [m for m in [*messages, *VOTES.values()] if m not in ZH] == []
    # Texts the interface words itself, beside the backend's: the same in English.
    assert document_limits(english) == limits_text()
    assert upload_hint(english).startswith("Upload a PDF. Pages like `1-3, 5`")


@pytest.mark.parametrize(
    ("cookie", "accept_language", "language"),
    [
        (None, None, "en"),  # a bare API call
        (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh"),  # Chromium in Chinese
        (None, "zh-TW", "zh"),
        (None, "en-US,en;q=0.9,zh-CN;q=0.8", "en"),  # the first language counts, as in the page
        (None, "en;q=0.5, zh-CN", "zh"),  # ... by quality, not by position
        (None, "fr-FR,fr;q=0.9", "en"),  # other languages: English
        (f"{LANGUAGE_COOKIE}=zh-CN", "en-US", "zh"),  # the switch wins
        (f"other=1; {LANGUAGE_COOKIE}=en", "zh-CN", "en"),
        ("not a cookie;;=", "zh-CN", "zh"),
        # another app's malformed cookie on the same host does not hide the choice
        (f'other="unclosed; {LANGUAGE_COOKIE}=zh-CN', "en-US", "zh"),
        (f'{LANGUAGE_COOKIE}="zh-CN"; broken', "en-US", "zh"),
    ],
)
def test_the_language_of_a_request(cookie, accept_language, language):
    assert language_of(cookie, accept_language) == language


def test_the_page_scripts_header_carries_the_choice_when_no_cookie_arrives():
    """An embedded Space may get no cookie: the header the page script adds wins."""
    assert language_of(None, "en-US", chosen="zh-CN") == "zh"
    assert language_of(f"{LANGUAGE_COOKIE}=zh-CN", "zh-CN", chosen="en") == "en"
    embedded = request_with(x_internvl_language="zh-CN", accept_language="en-US")
    assert translate(ADD_AN_IMAGE, embedded) == "请先添加一张图像（上传、粘贴或摄像头）。"
    assert f'"{LANGUAGE_HEADER}"' in LANGUAGE_SCRIPT  # the script sends the header it reads
    assert "samesite=none; secure" in LANGUAGE_SCRIPT  # over https, for embedded pages


def request_with(**headers) -> SimpleNamespace:
    return SimpleNamespace(headers={k.replace("_", "-"): v for k, v in headers.items()})


def test_a_server_message_in_the_request_language():
    chinese = request_with(accept_language="zh-CN,zh;q=0.9")
    assert translate(ADD_AN_IMAGE, chinese) == "请先添加一张图像（上传、粘贴或摄像头）。"
    assert translate("{count} saved", chinese, count=3) == "已保存 3 个"
    assert translate("{count} saved", request_with(accept_language="en"), count=3) == "3 saved"
    switched = request_with(cookie=f"{LANGUAGE_COOKIE}=en", accept_language="zh-CN")
    assert translate(ADD_AN_IMAGE, switched) == ADD_AN_IMAGE
    # Outside an event (no request) and for texts it does not know: as written.
    assert translate(ADD_AN_IMAGE) == ADD_AN_IMAGE
    assert translate("The model's own error.", chinese) == "The model's own error."


def test_a_message_that_only_ends_like_a_template_stays_as_it_is():
    """General templates ("{count} pages", "{count} saved") never match other messages."""
    chinese = request_with(accept_language="zh-CN")
    assert translate("Please upload {count} pages", chinese, count=3) == "Please upload 3 pages"
    assert translate("Please upload 3 pages", chinese) == "Please upload 3 pages"
    assert translate("Your 2 notes were saved", chinese) == "Your 2 notes were saved"
    assert translate("{count} pages", chinese, count=3) == "3 页"
    assert set(RAISED_TEMPLATES) <= ZH.keys()


def raised(check, *args) -> str:
    with pytest.raises(InputError) as error:
        check(*args)
    return str(error.value)


def test_a_message_formatted_where_it_was_raised_is_translated_with_its_values():
    chinese = request_with(accept_language="zh-CN")
    too_many = raised(check_image_limit, [{"images": ["a.png"] * 8}], ["b.png"], 8)
    assert translate(too_many, chinese) == (
        "此对话将包含 9 张图像，上限为 8 张。请在发送前移除一些，或按清空开始新的对话。"
    )
    busy = raised(refuse_if_over, 9, 9)
    assert translate(busy, chinese).startswith("你已有 9 个请求在等待或正在使用模型")
    assert translate(too_many, request_with(accept_language="en")) == too_many


def test_the_language_script_comes_first_in_the_page():
    page = b"<!doctype html><html><head>\n<meta charset='utf-8'><script>gradio</script></head>"
    rewritten = with_language_choice(page)
    assert rewritten.index(LANGUAGE_SCRIPT.encode()) < rewritten.index(b"gradio")
    assert rewritten.count(LANGUAGE_SCRIPT.encode()) == 1
    assert with_language_choice(b'{"not": "a page"}') == b'{"not": "a page"}'


def test_the_titles_around_an_answer_follow_the_readers_language():
    """The chat's own words (Thinking, Reasoning, Other answer) are written by the server, in
    the language of the request rendering them; the memo of rendered turns keeps one per
    language, so one reader's language never shows to another."""
    from gradio.context import LocalContext

    from interface.conversation import RENDERED, chat_view

    RENDERED.clear()
    turns = [
        {"role": "user", "text": "What is it?"},
        {"role": "assistant", "text": "<think>Fur.</think>\n\nA cat.", "stats": "9 tokens"},
        {"role": "user", "text": "Sure?"},
    ]

    def titles(headers: dict) -> list[str]:
        token = LocalContext.request.set(request_with(**headers))
        try:
            messages = chat_view(turns)[0]
        finally:
            LocalContext.request.reset(token)
        return [m["metadata"]["title"] for m in messages if m.get("metadata")]

    assert titles({"accept_language": "zh-CN,zh;q=0.9"}) == ["思考过程"]
    assert titles({"accept_language": "en-US"}) == ["Thinking"]
    assert titles({"cookie": f"{LANGUAGE_COOKIE}=zh-CN"}) == ["思考过程"]
