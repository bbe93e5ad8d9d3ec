"""A model per session: the local backend holds several models within a memory budget (three
tiny checkpoints with different weights, CPU)."""

from __future__ import annotations

import pytest

from model_backend.base import Conversation, GenerationSettings, Turn
from model_backend.errors import InputError
from model_backend.local import LocalBackend
from model_backend.prompt import DEFAULT_SYSTEM_PROMPT
from model_backend.tiny import write_tiny_checkpoint
from tests.conftest import EXAMPLES, generate_threads

GREEDY = GenerationSettings(max_new_tokens=8, temperature=0, max_tiles=2)
QUESTION = Conversation(
    (Turn("user", "What is it?", (str(EXAMPLES / "cat.jpg"),)),), DEFAULT_SYSTEM_PROMPT
)


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoint, tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("pool")
    others = [write_tiny_checkpoint(root / f"seed{seed}", seed=seed) for seed in (1, 2)]
    return [str(tiny_checkpoint), *map(str, others)]


@pytest.fixture(scope="module")
def size(checkpoints) -> int:
    """Bytes of one tiny model in memory (they are all the same shape)."""
    probe = LocalBackend(checkpoints[0], device="cpu")
    measured = probe.pool.get(checkpoints[0]).bytes
    parameters = sum(p.numel() * p.element_size() for p in probe.model.parameters())
    assert parameters <= measured < parameters * 1.01  # parameters and a few buffers
    probe.close()
    return measured


def pool(checkpoints, models: float, **options) -> LocalBackend:
    """A backend over the three checkpoints with room for `models` of them."""
    size = options.pop("size")
    return LocalBackend(
        checkpoints[0],
        device="cpu",
        models=checkpoints,
        model_pool_gb=models * size / 2**30,
        **options,
    )


def answer(backend, model=None, chat=None, settings=GREEDY) -> str:
    return "".join(backend.stream(QUESTION, settings, model=model, chat=chat))


def test_the_least_recently_used_idle_model_is_unloaded_with_its_caches(checkpoints, size):
    backend = pool(checkpoints, 2.5, size=size)
    first, second, third = checkpoints
    assert backend.ensure_model(second).model == second
    assert backend.pool.loaded() == [first, second]
    answer(backend, model=second, chat="s2")
    answer(backend, model=first, chat="s1")  # first is now the most recently used
    backend.ensure_model(third)
    assert backend.pool.loaded() == [first, third]  # second, least recently used, went
    assert backend.prefix_cache.chats() == ["s1"]  # and its cache with it
    assert backend.pool.used <= backend.pool.budget
    assert backend.describe(second).model == second  # still described, not loaded
    assert answer(backend, model=second)  # loaded again on demand (first goes now)
    assert backend.pool.loaded() == [third, second]
    backend.close()


def test_a_generating_model_is_not_unloaded_and_loading_does_not_wait_for_it(checkpoints, size):
    backend = pool(checkpoints, 2.5, size=size)
    first, second, third = checkpoints
    long = GenerationSettings(max_new_tokens=5000, temperature=0.7)
    with backend.stream(QUESTION, long, model=first) as running:
        next(piece for piece in running if piece)  # generating now
        backend.ensure_model(second)  # first is the least recently used, but busy
        backend.ensure_model(third)
        assert generate_threads(), "loading must not wait for the running answer"
        assert sorted(backend.pool.loaded()) == sorted([first, third])
        assert any(running)  # and it goes on
    assert not generate_threads()
    backend.close()


def test_a_model_that_does_not_fit_is_refused_and_the_others_keep_answering(checkpoints, size):
    backend = pool(checkpoints, 2.5, size=size)
    first, second, third = checkpoints
    backend.ensure_model(second)
    expected = {model: answer(backend, model=model) for model in (first, second)}
    queued = [backend.stream(QUESTION, GREEDY, model=m) for m in (first, second)]  # both busy
    with pytest.raises(InputError) as refused:
        backend.ensure_model(third)
    message = str(refused.value)
    assert third in message and "memory for models is" in message and "MB" in message
    assert "answering now" in message
    assert backend.pool.loaded() == [first, second]  # nothing was unloaded
    assert ["".join(stream) for stream in queued] == list(expected.values())
    backend.ensure_model(third)  # once they have finished, it fits
    backend.close()


def test_a_budget_of_one_model_swaps_idle_models_and_refuses_while_one_answers(checkpoints, size):
    first, second, _ = checkpoints
    backend = pool(checkpoints, 1.5, size=size)
    with backend.stream(QUESTION, GREEDY, model=first) as queued:
        with pytest.raises(InputError, match="answering now"):
            backend.ensure_model(second)
        assert "".join(queued)
    backend.ensure_model(second)
    assert backend.pool.loaded() == [second]
    backend.close()


def test_a_model_alone_loads_even_beyond_the_budget(checkpoints, size):
    """The budget bounds the models kept together, not one model: with a budget smaller than
    any model (ZeroGPU's default, or a menu model bigger than the default one) the models
    still swap, one at a time, as before the pool."""
    first, second, _ = checkpoints
    backend = pool(checkpoints, 0.5, size=size)
    assert backend.pool.loaded() == [first]
    assert answer(backend, model=second)
    assert backend.pool.loaded() == [second]
    backend.close()


def test_two_sessions_with_different_models_get_their_own_models_answers(checkpoints, size):
    first, second, _ = checkpoints
    direct = {}
    for model in (first, second):  # each model on its own, without any cache
        alone = LocalBackend(model, device="cpu", prefix_cache_gb=0)
        direct[model] = answer(alone)
        alone.close()
    assert direct[first] != direct[second]
    backend = pool(checkpoints, 3, size=size)
    for _ in range(2):  # the sessions take turns
        assert answer(backend, model=first, chat="session-1/image") == direct[first]
        assert answer(backend, model=second, chat="session-2/image") == direct[second]
    assert backend.info.model == first  # the default, for new sessions, stays
    backend.close()


def test_unknown_models_are_refused_by_name(checkpoints, size):
    backend = pool(checkpoints, 3, size=size)
    with pytest.raises(InputError, match="not one of this demo's models"):
        backend.stream(QUESTION, GREEDY, model="someone/else")
    with pytest.raises(InputError, match="not one of this demo's models"):
        backend.ensure_model("someone/else")
    backend.close()


def test_a_closed_backend_is_released(checkpoints, size):
    import gc
    import weakref

    from model_backend.generation import BACKENDS

    backend = pool(checkpoints, 1.5, size=size)
    answer(backend, chat="x")
    gone = weakref.ref(backend)
    backend.close()
    assert id(backend) not in BACKENDS and backend.pool.loaded() == []
    del backend
    gc.collect()
    assert gone() is None
