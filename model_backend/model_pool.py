"""The models a LocalBackend holds in memory: as many as its budget allows.

Each request names its model and holds a lease on it from the moment it is prepared until its
answer ends, so a model is never unloaded while it is in use; when a model must be loaded and
the budget is spent, the least recently used idle models are unloaded first. A model that does
not fit even then is refused before anything is unloaded. One model loads at a time; loading
does not wait for the generations of the others.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from model_backend.convert import gigabytes
from model_backend.errors import InputError
from model_backend.loading import LoadedModel
from model_backend.streamer import hidden_token_ids
from model_backend.tiny import RANDOM_WEIGHTS_MARKER
from model_backend.types import BackendInfo

log = logging.getLogger(__name__)


def release_memory() -> None:
    """Return freed memory to the operating system: glibc keeps freed blocks for reuse, so a
    long conversation would otherwise hold on to its peak after Clear."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def module_bytes(model: torch.nn.Module) -> int:
    """What a loaded model occupies: its parameters and buffers."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(eq=False)
class PooledModel:
    """A loaded model and what generating with it needs to know."""

    name: str
    loaded: LoadedModel
    info: BackendInfo
    bytes: int  # measured: parameters and buffers
    users: int = 0  # requests being prepared, queued or generated with it
    last_used: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        config = self.model.config
        self.dtype = self.model.model.vision_tower.dtype  # pixels go in at the tower's dtype
        self.tile_size = int(config.vision_config.image_size[0])
        self.tokens_per_tile = int(config.image_seq_length)
        self.context_length = int(config.text_config.max_position_embeddings)
        self.image_token_id = int(config.image_token_id)
        self.hidden_ids = hidden_token_ids(self.tokenizer)
        configured = self.model.generation_config.eos_token_id
        ids = configured if isinstance(configured, list) else [configured]
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.stop_ids = sorted({i for i in [*ids, im_end] if i is not None})

    @classmethod
    def of(cls, name: str, loaded: LoadedModel) -> PooledModel:
        info = BackendInfo(
            model=name,
            kind="local",
            device=loaded.description,
            random_weights=Path(name, RANDOM_WEIGHTS_MARKER).is_file(),
            context_length=int(loaded.model.config.text_config.max_position_embeddings),
            system_prompt=loaded.template.system_prompt,
            thinking_mode=loaded.thinking_mode,
        )
        return cls(name, loaded, info, module_bytes(loaded.model))

    @property
    def model(self):
        return self.loaded.model

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def template(self):
        return self.loaded.template

    @property
    def device(self) -> torch.device:
        return self.loaded.input_device


class Lease:
    """A request's hold on a model: it is not unloaded until `release()` (idempotent)."""

    def __init__(self, pool: ModelPool, slot: PooledModel):
        self.pool, self.slot = pool, slot
        self.released = False

    def release(self) -> None:
        with self.pool._lock:
            if not self.released:
                self.released = True
                self.slot.users -= 1
                self.slot.last_used = time.monotonic()

    def __enter__(self) -> PooledModel:
        return self.slot

    def __exit__(self, *exc) -> None:
        self.release()


class ModelPool:
    """Loaded models within `budget` bytes (their measured sizes), least recently used out.

    `load(name)` loads a model (minutes for a big one); `estimate(name)` says about how many
    bytes it will take without loading it (None: unknown); `on_unload(name)` is told when a
    model leaves, so what was kept for it goes too.
    """

    def __init__(
        self,
        budget: int,
        load: Callable[[str], PooledModel],
        estimate: Callable[[str], int | None],
        on_unload: Callable[[str], None],
    ):
        self.budget = budget
        self._load, self._estimate, self._on_unload = load, estimate, on_unload
        self._models: dict[str, PooledModel] = {}
        # Guards _models and the users counts; held briefly. Reentrant: a lease's finalizer
        # (a stream dropped unread) may run inside a garbage collection in this very thread.
        self._lock = threading.RLock()
        self._loading = threading.Lock()  # one load at a time

    @property
    def used(self) -> int:
        with self._lock:
            return sum(slot.bytes for slot in self._models.values())

    def loaded(self) -> list[str]:
        """The models in memory, least recently used first."""
        with self._lock:
            return [s.name for s in sorted(self._models.values(), key=lambda s: s.last_used)]

    def get(self, name: str) -> PooledModel | None:
        with self._lock:
            return self._models.get(name)

    def acquire(self, name: str) -> Lease:
        """A lease on `name`, loaded first if it is not in memory (InputError if it does not
        fit; ModelLoadError if it cannot be loaded)."""
        lease = self._lease(name)
        if lease is not None:
            return lease
        with self._loading:
            lease = self._lease(name)  # loaded by another request while this one waited
            if lease is not None:
                return lease
            estimate = self._estimate(name) or 0
            self._make_room(name, estimate, keep=None)
            slot = self._load(name)
            with self._lock:
                slot.users = 1
                self._models[name] = slot
            lease = Lease(self, slot)
            try:  # the estimate may have been short of the measured size
                self._make_room(name, 0, keep=slot)
            except InputError:
                lease.release()
                self.unload(name)
                raise
            log.info(
                "Loaded %s (%s); models in memory: %s",
                name,
                gigabytes(slot.bytes),
                ", ".join(self.loaded()),
            )
            return lease

    def _lease(self, name: str) -> Lease | None:
        with self._lock:
            slot = self._models.get(name)
            if slot is None:
                return None
            slot.users += 1
            slot.last_used = time.monotonic()
            return Lease(self, slot)

    def _make_room(self, name: str, needed: int, keep: PooledModel | None) -> None:
        """Unload idle models, least recently used first, until `needed` more bytes fit; if
        the models answering now leave no room, raise InputError and unload nothing.

        A model alone is never refused here, even beyond the budget (it only bounds how many
        are kept together): whether it fits the device is load_model's check, as it was when
        the demo held one model at a time."""
        with self._lock:
            used = sum(slot.bytes for slot in self._models.values())
            idle = sorted(
                (s for s in self._models.values() if s.users == 0 and s is not keep),
                key=lambda s: s.last_used,
            )
            busy = [s for s in self._models.values() if s.users > 0 and s is not keep]
            kept = used - sum(s.bytes for s in idle)  # what stays whatever is unloaded
            if busy and kept + needed > self.budget:
                raise InputError(self._refusal(name, needed or keep.bytes, busy))
            leaving = []
            for slot in idle:
                if used + needed <= self.budget:
                    break
                leaving.append(slot)
                used -= slot.bytes
                del self._models[slot.name]
        for slot in leaving:
            log.info("Unloading %s to make room for %s", slot.name, name)
            self._forget(slot)

    def _refusal(self, name: str, needed: int, busy: list[PooledModel]) -> str:
        message = (
            f"{name} needs about {gigabytes(needed)}, and the memory for models is "
            f"{gigabytes(self.budget)}"
        )
        answering = ", ".join(f"{s.name} ({gigabytes(s.bytes)})" for s in busy)
        return (
            f"{message}, of which models answering now hold "
            f"{gigabytes(sum(s.bytes for s in busy))}: {answering}. Try again when they "
            f"have finished."
        )

    def unload(self, name: str | None = None) -> None:
        """Unload `name` (None: every model), whether in use or not: for closing."""
        with self._lock:
            names = list(self._models) if name is None else [name]
            leaving = [self._models.pop(n) for n in names if n in self._models]
        for slot in leaving:
            self._forget(slot)

    def _forget(self, slot: PooledModel) -> None:
        self._on_unload(slot.name)
        slot.loaded = None
        release_memory()
