"""The chat export in a real browser: written only when asked for, once, and downloadable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.test_browser import (  # noqa: F401 (page is a fixture)
    ask,
    bot_messages,
    expect,
    page,
    set_max_new_tokens,
)

pytestmark = pytest.mark.browser


def exported(gradio_temp_dir: Path) -> set[Path]:
    """Every export file there is, in this process's export folder and in Gradio's cache."""
    from interface.export import export_dir

    folders = (export_dir(), gradio_temp_dir)
    return {path.resolve() for folder in folders for path in folder.rglob("internvl-chat-*.json")}


def test_a_conversation_is_exported_only_when_asked(page, backend, gradio_temp_dir):  # noqa: F811
    before = exported(gradio_temp_dir)
    page.locator("#image-chat-image input[type='file']").set_input_files(str(EXAMPLES / "cat.jpg"))
    expect(page.locator("#image-chat-image img")).to_be_visible()
    set_max_new_tokens(page, 16)
    ask(page, "image-chat", "What is in this image?")
    expect(bot_messages(page).first).to_contain_text("tokens/s")
    expect(page.locator("#image-chat-regenerate")).to_be_enabled()  # the answer is over
    json_button = page.locator("#image-chat-export-json")
    expect(json_button).to_be_hidden()
    assert exported(gradio_temp_dir) == before  # nothing written after the answer

    page.locator("#image-chat-export").click()
    expect(json_button).to_be_visible()
    with page.expect_download() as download:
        json_button.click()
    record = json.loads(Path(download.value.path()).read_text())
    assert [t["role"] for t in record["turns"]] == ["user", "assistant"]
    assert record["turns"][0]["images"][0]["data_url"].startswith("data:image/jpeg;base64,")
    assert record["settings"]["max_new_tokens"] == 16
    with page.expect_download() as download:
        page.locator("#image-chat-export-md").click()
    assert "What is in this image?" in Path(download.value.path()).read_text()
    # One file, served from where it was written (not copied into Gradio's cache as well).
    assert len(exported(gradio_temp_dir)) == len(before) + 1

    ask(page, "image-chat", "And now?")  # the conversation changes: the old export goes
    expect(json_button).to_be_hidden()
