"""@traced on every kind of callable: behaviour preserved, spans recorded, errors passed through."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import decimal
import inspect
import threading
import traceback
from collections.abc import AsyncIterator, Iterator

import pytest

import autotrace
from autotrace import SpanKind, StatusCode, span, traced
from autotrace.context import CURRENT
from autotrace.testing import capture_spans


@traced
def add(a: int, b: int = 2) -> int:
    """Add two numbers."""
    return a + b


@traced("generate", kind="server", attributes={"gen_ai.request.model": "tiny-llm"})
async def generate(prompt: str, max_tokens: int = 128) -> str:
    """Generate text."""
    await asyncio.sleep(0)
    return prompt.upper()


@traced
def stream(n: int) -> Iterator[int]:
    """Yield n numbers."""
    yield from range(n)


@traced(name="astream")
async def astream(n: int) -> AsyncIterator[int]:
    """Yield n numbers asynchronously."""
    for i in range(n):
        await asyncio.sleep(0)
        yield i


class Model:
    """A class with traced methods of every binding."""

    def __init__(self) -> None:
        self.calls = 0

    @traced
    def predict(self, x: int) -> int:
        """Instance method."""
        self.calls += 1
        return x * 10

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
    @staticmethod
    def norm(x: float) -> float:
        """Static method."""
        return abs(x)

    @traced
    async def apredict(self, x: int) -> int:
        """Async method."""
        return x + 1


def test_sync_function_keeps_signature_doc_and_result() -> None:
    """Name, docstring, signature and return value are those of the function."""
    assert add.__name__ == "add" and add.__doc__ == "Add two numbers."
    assert inspect.signature(add) == inspect.signature(add.__wrapped__)
    assert list(inspect.signature(add).parameters) == ["a", "b"]
    with capture_spans() as spans:
        assert add(1) == 3
        assert add(1, b=5) == 6
    assert spans.names() == ["add", "add"]


def test_inspect_kinds_preserved() -> None:
    """inspect sees coroutine, generator and async-generator functions as such."""
    assert inspect.iscoroutinefunction(generate)
    assert inspect.isgeneratorfunction(stream)
    assert inspect.isasyncgenfunction(astream)
    assert not inspect.iscoroutinefunction(add)
    assert inspect.iscoroutinefunction(Model().apredict)


def test_bad_arguments_still_raise_type_error_at_call() -> None:
    """Calling with wrong arguments raises TypeError immediately, as without the decorator."""
    with pytest.raises(TypeError):
        add()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        generate()  # type: ignore[call-arg]


def test_span_name_kind_and_static_attributes() -> None:
    """@traced("name", kind=..., attributes=...) sets those on the span, plus code.* identity."""
    with capture_spans() as spans:
        assert asyncio.run(generate("hi")) == "HI"
    s = spans.one("generate")
    assert s.kind is SpanKind.SERVER
    assert s.attributes["gen_ai.request.model"] == "tiny-llm"
    assert s.attributes["code.function.name"].endswith("test_decorators.generate")
    assert s.attributes["code.file.path"].endswith("test_decorators.py")
    assert isinstance(s.attributes["code.line.number"], int)


def test_default_name_is_qualname() -> None:
    """The span is named after __qualname__ by default."""
    with capture_spans() as spans:
        Model().predict(1)
    assert spans.names() == ["Model.predict"]


def test_methods_classmethods_staticmethods() -> None:
    """All bindings work, via instance and via class, and record one span per call."""
    m = Model()
    with capture_spans() as spans:
        assert m.predict(2) == 20
        assert Model.predict(m, 3) == 30
        assert Model.load("a") == "Model:a"
        assert m.load("b") == "Model:b"
        assert Model.load2("c") == "Model:c"
        assert Model.norm(-2.0) == 2.0
        assert m.norm(-3.0) == 3.0
        assert asyncio.run(m.apredict(1)) == 2
    assert m.calls == 2
    assert spans.names() == [
        "Model.predict",
        "Model.predict",
        "Model.load",
        "Model.load",
        "Model.load2",
        "Model.norm",
        "Model.norm",
        "Model.apredict",
    ]


def test_decorator_forms() -> None:
    """Bare, positional name, name= keyword and keywords-only forms all work."""

    @traced()
    def a() -> int:
        return 1

    @traced(name="named")
    def b() -> int:
        return 2

    @traced("positional", kind=SpanKind.CLIENT)
    def c() -> int:
        return 3

    with capture_spans() as spans:
        assert (a(), b(), c()) == (1, 2, 3)
    assert spans.names() == [a.__qualname__, "named", "positional"]
    assert spans[2].kind is SpanKind.CLIENT


def test_bad_decorator_arguments_fail_at_decoration() -> None:
    """A bad kind or a non-callable fails when decorating, with a clear message."""
    with pytest.raises(ValueError, match="kind"):
        traced(kind="nope")
    with pytest.raises(TypeError, match="function"):
        traced(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="name twice"):
        traced("a", name="b")  # type: ignore[call-overload]


def test_exception_identity_and_traceback() -> None:
    """The very same exception object propagates, with its original frames, and is recorded."""
    original = ValueError("boom")

    @traced
    def fail() -> None:
        raise original

    with capture_spans() as spans:
        with pytest.raises(ValueError) as info:
            fail()
    assert info.value is original
    frames = [f.name for f in traceback.extract_tb(original.__traceback__)]
    assert frames[-1] == "fail"
    assert original.__context__ is None and original.__cause__ is None
    s = spans.one(fail.__qualname__)
    assert s.status.code is StatusCode.ERROR
    assert s.status.description == "ValueError: boom"
    (event,) = s.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "boom"
    assert "raise original" in event.attributes["exception.stacktrace"]


def test_async_exception_identity() -> None:
    """An exception from a coroutine is the same object and marks the span ERROR."""
    original = KeyError("k")

    @traced
    async def fail() -> None:
        await asyncio.sleep(0)
        raise original

    with capture_spans() as spans, pytest.raises(KeyError) as info:
        asyncio.run(fail())
    assert info.value is original
    assert spans[0].status.code is StatusCode.ERROR


def test_custom_exception_type_is_qualified() -> None:
    """exception.type names the module and class of non-builtin exceptions."""

    class ModelError(Exception):
        pass

    @traced
    def fail() -> None:
        raise ModelError("x")

    with capture_spans() as spans, pytest.raises(ModelError):
        fail()
    attrs = spans[0].events[0].attributes
    assert attrs["exception.type"].endswith("test_custom_exception_type_is_qualified.<locals>.ModelError")
    assert attrs["exception.type"].startswith("tests.test_decorators.") or attrs["exception.type"].startswith(
        "test_decorators."
    )


def test_nesting_parent_child_ids() -> None:
    """Nested traced calls and spans are children of the current span, in one trace."""

    @traced
    def inner() -> None:
        with span("leaf"):
            pass

    @traced
    def outer() -> None:
        inner()
        inner()

    with capture_spans() as spans:
        outer()
    by_name = {s.name: s for s in spans}
    root = by_name[outer.__qualname__]
    assert root.parent_span_id is None
    inners = spans.by_name(inner.__qualname__)
    leaves = spans.by_name("leaf")
    assert len(inners) == 2 and len(leaves) == 2
    assert {s.trace_id for s in spans} == {root.trace_id}
    assert all(i.parent_span_id == root.span_id for i in inners)
    assert {leaf.parent_span_id for leaf in leaves} == {i.span_id for i in inners}


def test_generator_span_covers_stream_and_counts_items() -> None:
    """A generator's span ends when exhausted and records item count and time to first item."""
    with capture_spans() as spans:
        gen = stream(4)
        assert spans.names() == []  # nothing ends before the stream does
        assert list(gen) == [0, 1, 2, 3]
    s = spans.one(stream.__qualname__)
    assert s.attributes["autotrace.stream.items"] == 4
    assert s.attributes["autotrace.stream.time_to_first_item_s"] >= 0
    assert not [k for k in s.attributes if k.startswith("gen_ai.")]  # a generator is not a model call
    assert "autotrace.stream.closed_early" not in s.attributes
    assert s.status.code is StatusCode.UNSET


