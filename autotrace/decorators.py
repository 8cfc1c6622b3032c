"""``@traced``: one of four wrappers, chosen when decorating, never per call.

Sync functions, coroutine functions, generators and async generators each get
a wrapper of their own, built on ``wrapt.FunctionWrapper`` so that signature,
docstring, ``inspect`` kind and descriptor binding (methods, classmethods,
staticmethods) are wrapt's job and stay exactly as they were.
"""

from __future__ import annotations

import functools
import inspect
import os
import random
import time
import types
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import Any, TypeVar, overload

import wrapt

from . import attributes as _attributes
from .attributes import SharedAttrs
from .attributes import freeze as _freeze
from .context import CURRENT
from .spans import _UNSET_STATUS, Span, SpanKind
from .tracer import _S, _finish, internal_error, start

__all__ = ["traced"]

F = TypeVar("F", bound=Callable[..., Any])

_cv_get = CURRENT.get
_cv_set = CURRENT.set
_cv_reset = CURRENT.reset

_new = object.__new__
_getrandbits = random.getrandbits
_MASK64 = (1 << 64) - 1
_time_ns = time.time_ns
_perf_counter = time.perf_counter


def _fail(s: Span, exc: BaseException) -> None:
    """Record an exception leaving a span; never raises."""
    try:
        s._fail(exc)
    except Exception as error:
        internal_error("recording an exception", error)


# -- sync ---------------------------------------------------------------------------------


def _sync_wrapper(name: str, kind: SpanKind, attrs: dict[str, Any]) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # The hot path. Each branch does the least it can:
        # - a new trace draws its 128-bit id at once (one call, cheaper than
        #   two 64-bit draws and a shift); its low 64 bits are all the sampling
        #   rule looks at, and an unsampled trace keeps just that int in the
        #   ContextVar (ids are derived from it only if asked for);
        # - a child of an unsampled trace runs with no span of its own;
        # - a new trace opens its store buffer here and children are handed
        #   their parent's, so filing a finished span is one list.append (store.py);
        # - the span is built inline (object.__new__ and slot stores, as
        #   tracer._new_span does): a function call is ~8% of a traced call;
        # - a sampled span shares the decorator's attribute dict until written.
        parent = _cv_get()
        if parent is None:
            tid = _getrandbits(128) or 1
            lo = tid & _MASK64
            if lo >= _S.bound:
                token = _cv_set(lo)
                try:
                    return wrapped(*args, **kwargs)
                finally:
                    _cv_reset(token)
            if _S.custom:
                return _run_started(start(name, kind, attrs, False, None), wrapped, args, kwargs)
            pid = None
            buf: list[Any] = [tid]
            _S.ring.append(buf)
            next(_S.pushes)
        elif parent.__class__ is Span and parent._trace is not None:  # type: ignore[union-attr]
            tid = parent._trace_id  # type: ignore[union-attr]
            pid = parent._span_id  # type: ignore[union-attr]
            buf = parent._trace  # type: ignore[union-attr]
        else:
            return _run_started(start(name, kind, attrs, False, parent), wrapped, args, kwargs)
        s = _new(Span)
        s._name = name
        s._kind = kind
        s._trace_id = tid
        s._span_id = _getrandbits(64) or 1
        s._parent_id = pid
        s._attrs = attrs
        s._extra = None
        s._status = _UNSET_STATUS
        s._token = None
        s._end = None
        s._trace = buf
        s._start = _time_ns()
        token = _cv_set(s)
        try:
            return wrapped(*args, **kwargs)
        except BaseException as exc:
            _fail(s, exc)
            raise
        finally:
            _cv_reset(token)
            if s._end is None:  # not ended by hand inside the call
                s._end = _time_ns()
                if type(s._attrs) is dict:  # attributes of its own: pack them (see FrozenAttrs)
                    s._attrs = _freeze(s._attrs)
                # tracer._finish inline for the common case (a call saved).
                if len(buf) <= _S.fast_limit:
                    s._trace = None  # no span <-> buffer cycle (see Span.__exit__)
                    buf.append(s)
                else:
                    _finish(s)

    return wrapper


def _close(s: Any) -> None:
    """End and file a span unless user code already ended it inside the call."""
    if s._end is None:
        s._end = _time_ns()
        _finish(s)


