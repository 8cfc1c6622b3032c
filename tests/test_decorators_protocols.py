"""@traced and Python's protocols: pickling, copying, recursion, coroutines, cancellation, odd callables."""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import gc
import inspect
import multiprocessing
import pickle
import traceback
import types
import warnings
from collections.abc import AsyncIterator, Generator, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

import autotrace
from autotrace import StatusCode, span, traced
from autotrace.context import CURRENT
from autotrace.testing import capture_spans

# -- module-level callables (pickling finds them by module and __qualname__) -------------------


@traced
def square(x: int) -> int:
    """Square a number (a worker process runs it)."""
    return x * x


@traced
async def asquare(x: int) -> int:
    """Square a number, asynchronously."""
    return x * x


@traced
def count_to(n: int) -> Iterator[int]:
    """Yield 0..n-1."""
    yield from range(n)


@traced
async def acount_to(n: int) -> AsyncIterator[int]:
    """Yield 0..n-1, asynchronously."""
    for i in range(n):
        yield i


@traced(capture_args=True, capture_result=True)
def add(a: int, b: int) -> int:
    """Add two numbers, arguments captured."""
    return a + b


class Model:
    """A picklable class with traced methods of every binding."""

    def __init__(self, k: int = 10) -> None:
        self.k = k

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Model) and other.k == self.k

    __hash__ = None  # type: ignore[assignment]

    @traced
    def predict(self, x: int) -> int:
        """Instance method."""
        return x * self.k

    @traced
    async def apredict(self, x: int) -> int:
        """Async instance method."""
        return x * self.k

    @traced
    @classmethod
    def load(cls, name: str) -> str:
        """Class method (traced outside)."""
        return f"{cls.__name__}:{name}"

    @classmethod
    @traced
    def load2(cls, name: str) -> str:
        """Class method (traced inside)."""
        return f"{cls.__name__}:{name}"

    @traced
    @classmethod
    async def aload(cls, name: str) -> str:
        """Async class method."""
        return f"{cls.__name__}:{name}"

    @traced
    @staticmethod
    def norm(x: float) -> float:
        """Static method."""
        return abs(x)


class Holder:
    """An object holding traced callables in attributes."""

    def __init__(self) -> None:
        self.fn = square
        self.afn = asquare
        self.gen = count_to
        self.data = [1, 2]


# -- 5. pickling and copying -----------------------------------------------------------------


def test_traced_functions_pickle_by_reference_as_plain_functions_do() -> None:
    """Every kind of traced module-level function pickles by reference and unpickles as itself."""
    for fn in (square, asquare, count_to, acount_to, add):
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            assert pickle.loads(pickle.dumps(fn, protocol)) is fn
    assert pickle.loads(pickle.dumps(Model.predict)) is Model.predict
    assert pickle.loads(pickle.dumps(Model.norm))(-2.0) == 2.0


def test_traced_methods_pickle_as_bound_methods_do() -> None:
    """Bound traced methods (sync, async, classmethod, staticmethod) pickle and still work, traced."""
    m = Model(3)
    with capture_spans() as spans:
        assert pickle.loads(pickle.dumps(m.predict))(2) == 6
        assert asyncio.run(pickle.loads(pickle.dumps(m.apredict))(2)) == 6
        assert asyncio.run(pickle.loads(pickle.dumps(Model.apredict))(m, 2)) == 6
        assert pickle.loads(pickle.dumps(Model.load))("a") == "Model:a"
        assert pickle.loads(pickle.dumps(m.load2))("b") == "Model:b"
        assert asyncio.run(pickle.loads(pickle.dumps(m.aload))("c")) == "Model:c"
        assert pickle.loads(pickle.dumps(m.norm))(-1.0) == 1.0
    assert spans.names() == [
        "Model.predict",
        "Model.apredict",
        "Model.apredict",
        "Model.load",
        "Model.load2",
        "Model.aload",
        "Model.norm",
    ]


def test_traced_callables_copy_and_deepcopy_to_themselves() -> None:
    """copy.copy and copy.deepcopy of traced callables return them; holders deep-copy around them."""
    m = Model()
    for fn in (square, asquare, count_to, acount_to, add, Model.predict, Model.apredict):
        assert copy.copy(fn) is fn
        assert copy.deepcopy(fn) is fn
    # Traced sync and async functions are plain functions: their bound methods
    # copy as any bound method does (the same function, bound to the same object).
    for bound in (m.predict, m.apredict, Model.load, Model.aload):
        assert copy.copy(bound) == bound
    assert asyncio.run(copy.deepcopy(m.apredict)(1)) == 10
    holder = Holder()
    clone = copy.deepcopy(holder)
    assert clone.fn is square and clone.afn is asquare and clone.gen is count_to
    assert clone.data == holder.data and clone.data is not holder.data
    assert copy.copy(holder).afn is asquare
    assert copy.deepcopy({"model": m, "call": m.predict})["call"](1) == 10