def test_generator_closed_early() -> None:
    """Closing a generator early ends its span, marked closed early, not an error."""
    closed = []

    @traced
    def numbers() -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            closed.append(True)

    with capture_spans() as spans:
        gen = numbers()
        assert next(gen) == 0 and next(gen) == 1
        gen.close()
    assert closed == [True]
    s = spans[0]
    assert s.attributes["autotrace.stream.items"] == 2
    assert s.attributes["autotrace.stream.closed_early"] is True
    assert s.status.code is StatusCode.UNSET


def test_generator_failing() -> None:
    """An exception inside a generator propagates unchanged and marks its span ERROR."""
    original = RuntimeError("mid-stream")

    @traced
    def broken() -> Iterator[int]:
        yield 1
        raise original

    with capture_spans() as spans:
        gen = broken()
        assert next(gen) == 1
        with pytest.raises(RuntimeError) as info:
            next(gen)
    assert info.value is original
    assert spans[0].status.code is StatusCode.ERROR
    assert spans[0].attributes["autotrace.stream.items"] == 1


def test_generator_send_throw_and_return_value() -> None:
    """send() and throw() reach the generator; its return value reaches yield from."""

    @traced
    def echo() -> Iterator[int]:
        total = 0
        while True:
            try:
                got = yield total
            except KeyError:
                total = -1
                continue
            if got is None:
                return total
            total += got

    def outer() -> Iterator[int]:
        result = yield from echo()
        yield result * 100

    gen = echo()
    assert next(gen) == 0
    assert gen.send(5) == 5
    assert gen.throw(KeyError("x")) == -1
    assert gen.send(3) == 2
    with pytest.raises(StopIteration) as stop:
        gen.send(None)
    assert stop.value.value == 2
    o = outer()
    assert next(o) == 0
    assert o.send(4) == 4
    assert o.send(None) == 400


