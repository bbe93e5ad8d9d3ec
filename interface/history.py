"""Each tab's conversations, kept in the browser (gr.BrowserState, localStorage), never on the
server: listed in the tab's History accordion with a title and a time, restored with a click,
deleted one by one or all at once.

A conversation is saved each time one of its answers completes. The browser's storage holds
about 5 MB for the whole page, so a saved conversation keeps its text (each turn capped) and,
for its media, small JPEG thumbnails and the files' names; each tab keeps its newest
MAX_ENTRIES conversations within MAX_STORE_BYTES.

Restoring brings the text back, without the media: the original files may be gone from the
server (uploads are deleted after 6 hours) and the thumbnails are far too small for the model.
A notice shows the thumbnails and says to attach the files again; until then the model sees
the text turns only (the image, grounding and video tabs ask for the file before a follow-up).

Several pages of the same browser each write their own copy: the last one to save wins.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import time
import uuid
from collections.abc import Collection
from pathlib import Path

import gradio as gr

from interface.conversation import FEEDBACK, assistant_turn, to_clip, user_turn
from interface.i18n import localized, translate
from model_backend.documents import page_ranges
from model_backend.errors import InputError
from model_backend.images import load_image
from model_backend.media import sample_video
from model_backend.styles import normalize_style
from model_backend.thinking import THINK_CLOSE, THINK_OPEN, split_thinking

MAX_ENTRIES = 50  # conversations per tab
MAX_STORE_BYTES = 600_000  # per tab, as JSON: 4 tabs, base64-encrypted (4/3), fit in 5 MB
MAX_ENTRY_BYTES = 120_000  # one conversation: its oldest turns are left out beyond that
MAX_TURNS = 100  # one conversation: its oldest turns are left out beyond that too
MAX_TEXT_CHARS = 4000  # per turn (an answer's thinking has as much again)
MAX_THINKING_SECONDS = 86_400.0  # what the browser may send back as an answer's thinking time
MAX_THUMBNAILS = 8  # per conversation
THUMBNAIL_SIDE = 96  # pixels, the long side
MAX_THUMBNAIL_CHARS = 20_000  # one thumbnail's data URL (a few thousand characters in practice)
TITLE_CHARS = 60
# Fixed, so that the history outlives a server restart. BrowserState sends its secret to the
# page, so it protects nothing from the page itself; it only scrambles the stored text.
STORAGE_SECRET = "internvl-demo-history"
THUMBNAIL_URL = re.compile(r"data:image/jpeg;base64,[A-Za-z0-9+/]+={0,2}")
# An answer's figures as GenerationStats.summary() writes them: nothing else from the browser
# reaches the chat under an answer.
NUMBER = r"\d[\d,]*(?:\.\d+)?"
STATS = re.compile(
    rf"{NUMBER} tokens(?: · {NUMBER} prompt tokens reused)?(?: · {NUMBER} s to first token)?"
    rf"(?: · {NUMBER} tokens/s)?(?: · stopped)?"
)
NOT_SAVED = "No saved conversation yet: each one is saved here when an answer completes."


# -- pure functions: a conversation <-> a stored entry -----------------------------------------


FEEDBACK_MARKS = tuple(FEEDBACK.values())  # the marks an answer may carry


def thumbnail_url(image) -> str:
    """A PIL image as a small JPEG data URL."""
    image = image.convert("RGB")
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_thumbnail(path: str) -> str | None:
    """An image file's thumbnail; None if it cannot be read any more."""
    try:
        return thumbnail_url(load_image(path, max_side=THUMBNAIL_SIDE))
    except InputError:
        return None