def _run_started(s: Any, wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a call under whatever start() returned: a span, an unsampled seed, or None."""
    if s.__class__ is not Span:
        return _run_unsampled(s, wrapped, args, kwargs)
    token = _cv_set(s)
    try:
        return wrapped(*args, **kwargs)
    except BaseException as exc:
        _fail(s, exc)
        raise
    finally:
        _cv_reset(token)
        _close(s)


def _run_unsampled(marker: Any, wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if marker is None:  # the parent is unsampled: keep its context
        return wrapped(*args, **kwargs)
    token = _cv_set(marker)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _cv_reset(token)


def _sync_capture_wrapper(name: str, kind: SpanKind, attrs: dict[str, Any], capture: _Capture) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        s = start(name, kind, attrs, False, _cv_get())
        if s.__class__ is not Span:
            return _run_unsampled(s, wrapped, args, kwargs)
        capture.arguments(s, instance, args, kwargs)  # type: ignore[arg-type]
        token = _cv_set(s)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _fail(s, exc)  # type: ignore[arg-type]
            _close(s)
            raise
        finally:
            _cv_reset(token)
        try:
            capture.result(s, result)  # type: ignore[arg-type]
        finally:
            _close(s)
        return result

    return wrapper


# -- async ---------------------------------------------------------------------------------


def _async_wrapper(name: str, kind: SpanKind, attrs: dict[str, Any], capture: _Capture | None) -> Callable[..., Any]:
    async def run(coro: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # The span starts when the coroutine is first awaited, in the awaiting task's context.
        s = start(name, kind, attrs, False, _cv_get())
        if s.__class__ is not Span:
            if s is None:
                return await coro
            token = _cv_set(s)
            try:
                return await coro
            finally:
                _cv_reset(token)
        if capture is not None:
            capture.arguments(s, instance, args, kwargs)  # type: ignore[arg-type]
        token = _cv_set(s)
        try:
            result = await coro
        except BaseException as exc:
            _fail(s, exc)  # type: ignore[arg-type]
            if capture is not None:  # the span would otherwise end only after a result
                _close(s)
            raise
        finally:
            _cv_reset(token)
            if capture is None:
                _close(s)
        if capture is not None:
            try:
                capture.result(s, result)  # type: ignore[arg-type]
            finally:
                _close(s)
        return result

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # Calling the function here, not inside run(), keeps a bad-argument
        # TypeError at call time, as it is without the decorator.
        return run(wrapped(*args, **kwargs), instance, args, kwargs)

    return wrapper


# -- generators ---------------------------------------------------------------------------------

_TTFT = "autotrace.stream.time_to_first_item_s"  # not gen_ai.*: a traced generator need not be a model call
_ITEMS = "autotrace.stream.items"
_MAX_GAP = "autotrace.stream.max_gap_s"
_CLOSED = "autotrace.stream.closed_early"


class _StreamStats:
    """The span of a traced stream and when it started; writes the stream's figures on it.

    The per-item figures (count, last item time, longest gap) live in locals of
    the driving generator: a method call per item was a third of its cost.
    """

    __slots__ = ("span", "start")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.start = _perf_counter()

    def first(self, now: float) -> None:
        """The first item came: time to first chunk."""
        try:
            self.span.set_attribute(_TTFT, now - self.start)
        except Exception as exc:
            internal_error("stream statistics", exc)

    def finish(self, closed_early: bool, count: int, max_gap: float) -> None:
        s = self.span
        try:
            s.set_attribute(_ITEMS, count)
            if count > 1:
                s.set_attribute(_MAX_GAP, max_gap)
            if closed_early:
                s.set_attribute(_CLOSED, True)
        except Exception as exc:
            internal_error("stream statistics", exc)
        s.end()


def _gen_wrapper(name: str, kind: SpanKind, attrs: dict[str, Any], capture: _Capture | None) -> Callable[..., Any]:
    def drive(
        gen: Generator[Any, Any, Any], parent: Any, instance: Any, args: Any, kwargs: Any
    ) -> Generator[Any, Any, Any]:
        # The span starts at the first resume, as a child of the context the
        # generator was created in. Around every resume the generator's context
        # (its span, or a span its body left open across a yield) is swapped in
        # and out again, so while suspended the consumer sees its own span.
        s = start(name, kind, attrs, False, parent)
        target: Any = parent if s is None else s
        stats = None
        if s.__class__ is Span:
            stats = _StreamStats(s)  # type: ignore[arg-type]
            if capture is not None:
                capture.arguments(s, instance, args, kwargs)  # type: ignore[arg-type]
        send: Any = None
        thrown: BaseException | None = None
        closed_early = False
        count, last, max_gap = 0, 0.0, 0.0
        try:
            while True:
                token = _cv_set(target)
                try:
                    if thrown is None:
                        item = gen.send(send)
                    else:
                        exc, thrown = thrown, None
                        item = gen.throw(exc)
                except StopIteration as stop:
                    return stop.value
                finally:
                    # What is current inside when it pauses (a span the body left
                    # open across the yield) is current again at the next resume.
                    target = _cv_get()
                    _cv_reset(token)
                if stats is not None:
                    now = _perf_counter()
                    if count:
                        if now - last > max_gap:
                            max_gap = now - last
                    else:
                        stats.first(now)
                    last = now
                    count += 1
                try:
                    send = yield item
                except GeneratorExit:
                    closed_early = True
                    token = _cv_set(target)
                    try:
                        gen.close()
                    finally:
                        _cv_reset(token)
                    raise
                except BaseException as exc:  # thrown in by the consumer: pass it on
                    thrown = exc
                    send = None
        except GeneratorExit:
            raise
        except BaseException as exc:
            if stats is not None:
                _fail(stats.span, exc)
            raise
        finally:
            if stats is not None:
                stats.finish(closed_early, count, max_gap)

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return drive(wrapped(*args, **kwargs), _cv_get(), instance, args, kwargs)

    return wrapper


def _asyncgen_wrapper(name: str, kind: SpanKind, attrs: dict[str, Any], capture: _Capture | None) -> Callable[..., Any]:
    async def drive(
        agen: AsyncGenerator[Any, Any], parent: Any, instance: Any, args: Any, kwargs: Any
    ) -> AsyncGenerator[Any, Any]:
        s = start(name, kind, attrs, False, parent)
        target: Any = parent if s is None else s
        stats = None
        if s.__class__ is Span:
            stats = _StreamStats(s)  # type: ignore[arg-type]
            if capture is not None:
                capture.arguments(s, instance, args, kwargs)  # type: ignore[arg-type]
        send: Any = None
        thrown: BaseException | None = None
        closed_early = False
        count, last, max_gap = 0, 0.0, 0.0
        try:
            while True:
                token = _cv_set(target)
                try:
                    if thrown is None:
                        item = await agen.asend(send)
                    else:
                        exc, thrown = thrown, None
                        item = await agen.athrow(exc)
                except StopAsyncIteration:
                    return
                finally:
                    target = _cv_get()  # as in the sync generator: the body's own context carries on
                    _cv_reset(token)
                if stats is not None:
                    now = _perf_counter()
                    if count:
                        if now - last > max_gap:
                            max_gap = now - last
                    else:
                        stats.first(now)
                    last = now
                    count += 1
                try:
                    send = yield item
                except GeneratorExit:
                    closed_early = True
                    token = _cv_set(target)
                    try:
                        await agen.aclose()
                    finally:
                        _cv_reset(token)
                    raise
                except BaseException as exc:
                    thrown = exc
                    send = None
        except GeneratorExit:
            raise
        except BaseException as exc:
            if stats is not None:
                _fail(stats.span, exc)
            raise
        finally:
            if stats is not None:
                stats.finish(closed_early, count, max_gap)

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return drive(wrapped(*args, **kwargs), _cv_get(), instance, args, kwargs)

    return wrapper


# -- argument and result capture ---------------------------------------------------------------


class _Capture:
    """Writes a call's arguments and result on its span, redacted and truncated."""

    def __init__(self, func: Callable[..., Any], args: bool, result: bool) -> None:
        self.capture_args = args
        self.capture_result = result
        try:
            self.signature: inspect.Signature | None = inspect.signature(func)
        except (TypeError, ValueError):
            self.signature = None

    def arguments(self, s: Span, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not self.capture_args:
            return
        try:
            from .redaction import capture_into

            bound: Mapping[str, Any]
            if self.signature is not None:
                try:
                    # wrapt hands methods their instance (or class) apart from args.
                    full = args if instance is None else (instance, *args)
                    bound = self.signature.bind_partial(*full, **kwargs).arguments
                except TypeError:
                    bound = {**{f"arg{i}": v for i, v in enumerate(args)}, **kwargs}
            else:
                bound = {**{f"arg{i}": v for i, v in enumerate(args)}, **kwargs}
            capture_into(
                s,
                [
                    (f"code.function.args.{key}", key, value)
                    for key, value in bound.items()
                    if instance is None or value is not instance
                ],
            )
        except Exception as exc:
            internal_error("capture_args", exc)

    def result(self, s: Span, value: Any) -> None:
        if not self.capture_result:
            return
        try:
            from .redaction import capture_into

            capture_into(s, [("code.function.result", "result", value)])
        except Exception as exc:
            internal_error("capture_result", exc)


# -- the decorator ---------------------------------------------------------------------------


def _identity(func: Callable[..., Any]) -> dict[str, Any]:
    """code.* attributes naming the function (semantic conventions)."""
    attrs: dict[str, Any] = {}
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if qualname:
        attrs["code.function.name"] = f"{module}.{qualname}" if module else qualname
    code = getattr(func, "__code__", None)
    if code is not None:
        attrs["code.file.path"] = os.path.abspath(code.co_filename) if code.co_filename else ""
        attrs["code.line.number"] = code.co_firstlineno
    return attrs


def _decorate(
    func: Any,
    name: str | None,
    kind: SpanKind | str,
    attributes: Mapping[str, Any] | None,
    capture_args: bool,
    capture_result: bool,
) -> Any:
    inner = func.__func__ if isinstance(func, (classmethod, staticmethod)) else func
    if not callable(inner):
        raise TypeError(f"@traced needs a function or method; got {type(func).__name__}")
    span_kind = SpanKind.coerce(kind)
    if name is None:
        name = getattr(inner, "__qualname__", None) or getattr(inner, "__name__", None) or repr(inner)
    elif not isinstance(name, str):
        raise TypeError(f"@traced name must be a str; got {type(name).__name__}")
    static: dict[str, Any] = {}
    from ._limits import LIMITS

    for key, value in _identity(inner).items():
        _attributes.put(static, key, value, LIMITS)
    if attributes is not None:
        if not isinstance(attributes, Mapping):
            raise TypeError(f"@traced attributes must be a mapping; got {type(attributes).__name__}")
        for key, value in attributes.items():
            _attributes.put(static, key, value, LIMITS)
    static = SharedAttrs(static)  # every span of this function shares it until written
    capture = _Capture(inner, capture_args, capture_result) if (capture_args or capture_result) else None

    target = inner
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.isasyncgenfunction(target):
        wrapper = _asyncgen_wrapper(name, span_kind, static, capture)
    elif inspect.iscoroutinefunction(target):
        wrapper = _async_wrapper(name, span_kind, static, capture)
    elif inspect.isgeneratorfunction(target):
        wrapper = _gen_wrapper(name, span_kind, static, capture)
    elif capture is not None:
        wrapper = _sync_capture_wrapper(name, span_kind, static, capture)
    else:
        wrapper = _sync_wrapper(name, span_kind, static)

    _skip_self_lookup(inner)
    return wrapt.FunctionWrapper(func, wrapper)


def _skip_self_lookup(func: Any) -> None:
    """Give a plain function ``__self__ = None`` so wrapt's call skips a failed lookup.

    On every call wrapt's FunctionWrapper asks the wrapped function for
    ``__self__`` (to catch functions that were bound before being wrapped); on
    a plain function that raises and clears an AttributeError, about 450 ns of
    a ~600 ns call. With the attribute present and None, wrapt takes the same
    branch (instance None) without the exception. Bound methods are untouched:
    their own ``__self__`` wins over the function's.
    """
    if type(func) is not types.FunctionType:
        return
    try:
        if "__self__" not in func.__dict__:
            func.__self__ = None  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        pass


@overload
def traced(func: F, /) -> F: ...


@overload
def traced(
    name: str | None = None,
    /,
    *,
    kind: SpanKind | str = ...,
    attributes: Mapping[str, Any] | None = ...,
    capture_args: bool = ...,
    capture_result: bool = ...,
) -> Callable[[F], F]: ...


@overload
def traced(
    *,
    name: str | None = None,
    kind: SpanKind | str = ...,
    attributes: Mapping[str, Any] | None = ...,
    capture_args: bool = ...,
    capture_result: bool = ...,
) -> Callable[[F], F]: ...


def traced(
    func: Any = None,
    /,
    *,
    name: str | None = None,
    kind: SpanKind | str = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    capture_args: bool = False,
    capture_result: bool = False,
) -> Any:
    """Trace every call of a function, coroutine, generator or async generator.

    Use bare (``@traced``), with a span name (``@traced("generate")``) or with
    keywords (``name=``, ``kind=``, ``attributes=``, ``capture_args=``,
    ``capture_result=``). The span is named after the function's
    ``__qualname__`` unless named. Generators keep their span open until the
    stream is exhausted, closed or fails, and record time to first item.
    """
    if isinstance(func, str) or func is None:
        if isinstance(func, str):
            if name is not None:
                raise TypeError("@traced got a name twice (positional and name=)")
            name = func
        SpanKind.coerce(kind)  # fail at decoration time, not at call time

        def decorator(f: F) -> F:
            return _decorate(f, name, kind, attributes, capture_args, capture_result)  # type: ignore[no-any-return]

        return decorator
    return _decorate(func, name, kind, attributes, capture_args, capture_result)