def test_generator_context_swap() -> None:
    """Inside the generator its span is current; between items the consumer sees its own."""
    seen_inside = []

    @traced
    def gen() -> Iterator[int]:
        for i in range(2):
            seen_inside.append(autotrace.current_span().span_id)
            with span("child"):
                pass
            yield i

    with capture_spans() as spans:
        with span("consumer") as consumer:
            g = gen()
            for _ in g:
                assert autotrace.current_span() is consumer
    gen_span = spans.one(gen.__qualname__)
    assert seen_inside == [gen_span.span_id, gen_span.span_id]
    assert gen_span.parent_span_id == consumer.span_id
    assert all(c.parent_span_id == gen_span.span_id for c in spans.by_name("child"))


def test_async_generator_span_and_context() -> None:
    """Async generators: span over the stream, children inside, consumer context outside."""

    @traced
    async def agen() -> AsyncIterator[int]:
        for i in range(3):
            with span("piece"):
                await asyncio.sleep(0)
            yield i

    async def main() -> list[int]:
        out = []
        with span("consumer") as consumer:
            async for x in agen():
                assert autotrace.current_span() is consumer
                out.append(x)
        return out

    with capture_spans() as spans:
        assert asyncio.run(main()) == [0, 1, 2]
    s = spans.one(agen.__qualname__)
    assert s.attributes["autotrace.stream.items"] == 3
    assert all(p.parent_span_id == s.span_id for p in spans.by_name("piece"))


def test_async_generator_closed_early_and_failing() -> None:
    """aclose() ends the span as closed early; an exception marks it ERROR and propagates."""
    original = ValueError("bad")

    @traced
    async def failing() -> AsyncIterator[int]:
        yield 1
        raise original

    async def main() -> None:
        g = astream(10)
        assert await g.__anext__() == 0
        await g.aclose()
        f = failing()
        assert await f.__anext__() == 1
        with pytest.raises(ValueError) as info:
            await f.__anext__()
        assert info.value is original

    with capture_spans() as spans:
        asyncio.run(main())
    assert spans.one("astream").attributes["autotrace.stream.closed_early"] is True
    assert spans.one(failing.__qualname__).status.code is StatusCode.ERROR


