"""The model's queue: one concurrency group for every event that runs the model, and each
client's share of it (jobs per session and per address, and answers nobody reads).

Gradio has no public view of who waits in its queue; these few functions read it (its events,
and the updates waiting to be read by each session) and do nothing if it changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import gradio as gr

from model_backend.errors import InputError

log = logging.getLogger(__name__)

MODEL_QUEUE = "model"  # one concurrency group for every event that runs the model
# Models being loaded for sessions (the menu, or a session's model that was unloaded to make
# room), one at a time, outside MODEL_QUEUE: answers go on meanwhile.
MODEL_LOADS = "model-loads"
# Requests one client may have waiting for or running on the model: a page has four tabs; an
# address may hold several people (one network, a proxy).
MAX_JOBS_PER_SESSION = 4
MAX_JOBS_PER_ADDRESS = 8
# A job whose updates nobody has read for this long (an API call whose result is never
# fetched) is stopped: it would keep the model from everyone else.
ABANDONED_AFTER_S = 5.0


def _gradio_queue(request: gr.Request | None):
    app = getattr(getattr(request, "request", None), "app", None)
    blocks = app.get_blocks() if hasattr(app, "get_blocks") else None
    return getattr(blocks, "_queue", None)


def client_address(request) -> str | None:
    client = getattr(request, "client", None)
    return getattr(client, "host", None)


def model_jobs(request: gr.Request | None) -> list:
    """The queue's events waiting for or running on the model, oldest first."""
    events = getattr(_gradio_queue(request), "event_ids_to_events", {})
    return [
        event
        for event in list(events.values())
        if getattr(event, "concurrency_id", None) == MODEL_QUEUE and getattr(event, "alive", True)
    ]


def is_clients(event, session: str | None, address: str | None) -> bool:
    if session:
        return event.session_hash == session
    return bool(address) and client_address(getattr(event, "request", None)) == address


def client_jobs(request: gr.Request | None) -> tuple[int, int]:
    """(jobs of this session, jobs of this address) waiting for or running on the model."""
    session, address = getattr(request, "session_hash", None), client_address(request)
    jobs = model_jobs(request)
    same_session = sum(event.session_hash == session for event in jobs)
    same_address = sum(is_clients(event, None, address) for event in jobs)
    return same_session, same_address


class Admissions:
    """Jobs the validator let through that Gradio has not queued yet.

    Gradio runs the validators of a burst of calls before it queues any of them, so counting
    the queue alone let 19 of 20 simultaneous calls through a limit of 8. Each admission is
    remembered with the queue as it was; it counts until a new job of the same client shows
    up in the queue (or ADMISSION_WINDOW_S has passed: queuing takes milliseconds).
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.entries: list[tuple[float, str | None, str | None, frozenset]] = []

    def not_yet_queued(self, jobs: list) -> list[tuple]:
        now = time.monotonic()
        self.entries = [e for e in self.entries if now - e[0] <= ADMISSION_WINDOW_S]
        claimed: set = set()
        waiting = []
        for entry in self.entries:  # oldest first, each claiming one new job of its client
            _, session, address, before = entry
            arrived = next(
                (
                    job
                    for job in jobs
                    if job._id not in before
                    and job._id not in claimed
                    and is_clients(job, session, address)
                ),
                None,
            )
            if arrived is None:
                waiting.append(entry)
            else:
                claimed.add(arrived._id)
        return waiting

    def admit(self, request: gr.Request | None) -> None:
        """Refuse the job if the client has its share already; else remember it."""
        session, address = getattr(request, "session_hash", None), client_address(request)
        with self.lock:
            jobs = model_jobs(request)
            waiting = self.not_yet_queued(jobs)
            session_jobs, address_jobs = client_jobs(request)
            session_jobs += sum(bool(session) and entry[1] == session for entry in waiting)
            address_jobs += sum(bool(address) and entry[2] == address for entry in waiting)
            refuse_if_over(session_jobs, address_jobs)
            before = frozenset(job._id for job in jobs)
            self.entries.append((time.monotonic(), session, address, before))


ADMISSION_WINDOW_S = 0.5
ADMISSIONS = Admissions()


def check_client_jobs(request: gr.Request | None) -> None:
    """Raise InputError if this client already has as many jobs as it may have."""
    refuse_if_over(*client_jobs(request))


def refuse_if_over(session_jobs: int, address_jobs: int) -> None:
    if session_jobs >= MAX_JOBS_PER_SESSION or address_jobs >= MAX_JOBS_PER_ADDRESS:
        raise InputError(
            f"You already have {max(session_jobs, address_jobs)} requests waiting for or "
            f"running on the model, the most one client may have ({MAX_JOBS_PER_SESSION} per "
            f"session, {MAX_JOBS_PER_ADDRESS} per address). Wait for one to finish or cancel "
            f"one, then try again."
        )


def client_limit_validator(input_count: int) -> Callable:
    """A Gradio `validator` (it runs before the job is queued) refusing a client's job beyond
    its share; the message goes with the first input."""

    def validate(request: gr.Request, *values):
        try:
            ADMISSIONS.admit(request)
        except InputError as error:
            return [gr.validate(False, str(error))] + [gr.validate(True, "")] * (input_count - 1)
        return [gr.validate(True, "")] * input_count

    return validate


class ResultReader:
    """Whether anyone reads a job's updates (Gradio keeps them per session until read)."""

    def __init__(self, request: gr.Request | None):
        queue = _gradio_queue(request)
        pending = getattr(queue, "pending_messages_per_session", {})
        self.updates = pending.get(getattr(request, "session_hash", None))
        self.read_at = time.monotonic()

    def check(self) -> None:
        """Raise InputError once the updates have piled up unread for ABANDONED_AFTER_S."""
        if self.updates is None:
            return
        now = time.monotonic()
        if self.updates.qsize() <= 2:  # the latest update, perhaps a heartbeat: being read
            self.read_at = now
        if now - self.read_at > ABANDONED_AFTER_S:
            log.info("stopped an answer nobody read for %g s", ABANDONED_AFTER_S)
            raise InputError(
                f"Stopped: nobody read this answer for {ABANDONED_AFTER_S:g} s, and others were "
                f"waiting for the model."
            )