def test_a_spawn_process_pool_maps_a_traced_function() -> None:
    """ProcessPoolExecutor with the spawn start method pickles a traced function to its workers."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert list(pool.map(square, range(5))) == [0, 1, 4, 9, 16]
        assert pool.submit(Model(2).predict, 4).result() == 8


def test_a_traced_partial_or_local_function_fails_to_pickle_clearly() -> None:
    """What pickle cannot find by name fails with pickle's own error, as for a plain function."""

    @traced
    def local() -> None:
        pass

    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(local)
    with pytest.raises((pickle.PicklingError, TypeError)):
        pickle.dumps(traced(functools.partial(asquare.__wrapped__, 2)))


# -- 6. the wrapped function is never changed ---------------------------------------------------


def test_decorating_never_changes_the_function() -> None:
    """@traced writes nothing into the function: no __self__ on it, the traced one, or a wraps copy."""

    def plain(x: int) -> int:
        return x

    async def coro(x: int) -> int:
        return x

    def gen(x: int) -> Iterator[int]:
        yield x

    for fn in (plain, coro, gen):
        fn.tag = "mine"  # type: ignore[attr-defined]
        before = dict(fn.__dict__)
        for options in ({}, {"capture_args": True}, {"name": "x", "attributes": {"a": 1}}):
            decorated = traced(**options)(fn)  # type: ignore[call-overload]
            assert fn.__dict__ == before
            assert not hasattr(fn, "__self__")
            assert not hasattr(decorated, "__self__")
            assert decorated.tag == "mine"

            helper = functools.wraps(decorated)(lambda *args, **kwargs: None)
            assert not hasattr(helper, "__self__")
    assert traced(plain)(3) == 3
    assert asyncio.run(traced(coro)(4)) == 4
    assert list(traced(gen)(5)) == [5]


def test_capture_on_sync_methods_skips_self_and_cls_only() -> None:
    """capture_args on sync methods records the arguments, never self or cls, however called."""

    class Svc:
        @traced(capture_args=True)
        def run(self, q: str) -> int:
            return len(q)

        @classmethod
        @traced(capture_args=True)
        def make(cls, n: int) -> int:
            return n

        @staticmethod
        @traced(capture_args=True)
        def helper(x: int) -> int:
            return x

        @traced(capture_args=True)
        @staticmethod
        def odd(self: int) -> int:  # a static method's first argument is an argument, whatever its name
            return self

    svc = Svc()
    with capture_spans() as spans:
        assert svc.run("ab") == 2
        assert Svc.run(svc, "abc") == 3
        assert Svc.make(4) == 4
        assert svc.helper(5) == 5
        assert Svc.odd(6) == 6
    run1, run2, make, helper, odd = (dict(s.attributes) for s in spans)
    assert run1["code.function.args.q"] == "ab" and run2["code.function.args.q"] == "abc"
    assert make["code.function.args.n"] == 4
    assert helper["code.function.args.x"] == 5
    assert odd["code.function.args.self"] == 6
    assert not any("args.self" in key or "args.cls" in key for key in (*run1, *run2, *make))


# -- 9. recursion ---------------------------------------------------------------------------------


def _deepest(fn: Any) -> int:
    """How deep fn recurses before Python stops it (measured from the same stack as the caller)."""
    return int(fn(0))


def _plain_dive(n: int) -> int:
    try:
        return _plain_dive(n + 1)
    except RecursionError:
        return n


@traced
def _traced_dive(n: int) -> int:
    try:
        return _traced_dive(n + 1)
    except RecursionError:
        return n


@pytest.mark.parametrize("sampled", [True, False])
def test_traced_recursion_costs_one_frame_per_call(sampled: bool) -> None:
    """A traced recursive function reaches half the untraced depth: one extra frame per call."""
    untraced = _deepest(_plain_dive)
    if sampled:
        with capture_spans() as spans:
            depth = _deepest(_traced_dive)
        assert len(spans) >= depth
    else:
        autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))
        with span("unsampled root"):  # children of an unsampled trace take the slower path
            depth = _deepest(_traced_dive)
        assert autotrace.trace_count() == 0
    assert 2 * depth >= untraced - 10, (depth, untraced)