def test_gather_100_tasks_each_with_children() -> None:
    """asyncio.gather of 100 tasks: each task's spans nest under the right parent."""

    @traced
    async def step(i: int) -> int:
        await asyncio.sleep(0)
        return i

    @traced
    async def handle(i: int) -> int:
        with span("prep") as s:
            s.set_attribute("i", i)
            await asyncio.sleep(0)
        return await step(i) + await step(i)

    @traced
    async def serve() -> list[int]:
        return await asyncio.gather(*(handle(i) for i in range(100)))

    with capture_spans() as spans:
        assert asyncio.run(serve()) == [2 * i for i in range(100)]
    root = spans.one(serve.__qualname__)
    handles = spans.by_name(handle.__qualname__)
    assert len(handles) == 100
    assert all(h.parent_span_id == root.span_id for h in handles)
    handle_ids = {h.span_id for h in handles}
    for name, per_handle in (("prep", 1), (step.__qualname__, 2)):
        children = spans.by_name(name)
        assert len(children) == 100 * per_handle
        assert {c.parent_span_id for c in children} == handle_ids
    assert {s.trace_id for s in spans} == {root.trace_id}
    preps = {s.parent_span_id: s.attributes["i"] for s in spans.by_name("prep")}
    assert sorted(preps.values()) == list(range(100))


def test_capture_args_and_result_redacted_and_truncated() -> None:
    """capture_args/capture_result record arguments and result, secrets redacted, long values cut."""

    @traced(capture_args=True, capture_result=True)
    def call(prompt: str, api_key: str, n: int = 1) -> str:
        return "x" * 5000

    with capture_spans() as spans:
        assert call("hello", "sk-123", n=3) == "x" * 5000
    attrs = spans[0].attributes
    assert attrs["code.function.args.prompt"] == "hello"
    assert attrs["code.function.args.api_key"] == "[REDACTED]"
    assert attrs["code.function.args.n"] == 3
    assert len(attrs["code.function.result"]) <= 1001
    assert "sk-123" not in repr(dict(attrs))


def test_capture_on_async_and_methods_skips_self() -> None:
    """Capture works on coroutines and does not record self."""

    class Svc:
        @traced(capture_args=True, capture_result=True)
        async def run(self, q: str) -> int:
            return len(q)

    with capture_spans() as spans:
        assert asyncio.run(Svc().run("abc")) == 3
    attrs = spans[0].attributes
    assert attrs["code.function.args.q"] == "abc" and attrs["code.function.result"] == 3
    assert "code.function.args.self" not in attrs


def test_return_values_untouched() -> None:
    """Return values are passed through as the same objects."""
    sentinel = object()

    @traced
    def give() -> object:
        return sentinel

    @traced
    async def agive() -> object:
        return sentinel

    assert give() is sentinel
    assert asyncio.run(agive()) is sentinel


def test_a_span_left_open_across_a_yield_stays_the_parent_inside_the_generator() -> None:
    """`with span("inner"): yield ...` in a generator: after the resume, new spans are inner's children."""
    seen = []

    @traced
    def gen() -> Iterator[int]:
        with span("inner"):
            yield 1
            seen.append(autotrace.current_span().name)
            with span("grandchild"):
                pass
            yield 2
        with span("after"):
            pass
        yield 3

    with capture_spans() as spans:
        with span("consumer") as consumer:
            for _ in gen():
                assert autotrace.current_span() is consumer
    g, inner = spans.one(gen.__qualname__), spans.one("inner")
    assert seen == ["inner"]
    assert inner.parent_span_id == g.span_id
    assert spans.one("grandchild").parent_span_id == inner.span_id
    assert spans.one("after").parent_span_id == g.span_id
    assert g.parent_span_id == consumer.span_id


def test_an_async_generator_keeps_a_span_open_across_awaits_and_yields() -> None:
    """The async form: a span open across yields parents what the body starts after each resume."""

    @traced
    async def agen() -> AsyncIterator[int]:
        with span("inner"):
            for i in range(3):
                yield i
                with span("piece"):
                    await asyncio.sleep(0)

    async def main() -> None:
        with span("consumer") as consumer:
            async for _ in agen():
                assert autotrace.current_span() is consumer

    with capture_spans() as spans:
        asyncio.run(main())
    inner = spans.one("inner")
    assert inner.parent_span_id == spans.one(agen.__qualname__).span_id
    assert [p.parent_span_id for p in spans.by_name("piece")] == [inner.span_id] * 3


def test_a_generator_resumed_from_another_thread_keeps_its_nesting() -> None:
    """Consumed half here, half in another thread (another context): spans still nest, nothing raises."""

    @traced
    def gen() -> Iterator[int]:
        with span("inner"):
            yield 1
            with span("late"):
                pass
            yield 2
        with span("after"):
            pass
        yield 3

    with capture_spans() as spans:
        with span("consumer") as consumer:
            g = gen()
            assert next(g) == 1
            rest: list[int] = []
            t = threading.Thread(target=lambda: rest.extend(g))
            t.start()
            t.join()
            assert rest == [2, 3]
            assert autotrace.current_span() is consumer
    gspan, inner = spans.one(gen.__qualname__), spans.one("inner")
    assert spans.one("late").parent_span_id == inner.span_id
    assert spans.one("after").parent_span_id == gspan.span_id