def video_thumbnail(video: dict) -> str | None:
    """The middle sampled frame of a turn's video (decoded frames are cached); None if the
    file cannot be read any more."""
    try:
        frames, _ = sample_video(to_clip(video))
    except (InputError, OSError):
        return None
    return thumbnail_url(frames[len(frames) // 2]) if frames else None


def capped(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """The text, cut to `limit` characters (the same text when cut again)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def capped_answer(text: str, thinking_mode: bool) -> str:
    """An answer's text capped; one with thinking keeps its thinking and its answer, each
    capped (the thinking comes first and may be long)."""
    reply = split_thinking(text, opened=thinking_mode, final=True)
    if reply.thinking is None:
        return capped(text)
    return f"{THINK_OPEN}{capped(reply.thinking)}{THINK_CLOSE}\n\n{capped(reply.answer)}"


def thinking_seconds(value) -> float | None:
    """A thinking time from the browser, if it is one (nan and inf are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value <= MAX_THINKING_SECONDS else None


def json_bytes(value) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode())


def stored_turn(turn: dict) -> dict:
    """One turn as the browser keeps it: text, how it was asked or answered, and for media
    their names and thumbnails (a restored turn brings its thumbnails along)."""
    if turn["role"] == "assistant":
        thinking_mode = bool(turn.get("thinking_mode"))
        stored = {"role": "assistant", "text": capped_answer(turn["text"], thinking_mode)}
        for key in ("stats", "model"):
            if turn.get(key):
                stored[key] = str(turn[key])
        if thinking_mode:
            stored["thinking_mode"] = True
        if turn.get("thinking_seconds") is not None:
            stored["thinking_seconds"] = turn["thinking_seconds"]
        if turn.get("feedback") in FEEDBACK_MARKS:  # a like or a dislike survives a reload
            stored["feedback"] = turn["feedback"]
        return stored
    stored = {
        "role": "user",
        "text": capped(turn["text"]),
        "reasoning": bool(turn.get("reasoning")),
        "answer_style": normalize_style(turn.get("answer_style")),
    }
    if "typed" in turn:  # grounding: what was typed, besides the prompt built from it
        stored["typed"] = capped(turn["typed"])
    names = media_names(turn)
    thumbnails = [image_thumbnail(path) for path in turn.get("images") or ()]
    if turn.get("video"):
        thumbnails.append(video_thumbnail(turn["video"]))
    thumbnails += turn.get("thumbnails") or []
    if names:
        stored["media"] = names
        stored["thumbnails"] = [url for url in thumbnails if url]
    return stored


def media_names(turn: dict) -> list[str]:
    """The names of a question's images and video, or of its document and pages (a restored
    question keeps only these): what to attach again."""
    if turn.get("document"):  # its images are pages rendered here, not files to attach
        document, pages = turn["document"], turn["document"]["pages"]
        return [f"{document['name']} (page{'s' * (len(pages) != 1)} {page_ranges(pages)})"]
    names = [Path(path).name for path in turn.get("images") or ()]
    if turn.get("video"):
        names.append(Path(turn["video"]["path"]).name)
    return names + list(turn.get("media") or ())


def title_of(turns: list[dict]) -> str:
    """The first question, on one line and shortened."""
    first = next((t for t in turns if t["role"] == "user"), None)
    if first is None:
        return "Untitled conversation"
    text = " ".join((first.get("typed") or first["text"]).split()) or " ".join(
        first["text"].split()
    )
    return capped(text, TITLE_CHARS) or "Untitled conversation"


def make_entry(turns: list[dict], entry_id: str, saved_at: float | None = None) -> dict:
    """A conversation as one stored entry, within the limits (see `bounded`)."""
    stored = [stored_turn(turn) for turn in turns]
    return bounded({"id": entry_id, "time": saved_at, "title": title_of(turns), "turns": stored})


def bounded(entry: dict) -> dict:
    """The entry within MAX_TURNS and MAX_ENTRY_BYTES (its oldest exchanges are left out if
    needed) and MAX_THUMBNAILS. Applied when saving and to what the browser sends back."""
    while len(entry["turns"]) > 2 and (
        len(entry["turns"]) > MAX_TURNS or json_bytes(entry) > MAX_ENTRY_BYTES
    ):
        entry["turns"] = entry["turns"][2:]  # one question and its answer
        entry["partial"] = True
    kept = MAX_THUMBNAILS
    for turn in entry["turns"]:
        if "thumbnails" in turn:
            turn["thumbnails"] = turn["thumbnails"][:kept]
            kept -= len(turn["thumbnails"])
    return entry


def saved(entries: list[dict], entry: dict, now: float) -> list[dict]:
    """The entries with `entry` saved (replacing its older version, whose title and
    partiality it keeps: a restored conversation may have lost its first turns) as the
    newest, within MAX_ENTRIES and MAX_STORE_BYTES (the oldest are dropped)."""
    entry = {**entry, "time": now}
    old = find(entries, entry["id"])
    if old is not None:
        entry["title"] = old["title"]
        if old.get("partial"):
            entry["partial"] = True
    return newest([entry] + [e for e in entries if e["id"] != entry["id"]])


def newest(entries: list[dict]) -> list[dict]:
    """The first entries, within MAX_ENTRIES and MAX_STORE_BYTES."""
    kept = entries[:MAX_ENTRIES]
    while len(kept) > 1 and json_bytes(kept) > MAX_STORE_BYTES:
        kept.pop()
    return kept


def without(entries: list[dict], entry_id: str | None) -> list[dict]:
    return [e for e in entries if e["id"] != entry_id]


def find(entries: list[dict], entry_id: str | None) -> dict | None:
    return next((e for e in entries if e["id"] == entry_id), None)


def when(seconds: float | None) -> str:
    if not seconds:
        return ""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def choices(entries: list[dict]) -> list[tuple[str, str]]:
    """The panel's list, newest first: (title · time, id)."""
    return [(f"{e['title']} · {when(e['time'])}".rstrip(" ·"), e["id"]) for e in entries]


def restored_turns(entry: dict) -> list[dict]:
    """The entry's turns as the chat panel keeps them, without media (the files must be
    attached again); user turns keep their media's names and thumbnails. Every turn is marked
    "restored": its text comes from the browser, so it never goes into a preference pair."""
    turns = []
    for stored in entry["turns"]:
        if stored["role"] == "assistant":
            turn = assistant_turn(
                stored["text"],
                stored.get("stats"),
                stored.get("model"),
                stored.get("thinking_seconds"),
                stored.get("thinking_mode", False),
            )
            if stored.get("feedback") in FEEDBACK_MARKS:
                turn["feedback"] = stored["feedback"]
        else:
            turn = user_turn(stored["text"], (), None, stored["reasoning"], stored["answer_style"])
            for key in ("typed", "media", "thumbnails"):
                if key in stored:
                    turn[key] = stored[key]
        turns.append({**turn, "restored": True})
    return turns


def restore_notice(entry: dict) -> str:
    """What the tab says above a restored conversation: its media must be attached again."""
    title = html.escape(entry["title"])
    saved_at = (
        " " + translate("(saved {time})", time=when(entry["time"])) if entry.get("time") else ""
    )
    restored = translate("Restored from this browser:")
    lines = [f"<p><strong>{restored}</strong> {title}{saved_at}.</p>"]
    if entry.get("partial"):
        left_out = "Its oldest turns were left out: the conversation was too long to keep."
        lines.append(f"<p>{translate(left_out)}</p>")
    media = [name for turn in entry["turns"] for name in turn.get("media", ())]
    if media:
        names = ", ".join(html.escape(name) for name in dict.fromkeys(media))
        not_kept = translate(
            "⚠️ Its images and videos were not kept, only these thumbnails. Attach the original"
            " files again ({names}) to ask about them: until then the model sees the text of the"
            " conversation only.",
            names=names,
        )
        lines.append(f"<p>{not_kept}</p>")
        thumbnails = [url for turn in entry["turns"] for url in turn.get("thumbnails", ())]
        lines.append(
            "<p class='history-thumbs'>"
            + "".join(f"<img src='{url}' alt='thumbnail'>" for url in thumbnails)
            + "</p>"
        )
    # One HTML block (no blank line): Markdown leaves it as it is, then sanitizes it.
    return "<div class='history-notice'>" + "".join(lines) + "</div>"


def questions_of(turns: list[dict]) -> list[list]:
    """A conversation's questions and the names of their media (the same for a restored
    conversation as for the one it was saved from)."""
    return [[turn["text"], media_names(turn)] for turn in turns if turn["role"] == "user"]


def answered(turns: list[dict]) -> bool:
    """The conversation ends with a completed answer (its figures come at the end)."""
    return bool(turns) and turns[-1]["role"] == "assistant" and turns[-1].get("stats") is not None


def valid_entries(value, models: Collection[str]) -> list[dict]:
    """What the browser sent, kept only where it has the stored shape (it may be old, or
    edited by hand), within the limits of what is saved: its text capped, thumbnails only as
    JPEG data URLs, figures only as the demo writes them, and only `models` as models."""
    entries = []
    for raw in value if isinstance(value, list) else []:
        try:
            entry = clean_entry(raw, models)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if entry["turns"] and entry["id"] not in {e["id"] for e in entries}:
            entries.append(entry)
        if len(entries) == MAX_ENTRIES:
            break
    return newest(entries)


def clean_entry(raw: dict, models: Collection[str]) -> dict:
    turns = []
    partial = len(raw["turns"]) > MAX_TURNS
    for stored in raw["turns"][-MAX_TURNS:]:  # the newest: a sent list may be of any length
        role, text = stored["role"], stored["text"]
        if role not in ("user", "assistant") or not isinstance(text, str):
            raise ValueError(role)
        turn = {"role": role, "text": capped(text)}
        if role == "assistant":
            thinking_mode = stored.get("thinking_mode") is True
            turn["text"] = capped_answer(text, thinking_mode)
            if thinking_mode:
                turn["thinking_mode"] = True
            seconds = thinking_seconds(stored.get("thinking_seconds"))
            if seconds is not None:
                turn["thinking_seconds"] = seconds
            if isinstance(stored.get("stats"), str) and STATS.fullmatch(stored["stats"]):
                turn["stats"] = stored["stats"]
            if stored.get("model") in models:
                turn["model"] = stored["model"]
            if stored.get("feedback") in FEEDBACK_MARKS:
                turn["feedback"] = stored["feedback"]
        else:
            turn["reasoning"] = bool(stored.get("reasoning"))
            turn["answer_style"] = normalize_style(stored.get("answer_style"))
            if isinstance(stored.get("typed"), str):
                turn["typed"] = capped(stored["typed"])
            if stored.get("media"):
                turn["media"] = [capped(str(name), 200) for name in stored["media"][:16]]
                thumbnails = stored.get("thumbnails", ())[:MAX_THUMBNAILS]
                urls = [u for u in thumbnails if isinstance(u, str)]
                turn["thumbnails"] = [
                    u for u in urls if len(u) <= MAX_THUMBNAIL_CHARS and THUMBNAIL_URL.fullmatch(u)
                ]
        turns.append(turn)
    entry = {
        "id": str(raw["id"])[:40],
        "time": float(raw["time"]) if raw.get("time") else None,
        "title": capped(" ".join(str(raw["title"]).split()), TITLE_CHARS),
        "turns": turns,
    }
    if partial or raw.get("partial"):
        entry["partial"] = True
    return bounded(entry)


# -- the panel ---------------------------------------------------------------------------------


def restore_notice_box(name: str) -> gr.Markdown:
    """Where a tab says that a conversation was restored (place it above the chat panel)."""
    return gr.Markdown(visible=False, elem_id=f"{name}-history-notice")


class History:
    """One tab's saved conversations: the browser's copy, and the accordion that lists them.

    Build it where the accordion goes, then `wire(panel, notice)` once the chat panel exists.
    """

    def __init__(self, name: str):
        self.name = name
        self.store = gr.BrowserState(
            [], storage_key=f"internvl-demo-history-v1-{name}", secret=STORAGE_SECRET
        )
        # The shown conversation's saved id and questions (questions_of); None after Clear.
        self.current = gr.State(None)
        self.pending = gr.State(None)  # that conversation as an entry, once it has an answer
        with gr.Accordion(
            localized("History (kept in this browser)"), open=False, elem_id=f"{name}-history"
        ) as self.accordion:
            self.list = gr.Radio(
                [],
                label=localized("Saved conversations, newest first: click one to restore it"),
                info=localized(NOT_SAVED),
                elem_id=f"{name}-history-list",
            )
            with gr.Row():
                self.delete_btn = gr.Button(
                    localized("Delete selected"), size="sm", elem_id=f"{name}-history-delete"
                )
                self.clear_btn = gr.Button(
                    localized("Delete all"),
                    size="sm",
                    variant="stop",
                    elem_id=f"{name}-history-clear",
                )
            gr.Markdown(
                localized(
                    "Saved in this browser only (nothing on the server), with small thumbnails "
                    "instead of the images and videos: attach the files again to continue."
                ),
                elem_classes="history-note",
            )

    def listed(self, entries: list[dict], selected: str | None = None) -> dict:
        """The accordion's list (and its count) for these entries."""
        selected = selected if find(entries, selected) else None
        info = translate("{count} saved", count=len(entries)) if entries else translate(NOT_SAVED)
        label = translate("History (kept in this browser) · {count}", count=len(entries))
        return {
            self.list: gr.Radio(choices=choices(entries), value=selected, info=info),
            self.accordion: gr.Accordion(label=label),
        }

    def wire(self, panel, notice: gr.Markdown) -> None:
        """Save the panel's conversation when an answer completes; restore, delete, clear."""
        self.panel, self.notice = panel, notice
        # Only these models are taken from the browser as an answer's model.
        self.models = {*panel.backend.models, panel.backend.info.model}
        quick = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}
        # The panel's state changes with every streamed update: this cheap check runs on the
        # server (a State is not sent by the page), queued (only queued events tell the page
        # that a State changed, here `pending`), the latest one only. The browser's copy
        # (large) travels only when `pending` changes, once per completed answer.
        panel.state.change(
            self.observe,
            [panel.state, self.current],
            [self.current, self.pending],
            trigger_mode="always_last",
            concurrency_limit=None,
            show_progress="hidden",
            api_visibility="private",
        )
        self.pending.change(
            self.save, [self.pending, self.store], [self.store, *self.outputs], **quick
        )
        restored = [
            panel.state,
            panel.chatbot,
            panel.textbox,
            *panel.downloads,
            *panel.tab.cleared,
            *panel.tab.extra_outputs,
            self.current,
            notice,
        ]
        self.list.select(
            self.restore,
            [self.list, self.store, panel.state, self.current],
            list(dict.fromkeys(restored)),  # grounding's extras are also cleared by Clear
            **quick,
        )
        self.delete_btn.click(
            self.delete, [self.list, self.store], [self.store, *self.outputs], **quick
        )
        self.clear_btn.click(
            lambda: {self.store: [], **self.listed([])}, None, [self.store, *self.outputs], **quick
        )
        for trigger in (panel.clear_btn.click, panel.chatbot.clear):  # a new conversation
            trigger(self.cleared, None, [notice, self.current], **quick)

    @property
    def outputs(self) -> list:
        return [self.list, self.accordion]

    def load(self, value) -> dict:
        """The list, when the page opens with what the browser kept."""
        return self.listed(valid_entries(value, self.models))

    # -- handlers --------------------------------------------------------------------------

    def cleared(self) -> dict:
        """Clear: the next conversation is a new one, whatever its first question."""
        return {self.notice: gr.Markdown(visible=False), self.current: None}

    def observe(self, turns: list[dict], current: dict | None) -> dict:
        """The conversation as an entry once an answer completed: under the id it was saved
        with while it goes on from every question saved (a follow-up, Regenerate, a like; a
        restored conversation too), else under a new one, so that it never overwrites
        another (after Undo, the shortened conversation is saved beside the longer one)."""
        if not turns:  # emptied: whatever comes next is a new conversation
            return {self.current: None, self.pending: gr.skip()}
        if not answered(turns):
            return {self.current: gr.skip(), self.pending: gr.skip()}
        questions = questions_of(turns)
        same = current and questions[: len(current["questions"])] == current["questions"]
        entry_id = current["id"] if same else uuid.uuid4().hex[:12]
        entry = make_entry(turns, entry_id)
        return {self.current: {"id": entry_id, "questions": questions}, self.pending: entry}

    def save(self, entry: dict | None, value) -> dict:
        entries = valid_entries(value, self.models)
        if entry is None:
            return {self.store: gr.skip(), **self.listed(entries)}
        old = find(entries, entry["id"])
        if old is not None and old["turns"] == entry["turns"]:  # nothing new (a like, say)
            return {self.store: gr.skip(), **self.listed(entries, entry["id"])}
        entries = saved(entries, entry, time.time())
        return {self.store: entries, **self.listed(entries, entry["id"])}

    def restore(
        self, entry_id: str, value, turns: list[dict], current: dict | None, request: gr.Request
    ):
        entries = valid_entries(value, self.models)
        entry = find(entries, entry_id)
        skip = {self.panel.state: gr.skip()}
        if turns and not answered(turns):
            busy = translate(
                "Wait for the answer to finish (or press Stop) before restoring a conversation."
            )
            return {**skip, self.notice: gr.Markdown(f"⚠️ {busy}", visible=True)}
        if entry is None or (current and entry_id == current["id"] and turns):  # gone, or shown
            return skip
        restored = restored_turns(entry)
        updates = self.panel.clear(request)  # the question box, downloads, media boxes
        updates.update(self.panel.shown(restored))
        updates.update(self.panel.extras(restored))
        updates[self.current] = {"id": entry["id"], "questions": questions_of(restored)}
        updates[self.notice] = gr.Markdown(restore_notice(entry), visible=True)
        return updates

    def delete(self, entry_id: str | None, value) -> dict:
        entries = valid_entries(value, self.models)
        if find(entries, entry_id) is None:
            return {self.store: gr.skip(), **self.listed(entries)}
        entries = without(entries, entry_id)
        return {self.store: entries, **self.listed(entries)}