# -- 10. coroutines -------------------------------------------------------------------------------


def _warnings_of(action: Any) -> list[str]:
    """The warnings raised while running action and collecting its garbage."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        action()
        gc.collect()
    return [str(w.message) for w in caught]


def test_closing_or_cancelling_an_unstarted_traced_coroutine_does_not_warn() -> None:
    """close(), throw() and a task cancelled before it started leave no 'never awaited' warning."""

    def close() -> None:
        asquare(2).close()

    def throw() -> None:
        with pytest.raises(asyncio.CancelledError):
            asquare(2).throw(asyncio.CancelledError())

    async def cancel_early() -> None:
        task = asyncio.ensure_future(asquare(2))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def no_time_left() -> None:  # wait_for cancels a task that has not started yet
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asquare(3), 0)

    with capture_spans() as spans:
        assert _warnings_of(close) == []
        assert _warnings_of(throw) == []
        assert _warnings_of(lambda: asyncio.run(cancel_early())) == []
        assert _warnings_of(lambda: asyncio.run(no_time_left())) == []
    assert "asquare" not in spans.names()  # a coroutine that never ran has no span


def test_a_dropped_traced_coroutine_warns_as_the_untraced_one_would() -> None:
    """Never awaited: one warning, Python's own words, naming the user's coroutine."""

    async def job() -> None:
        pass

    plain = _warnings_of(lambda: job())
    assert plain == [f"coroutine '{job.__qualname__}' was never awaited"]
    assert _warnings_of(lambda: traced(job)()) == plain


def test_a_traced_coroutine_driven_by_hand_in_two_contexts() -> None:
    """Suspended in one Context, finished in another: no ValueError, one span, contexts left clean."""

    @traced
    async def two_steps() -> int:
        await asyncio.sleep(0)
        return 7

    first, second = contextvars.copy_context(), contextvars.copy_context()
    with capture_spans() as spans:
        coro = two_steps()
        first.run(coro.send, None)
        with pytest.raises(StopIteration) as stop:
            second.run(coro.send, None)
    assert stop.value.value == 7
    assert spans.names() == [two_steps.__qualname__]
    assert second.run(CURRENT.get) is None
    assert CURRENT.get() is None


def test_an_async_generator_driven_by_hand_in_two_contexts() -> None:
    """An async generator resumed in another Context: no ValueError, its span ends once."""

    @traced
    async def pair() -> AsyncIterator[int]:
        yield 1
        await asyncio.sleep(0)
        yield 2

    first, second = contextvars.copy_context(), contextvars.copy_context()
    with capture_spans() as spans:
        agen = pair()
        with pytest.raises(StopIteration) as got:
            first.run(agen.asend(None).send, None)
        assert got.value.value == 1
        step = agen.asend(None)
        first.run(step.send, None)  # suspended in the sleep, in the first context
        with pytest.raises(StopIteration) as got:
            second.run(step.send, None)
        assert got.value.value == 2
        with pytest.raises(StopIteration):
            second.run(agen.aclose().send, None)
    s = spans.one(pair.__qualname__)
    assert s.attributes["autotrace.stream.items"] == 2
    assert second.run(CURRENT.get) is None and CURRENT.get() is None


@types.coroutine
def _trap(what: str) -> Generator[str, Any, Any]:
    """An await that suspends with ``what`` for its driver and returns what the driver sends back (as trio does)."""
    return (yield what)


def test_an_async_generator_driven_by_hand_gets_what_its_driver_sends_and_throws_at_its_awaits() -> None:
    """Values sent (not None) and exceptions thrown while the body awaits reach that await, its span current."""
    inside: list[object] = []

    @traced
    async def agen() -> AsyncIterator[object]:
        got = await _trap("first")
        inside.append(CURRENT.get())
        yield got
        try:
            await _trap("second")
        except KeyError as exc:
            inside.append(CURRENT.get())
            yield f"handled {exc.args[0]}"
        yield await _trap("third")

    with capture_spans() as spans:
        g = agen()
        step = g.asend(None)
        assert step.send(None) == "first"  # what the body awaits reaches the driver
        assert CURRENT.get() is None
        with pytest.raises(StopIteration) as got:
            step.send(42)
        assert got.value.value == 42
        step = g.asend(None)
        assert step.send(None) == "second"
        with pytest.raises(StopIteration) as got:
            step.throw(KeyError("x"))
        assert got.value.value == "handled x"
        step = g.asend(None)
        assert step.send(None) == "third"
        with pytest.raises(KeyError) as failed:
            step.throw(KeyError("not handled"))
        assert failed.value.args == ("not handled",)
        assert CURRENT.get() is None
    s = spans.one(agen.__qualname__)
    assert [x.span_id for x in inside] == [s.span_id] * 2  # type: ignore[attr-defined]
    assert s.attributes["autotrace.stream.items"] == 2 and s.status.code is StatusCode.ERROR


def test_a_cancelled_task_leaves_status_unset_with_a_cancelled_event() -> None:
    """Cancellation is not an error (as in OpenTelemetry): status UNSET, a 'cancelled' event; span() too."""

    @traced
    async def sleeper() -> None:
        with span("inner"):
            await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.ensure_future(sleeper())
        await asyncio.sleep(0)
        task.cancel("shutting down")
        with pytest.raises(asyncio.CancelledError):
            await task

    with capture_spans() as spans:
        asyncio.run(main())
    for s in (spans.one(sleeper.__qualname__), spans.one("inner")):
        assert s.status.code is StatusCode.UNSET
        assert [e.name for e in s.events] == ["cancelled"]
        assert s.events[0].attributes["exception.message"] == "shutting down"


def test_an_async_generator_left_by_break_under_asyncio_run_ends_closed_early() -> None:
    """`break` out of a traced async generator at the end of asyncio.run(): closed early, not ERROR."""

    async def main() -> None:
        async for _ in acount_to(5):
            break

    with capture_spans() as spans:
        asyncio.run(main())
    s = spans.one(acount_to.__qualname__)
    assert s.attributes["autotrace.stream.closed_early"] is True
    assert s.attributes["autotrace.stream.items"] == 1
    assert s.status.code is StatusCode.UNSET


async def _every_shape(a: Any, /, b: Any, c: Any = [], *args: Any, d: Any, e: Any = 2, **kw: Any) -> Any:  # noqa: B006
    """Every kind of parameter, returned as received."""
    return (a, b, c, args, d, e, kw)


def test_a_traced_coroutine_function_takes_its_arguments_exactly_as_the_function_does() -> None:
    """Positional-only, defaults (the same objects), *args, keyword-only, **kwargs: same binding, same errors."""
    traced_shape = traced(_every_shape)
    assert inspect.iscoroutinefunction(traced_shape)
    assert inspect.signature(traced_shape) == inspect.signature(_every_shape)
    good: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((1, 2), {"d": 3}),
        ((1, 2, 3, 4, 5), {"d": 6, "e": 7, "zz": 8}),
        ((1,), {"b": 2, "d": 3, "a": "into **kw"}),
    ]
    with capture_spans() as spans:
        for args, kwargs in good:
            assert asyncio.run(traced_shape(*args, **kwargs)) == asyncio.run(_every_shape(*args, **kwargs))
    assert len(spans) == 3
    assert asyncio.run(traced_shape(1, 2, d=3))[2] is _every_shape.__defaults__[0]  # type: ignore[index]
    for args, kwargs in [((), {}), ((1, 2), {}), ((1, 2), {"b": 3, "d": 4})]:
        with pytest.raises(TypeError) as plain:
            _every_shape(*args, **kwargs)
        with pytest.raises(TypeError) as got:  # at call time: nothing is awaited here
            traced_shape(*args, **kwargs)
        assert str(got.value) == str(plain.value)


def test_a_coroutine_function_whose_parameters_shadow_builtins_is_traced_in_full() -> None:
    """Parameters named type, len, next, dict, ValueError, BaseException: the wrapper still records every span."""

    async def shadow(type: Any, len: Any, next: Any, dict: Any, ValueError: Any, BaseException: Any) -> int:
        return 6

    traced_shadow = traced(shadow)
    with capture_spans() as spans:  # a processor: the span is filed through finish()
        assert asyncio.run(traced_shadow(1, 2, 3, 4, 5, 6)) == 6
    assert spans.names() == [shadow.__qualname__]
    autotrace.clear_traces()
    with span("root"):  # no processor: filed inline, with the builtins the wrapper uses
        for _ in range(3):
            assert asyncio.run(traced_shadow(*"abcdef")) == 6
    assert [s.name for trace in autotrace.get_trace_store().traces() for s in trace].count(shadow.__qualname__) == 3


def test_a_coroutine_function_with_a_parameter_named_like_our_own_names_is_traced_too() -> None:
    """A parameter name the generated wrapper uses for itself sends the function the generic way: still traced."""

    async def clash(_at_s: int, *, _at_token: int = 1) -> int:
        return _at_s + _at_token

    traced_clash = traced(clash)
    with capture_spans() as spans:
        assert asyncio.run(traced_clash(2)) == 3
    assert spans.names() == [clash.__qualname__]
    with pytest.raises(TypeError):
        traced_clash()


@pytest.mark.parametrize("bad", ["if", "None", "__debug__"])
def test_a_coroutine_function_whose_code_names_a_parameter_like_a_keyword_is_traced_too(bad: str) -> None:
    """A code object made by hand may name a parameter `if` or `__debug__`: decorating works, calls are traced."""

    async def add(a: int, b: int = 1) -> int:
        return a + b

    odd = type(add)(add.__code__.replace(co_varnames=(bad, "b")), add.__globals__, "odd", add.__defaults__)
    traced_odd = traced(odd)  # the generated source would not compile
    with capture_spans() as spans:
        assert asyncio.run(traced_odd(2)) == 3
    assert spans.names() == [odd.__qualname__]


def test_a_traced_generator_based_coroutine_can_still_be_awaited() -> None:
    """`@types.coroutine` generators are awaited: traced, they stay awaitable, give their result, record a span."""

    @traced
    @types.coroutine
    def legacy() -> Generator[None, None, int]:
        yield None  # a bare suspension, as asyncio.sleep(0) makes
        return 5

    async def main() -> Any:
        return await legacy()  # type: ignore[misc]

    with capture_spans() as spans:
        assert asyncio.run(main()) == 5
    assert spans.names() == [legacy.__qualname__]


class _Payload:
    """A request body type, named in a string annotation (this module has `from __future__ import annotations`)."""


async def _takes_payload(item: _Payload) -> _Payload:
    """Return the body it was given."""
    return item


def test_a_traced_coroutine_function_has_the_globals_its_string_annotations_are_resolved_in() -> None:
    """The wrapper's __globals__ are the function's: FastAPI before 0.115 resolves an endpoint's annotations there."""
    traced_payload = traced(_takes_payload)
    assert traced_payload.__globals__ is _takes_payload.__globals__
    annotation = inspect.signature(traced_payload).parameters["item"].annotation
    assert annotation == "_Payload" and traced_payload.__globals__[annotation] is _Payload
    body = _Payload()
    with capture_spans() as spans:
        assert asyncio.run(traced_payload(body)) is body
    assert spans.names() == [_takes_payload.__qualname__]