_REQUEST = contextvars.ContextVar("request", default="none")


def test_a_generator_body_sees_its_creators_context_and_its_writes_reach_the_consumer() -> None:
    """The body runs in a copy of its creator's context; what it sets is set for the consumer too, as untraced."""
    seen = []

    @traced
    def gen() -> Iterator[int]:
        seen.append(_REQUEST.get())
        _REQUEST.set("inside")
        yield 1
        seen.append(_REQUEST.get())
        yield 2

    _REQUEST.set("created")
    try:
        g = gen()
        _REQUEST.set("consumer")
        assert next(g) == 1
        assert _REQUEST.get() == "inside"  # the body's write, seen while it is suspended
        _REQUEST.set("consumer again")
        assert next(g) == 2
        assert _REQUEST.get() == "consumer again"  # written by the consumer after the body's: kept
    finally:
        _REQUEST.set("none")
    assert seen == ["created", "inside"]  # a write of the consumer after creating it is not seen inside


_TENANT: contextvars.ContextVar[str] = contextvars.ContextVar("tenant")  # no default: unset is LookupError


@contextlib.contextmanager
@traced
def _as_tenant(name: str) -> Iterator[str]:
    """The common context manager over a traced generator: a ContextVar set for the `with` block."""
    token = _TENANT.set(name)
    try:
        with span("tenant.scope"):
            yield name
    finally:
        _TENANT.reset(token)


def test_a_contextmanager_over_a_traced_generator_sets_its_context_variables_for_the_with_block() -> None:
    """`@contextmanager @traced`: the `with` block sees what the generator set; unset again after it."""
    before = set(contextvars.copy_context())
    with capture_spans() as spans:
        with _as_tenant("acme") as name:
            assert name == _TENANT.get() == "acme"
            with _as_tenant("nested"):
                assert _TENANT.get() == "nested"
            assert _TENANT.get() == "acme"
            with span("in the block") as block:
                assert autotrace.current_span() is block  # the generator's own span stays inside it
        assert _TENANT.get("unset") == "unset"
        with pytest.raises(KeyError), _as_tenant("failing"):
            assert _TENANT.get() == "failing"
            raise KeyError("x")
        assert _TENANT.get("unset") == "unset"
        assert set(contextvars.copy_context()) == before  # nothing of the streams' left in the consumer's context
    assert spans.one("in the block").parent_span_id is None
    assert spans.names().count("tenant.scope") == 3
    assert autotrace.tracer.errors() == {}


def test_a_context_variable_a_generator_sets_between_items_reaches_the_consumer_at_that_item() -> None:
    """A write in the middle of a stream is seen from the item after it on; `decimal.localcontext()` works too."""

    @traced
    def precise() -> Iterator[str]:
        yield str(decimal.Decimal(1) / decimal.Decimal(7))
        with decimal.localcontext() as local:
            local.prec = 3
            yield str(decimal.Decimal(1) / decimal.Decimal(7))
        yield str(decimal.Decimal(1) / decimal.Decimal(7))

    seen = []
    for item in precise():
        seen.append((item, str(decimal.Decimal(1) / decimal.Decimal(7))))
    assert seen[0][0] == seen[0][1] == seen[2][0] == seen[2][1]
    assert seen[1] == ("0.143", "0.143")


@traced
def _scoped_stream() -> Iterator[int]:
    """A stream that sets the tenant for its consumer while it runs, and restores it in its `finally`."""
    token = _TENANT.set("stream")
    try:
        yield 1
        yield 2
    finally:
        _TENANT.reset(token)


def test_a_generator_left_by_break_restores_the_consumers_context_variables() -> None:
    """`break` closes it in the consumer's context: its `finally` restores the consumer's value there."""

    def consume() -> list[str]:
        _TENANT.set("consumer")
        seen = []
        for _ in _scoped_stream():
            seen.append(_TENANT.get())
            break
        seen.append(_TENANT.get())
        return seen

    assert contextvars.copy_context().run(consume) == ["stream", "consumer"]


