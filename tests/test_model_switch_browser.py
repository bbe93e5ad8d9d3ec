"""Switching models in the page: the header and the tabs' default system prompts follow."""

from __future__ import annotations

from dataclasses import replace

import pytest

from model_backend.prompt import DEFAULT_SYSTEM_PROMPT, INTERNVL2_SYSTEM_PROMPT
from tests.conftest import launched
from tests.scripted_backend import ScriptedBackend

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.browser


class TwoModels(ScriptedBackend):
    """InternVL 2.5 (internvl2_5 template) and InternVL2-8B-MPO (internlm2-chat template)."""

    def __init__(self):
        super().__init__("An answer.")
        self.prompts = {
            "InternVL2_5-8B": DEFAULT_SYSTEM_PROMPT,
            "InternVL2-8B-MPO": INTERNVL2_SYSTEM_PROMPT,
        }
        self.models = list(self.prompts)
        self.select_model(self.models[0])

    def select_model(self, model: str) -> None:
        self.info = replace(self.info, model=model, system_prompt=self.prompts[model])


def test_switching_models_updates_the_header_and_default_system_prompts(browser, gradio_temp_dir):
    expect = playwright.expect
    with launched(TwoModels()) as url:
        page = browser.new_page()
        page.goto(url)
        page.get_by_role("tab", name="Video chat", exact=True).click()
        page.locator("#video-chat-settings").click()
        written = page.locator("#video-chat-system-prompt textarea")
        expect(written).to_have_value(DEFAULT_SYSTEM_PROMPT, timeout=30_000)
        written.fill("Be brief.")
        written.press("Tab")
        page.get_by_role("tab", name="Image chat", exact=True).click()
        page.locator("#image-chat-settings").click()
        prompt = page.locator("#image-chat-system-prompt textarea")
        expect(prompt).to_have_value(DEFAULT_SYSTEM_PROMPT)
        page.locator("#model-choice input").click()
        page.get_by_role("option", name="InternVL2-8B-MPO").click()
        expect(page.locator("#header-note")).to_contain_text("InternVL2-8B-MPO", timeout=30_000)
        expect(prompt).to_have_value(INTERNVL2_SYSTEM_PROMPT)
        page.get_by_role("tab", name="Video chat", exact=True).click()
        expect(written).to_have_value("Be brief.")  # a prompt the user wrote stays
        page.close()