def test_a_traced_coroutine_in_an_unsampled_trace_leaves_the_context_as_it_found_it() -> None:
    """Unsampled, as a new trace or below an unsampled parent: the body sees one trace, the caller its own context."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))

    @traced
    async def trace_of() -> str:
        await asyncio.sleep(0)
        return autotrace.current_span().trace_id

    async def main() -> None:
        assert await trace_of() != "0" * 32  # a new, unsampled trace of its own
        assert CURRENT.get() is None
        with span("root") as root:
            assert await trace_of() == root.trace_id
            assert autotrace.current_span() is root

    asyncio.run(main())
    assert autotrace.trace_count() == 0


def test_the_traced_coroutine_frame_is_named_after_the_function() -> None:
    """A traceback through a traced coroutine shows the wrapper's frame under the function's name, then the body."""

    @traced
    async def explode() -> None:
        raise ValueError("x")

    with pytest.raises(ValueError) as info:
        asyncio.run(explode())
    frames = traceback.extract_tb(info.value.__traceback__)
    assert [f.name for f in frames[-2:]] == ["explode", "explode"]
    assert frames[-2].filename == "<autotrace @traced>"


# -- 17. classes and partials --------------------------------------------------------------------


def test_traced_on_a_class_is_a_clear_type_error() -> None:
    """@traced on a class raises TypeError naming the class and what to decorate instead."""
    with pytest.raises(TypeError, match=r"class Model\b.*methods"):
        traced(Model)
    with pytest.raises(TypeError, match="class Holder"):
        traced("name")(Holder)


def test_partials_and_callable_objects_get_readable_span_names() -> None:
    """A partial is named after its function, a callable object after its class: no memory address."""

    class Scorer:
        def __call__(self, x: int) -> int:
            return x + 1

    def power(base: int, exp: int) -> int:
        return int(base**exp)

    sq = traced(functools.partial(power, exp=2))
    scorer = traced(Scorer())
    with capture_spans() as spans:
        assert sq(3) == 9
        assert scorer(1) == 2
    assert spans.names() == [power.__qualname__, Scorer.__qualname__]
    assert all("0x" not in name for name in spans.names())
    assert spans[0].attributes["code.function.name"].endswith(power.__qualname__)