def test_a_generator_closed_from_another_context_writes_nothing_there() -> None:
    """Closed (as a garbage collection might) in another request's context: that context keeps its own values."""

    def first_request() -> Iterator[int]:
        _TENANT.set("request A")
        g = _scoped_stream()
        assert next(g) == 1 and _TENANT.get() == "stream"
        return g

    g = contextvars.copy_context().run(first_request)

    def second_request() -> str:
        _TENANT.set("request B")
        g.close()
        return _TENANT.get()

    assert contextvars.copy_context().run(second_request) == "request B"
    assert autotrace.tracer.errors() == {}


def test_a_variable_set_by_a_traced_generator_inside_another_reaches_the_outer_consumer() -> None:
    """`yield from` a traced generator inside a traced one: the inner write is seen outside both, then undone."""

    @traced
    def outer() -> Iterator[object]:
        yield from _scoped_stream()
        yield _TENANT.get("unset")

    def consume() -> list[object]:
        before = set(contextvars.copy_context())
        seen: list[object] = []
        for item in outer():
            seen.append((item, _TENANT.get("unset")))
        return [*seen, set(contextvars.copy_context()) == before]

    assert contextvars.copy_context().run(consume) == [(1, "stream"), (2, "stream"), ("unset", "unset"), True]


def test_a_generator_resumed_in_another_thread_writes_its_variables_there_without_failing() -> None:
    """Each resume writes where it runs; an unset whose first write was in another thread is left, never raised."""

    @traced
    def scoped() -> Iterator[int]:
        token = _TENANT.set("t")
        yield 1
        _TENANT.reset(token)
        yield 2

    def consume() -> None:
        g = scoped()
        assert next(g) == 1 and _TENANT.get() == "t"
        t = threading.Thread(target=lambda: got.extend([next(g), _TENANT.get("unset")]))
        t.start()
        t.join()
        g.close()

    got: list[object] = []
    contextvars.copy_context().run(consume)  # this test's writes stay in a copy
    assert got == [2, "unset"]
    assert autotrace.tracer.errors() == {}


