"""The settings every tab shows: prompt shaping (reasoning, answer style) and sampling."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import gradio as gr

from interface.i18n import localized
from model_backend.errors import InputError
from model_backend.prompt import DEFAULT_SYSTEM_PROMPT
from model_backend.styles import ANSWER_STYLES, DEFAULT_STYLE
from model_backend.thinking import THINKING_TEMPERATURE
from model_backend.types import SETTING_LIMITS, BackendInfo, GenerationSettings


@dataclass
class SettingsControls:
    """One tab's settings components."""

    reasoning: gr.Checkbox
    answer_style: gr.Dropdown
    system_prompt: gr.Textbox
    temperature: gr.Slider
    top_p: gr.Slider
    top_k: gr.Slider
    repetition_penalty: gr.Slider
    max_new_tokens: gr.Slider
    max_tiles: gr.Slider

    def style(self) -> list:
        """How the next question is asked (read when it is sent)."""
        return [self.reasoning, self.answer_style]

    def generation(self) -> list:
        """The system prompt, then the arguments of `make_settings`."""
        return [self.system_prompt, *(getattr(self, name) for name in SETTING_NAMES)]


def build_settings(
    defaults: GenerationSettings, system_prompt: str, prefix: str, show_max_tiles: bool = True
) -> SettingsControls:
    """Reasoning and answer style in view; sampling in an accordion, at the reference defaults."""
    with gr.Row():
        reasoning = gr.Checkbox(
            False,
            label=localized("Reason step by step"),
            info=localized(
                "InternVL 2.5: the MPO chain-of-thought prompt, the final answer highlighted; "
                "InternVL3.5: its thinking mode (temperature {temperature} advised)",
                temperature=THINKING_TEMPERATURE,
            ),
            elem_id=f"{prefix}-reasoning",
        )
        answer_style = gr.Dropdown(
            [(localized(style), style) for style in ANSWER_STYLES],  # the value: the English name
            value=DEFAULT_STYLE,
            label=localized("Answer style"),
            elem_id=f"{prefix}-answer-style",
        )
    with gr.Accordion(localized("Settings"), open=False, elem_id=f"{prefix}-settings"):
        prompt = gr.Textbox(
            system_prompt,
            label=localized("System prompt"),
            lines=3,
            elem_id=f"{prefix}-system-prompt",
        )

        def slider(name: str, **kw) -> gr.Slider:
            limit = SETTING_LIMITS[name]
            low = limit.low + limit.step if limit.low_open else limit.low
            value = getattr(defaults, name)
            elem_id = f"{prefix}-{name.replace('_', '-')}"
            return gr.Slider(
                low,
                limit.high,
                value,
                step=limit.step,
                label=localized(limit.label),
                elem_id=elem_id,
                **kw,
            )

        return SettingsControls(
            reasoning=reasoning,
            answer_style=answer_style,
            system_prompt=prompt,
            **{name: slider(name) for name in SETTING_NAMES if name != "max_tiles"},
            max_tiles=slider("max_tiles", visible=show_max_tiles),
        )


# The sampling settings as UI components and API parameters name them, in this order.
SETTING_NAMES = tuple(field.name for field in fields(GenerationSettings))
INTEGER_SETTINGS = {field.name for field in fields(GenerationSettings) if field.type == "int"}


def finite_number(name: str, value) -> float:
    """`value` as a float; InputError naming the parameter for anything but a finite number
    (inf and nan would overflow, or slip past range checks, further on)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise InputError(f"Invalid parameter: {name} must be a finite number, not {value!r}.")
    return number


def make_settings(*values: float) -> GenerationSettings:
    """GenerationSettings from UI/API values in SETTING_NAMES order (sliders deliver floats)."""
    given = {name: finite_number(name, v) for name, v in zip(SETTING_NAMES, values, strict=True)}
    settings = GenerationSettings(
        **{name: int(v) if name in INTEGER_SETTINGS else v for name, v in given.items()}
    )
    settings.check()
    return settings


def settings_record(system_prompt: str, *values: float) -> dict:
    """The settings as plain data (for the chat export)."""
    return {"system_prompt": system_prompt, **dict(zip(SETTING_NAMES, values, strict=True))}


def default_system_prompt(info: BackendInfo) -> str:
    """A model's own system prompt (the checkpoint's template's), the tabs' default."""
    return info.system_prompt or DEFAULT_SYSTEM_PROMPT