def test_a_generator_in_an_unsampled_trace_keeps_that_trace_inside_and_the_consumer_context_outside() -> None:
    """Unsampled: every resume sees the trace it was created in; the consumer's context is untouched."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))

    @traced
    def ids() -> Iterator[str]:
        for _ in range(3):
            with span("child"):
                yield autotrace.current_span().trace_id

    with span("root") as root:
        got = []
        for trace_id in ids():
            got.append(trace_id)
            assert autotrace.current_span() is root
    assert got == [root.trace_id] * 3 and not root.is_sampled
    assert autotrace.trace_count() == 0


def test_thrown_in_items_are_counted_and_gaps_measured() -> None:
    """An exception thrown in that the body handles by yielding again counts as an item; figures are written."""

    @traced
    def tolerant() -> Iterator[str]:
        while True:
            try:
                yield "ok"
            except KeyError:
                yield "recovered"
                return

    with capture_spans() as spans:
        g = tolerant()
        assert next(g) == "ok"
        assert g.throw(KeyError("x")) == "recovered"
        assert list(g) == []
    attrs = spans.one(tolerant.__qualname__).attributes
    assert attrs["autotrace.stream.items"] == 2
    assert attrs["autotrace.stream.max_gap_s"] >= 0
    assert "autotrace.stream.closed_early" not in attrs


def test_a_generator_resuming_itself_raises_as_an_untraced_one_does() -> None:
    """next(g) from inside g's own body is Python's 'generator already executing' ValueError, traced or not."""

    def body(me: list[Iterator[int]]) -> Iterator[int]:
        yield next(me[0])

    for fn in (body, traced(body)):
        me: list[Iterator[int]] = []
        me.append(fn(me))
        with pytest.raises(ValueError, match="already executing"):
            next(me[0])


def test_stream_figures_respect_the_attribute_limit_and_the_body_own_writes() -> None:
    """The figures go through the attribute limit (dropped and counted past it) and join attributes the body set."""

    @traced
    def writes() -> Iterator[int]:
        autotrace.current_span().set_attribute("mine", 1)
        yield 1
        yield 2

    @traced
    def plain() -> Iterator[int]:
        yield 1

    with capture_spans() as spans:
        assert list(writes()) == [1, 2]
    attrs = spans.one(writes.__qualname__).attributes
    assert attrs["mine"] == 1 and attrs["autotrace.stream.items"] == 2
    assert attrs["autotrace.stream.time_to_first_item_s"] >= 0 and attrs["autotrace.stream.max_gap_s"] >= 0

    autotrace.configure(autotrace.TraceConfig(sample_rate=1.0, max_attributes=4))  # code.* takes 3
    with capture_spans() as spans:
        assert list(plain()) == [1]
    s = spans.one(plain.__qualname__)
    assert list(s.attributes)[3:] == ["autotrace.stream.time_to_first_item_s"]
    assert s.dropped_attributes_count == 1  # autotrace.stream.items


def test_an_exception_thrown_into_an_async_generator_reaches_its_body() -> None:
    """athrow(): handled by the body it yields on (counted); not handled, the same object leaves, span ERROR."""
    original = KeyError("stop")

    @traced
    async def tolerant() -> AsyncIterator[str]:
        try:
            yield "ok"
        except KeyError:
            yield "recovered"

    @traced
    async def strict() -> AsyncIterator[str]:
        yield "ok"

    async def main() -> None:
        g = tolerant()
        assert await g.__anext__() == "ok"
        assert await g.athrow(KeyError("x")) == "recovered"
        with pytest.raises(StopAsyncIteration):
            await g.__anext__()
        h = strict()
        assert await h.__anext__() == "ok"
        with pytest.raises(KeyError) as info:
            await h.athrow(original)
        assert info.value is original

    with capture_spans() as spans:
        asyncio.run(main())
    assert spans.one(tolerant.__qualname__).attributes["autotrace.stream.items"] == 2
    s = spans.one(strict.__qualname__)
    assert s.status.code is StatusCode.ERROR and s.attributes["autotrace.stream.items"] == 1


# -- async generators: the body in a Context of its own, as a sync generator's -----------------


def test_an_async_generator_body_sees_its_creators_context_and_its_writes_reach_the_consumer() -> None:
    """As a sync generator's: the body runs in a copy of its creator's context; its writes reach the consumer."""
    seen = []

    @traced
    async def agen() -> AsyncIterator[int]:
        seen.append(_REQUEST.get())
        _REQUEST.set("inside")
        yield 1
        seen.append(_REQUEST.get())
        yield 2

    async def main() -> list[str]:
        _REQUEST.set("created")
        g = agen()
        _REQUEST.set("consumer")
        got = [str(await g.__anext__()), _REQUEST.get()]  # the body's write, seen while it is suspended
        _REQUEST.set("consumer again")
        got += [str(await g.__anext__()), _REQUEST.get()]  # written by the consumer after the body's: kept
        return got

    assert asyncio.run(main()) == ["1", "inside", "2", "consumer again"]
    assert seen == ["created", "inside"]  # a write of the consumer after creating it is not seen inside


@contextlib.asynccontextmanager
@traced
async def _as_tenant_async(name: str) -> AsyncIterator[str]:
    """The async form of _as_tenant: a ContextVar set for the `async with` block, across an await."""
    token = _TENANT.set(name)
    try:
        await asyncio.sleep(0)
        with span("tenant.scope"):
            yield name
    finally:
        await asyncio.sleep(0)
        _TENANT.reset(token)


def test_an_asynccontextmanager_over_a_traced_async_generator_sets_its_context_variables_for_the_block() -> None:
    """`@asynccontextmanager @traced`: the block sees what the body set, not its span; unset again after it."""

    async def main() -> None:
        before = set(contextvars.copy_context())
        async with _as_tenant_async("acme") as name:
            assert name == _TENANT.get() == "acme"
            async with _as_tenant_async("nested"):
                assert _TENANT.get() == "nested"
            assert _TENANT.get() == "acme"
            with span("in the block") as block:
                assert autotrace.current_span() is block
        assert _TENANT.get("unset") == "unset"
        with pytest.raises(KeyError):
            async with _as_tenant_async("failing"):
                assert _TENANT.get() == "failing"
                raise KeyError("x")
        assert _TENANT.get("unset") == "unset"
        assert set(contextvars.copy_context()) == before  # nothing of the streams' left in the consumer's context

    with capture_spans() as spans:
        asyncio.run(main())
    assert spans.one("in the block").parent_span_id is None
    assert spans.names().count("tenant.scope") == 3
    assert all(s.parent_span_id is not None for s in spans.by_name("tenant.scope"))
    assert autotrace.tracer.errors() == {}


def test_an_async_generator_closed_by_aclosing_restores_the_consumers_context_variables() -> None:
    """`aclosing()` + `break`: its aclose() runs in the consumer's context, where its `finally` restores the value."""

    @traced
    async def scoped() -> AsyncIterator[int]:
        token = _TENANT.set("stream")
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)  # the close awaits: relayed to the task like any other await
            _TENANT.reset(token)

    async def main() -> list[str]:
        _TENANT.set("consumer")
        seen = []
        async with contextlib.aclosing(scoped()) as g:
            async for _ in g:
                seen.append(_TENANT.get())
                break
        seen.append(_TENANT.get())
        return seen

    with capture_spans() as spans:
        assert asyncio.run(main()) == ["stream", "consumer"]
    s = spans.one("test_an_async_generator_closed_by_aclosing_restores_the_consumers_context_variables.<locals>.scoped")
    assert s.attributes["autotrace.stream.closed_early"] is True and s.attributes["autotrace.stream.items"] == 1
    assert autotrace.tracer.errors() == {}


def test_an_async_generator_body_awaiting_real_io_keeps_its_span_and_the_consumers_context_clean() -> None:
    """Awaits that suspend the task (a timer, a future another task resolves): the span is current inside after each."""
    inside: list[object] = []
    outside: list[object] = []

    @traced
    async def agen(ready: asyncio.Future[int]) -> AsyncIterator[int]:
        await asyncio.sleep(0.001)
        inside.append(autotrace.current_span())
        yield 1
        value = await ready
        inside.append(autotrace.current_span())
        with span("after the future"):
            await asyncio.sleep(0.001)
        yield value

    async def watcher(stop: asyncio.Event) -> None:
        while not stop.is_set():  # runs while the stream's body waits: never sees the stream's span
            outside.append(CURRENT.get())
            await asyncio.sleep(0)

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[int] = loop.create_future()
        loop.call_later(0.005, ready.set_result, 2)
        stop = asyncio.Event()
        task = asyncio.ensure_future(watcher(stop))
        with span("consumer") as consumer:
            got = []
            async for x in agen(ready):
                assert autotrace.current_span() is consumer
                got.append(x)
        stop.set()
        await task
        return got

    with capture_spans() as spans:
        assert asyncio.run(main()) == [1, 2]
    s = spans.one(
        "test_an_async_generator_body_awaiting_real_io_keeps_its_span_and_the_consumers_context_clean.<locals>.agen"
    )
    assert [x.span_id for x in inside] == [s.span_id, s.span_id]  # type: ignore[attr-defined]
    assert outside and all(x is None for x in outside)
    assert spans.one("after the future").parent_span_id == s.span_id
    assert s.attributes["autotrace.stream.items"] == 2


def test_a_consumer_cancelled_while_the_async_generator_body_awaits_cancels_the_body_there() -> None:
    """The CancelledError reaches the body at its await, its span current; the stream ends closed early, UNSET."""
    cleanup: list[str] = []
    waiting = asyncio.Event()

    @traced
    async def agen() -> AsyncIterator[int]:
        try:
            yield 1
            with span("waiting"):
                waiting.set()
                await asyncio.Event().wait()  # forever
            yield 2
        finally:
            cleanup.append(autotrace.current_span().name)

    async def main() -> None:
        async def consume() -> None:
            async for _ in agen():
                pass

        task = asyncio.ensure_future(consume())
        await waiting.wait()
        task.cancel("shutting down")
        with pytest.raises(asyncio.CancelledError):
            await task

    with capture_spans() as spans:
        asyncio.run(main())
    name = "test_a_consumer_cancelled_while_the_async_generator_body_awaits_cancels_the_body_there.<locals>.agen"
    assert cleanup == [name]
    s = spans.one(name)
    assert s.attributes["autotrace.stream.closed_early"] is True and s.attributes["autotrace.stream.items"] == 1
    for x in (s, spans.one("waiting")):
        assert x.status.code is StatusCode.UNSET
        assert [e.name for e in x.events] == ["cancelled"]
    assert autotrace.tracer.errors() == {}
