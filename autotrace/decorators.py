"""``@traced``: one wrapper per kind of callable, chosen when decorating, never per call.

A plain sync function (also one under ``classmethod`` or ``staticmethod``) is
wrapped by a plain function, carrying the wrapped one's name, docstring and
``__wrapped__`` (``functools.update_wrapper``): Python binds it as a method,
pickles it by reference and copies it as itself, and a call through it costs one
Python frame, so traced recursion reaches half the untraced depth rather than a
third. Coroutine functions, generators, async generators and every other
callable get a ``wrapt.FunctionWrapper`` subclass, so that signature,
docstring, ``inspect`` kind and descriptor binding are wrapt's job and stay
exactly as they were; that subclass pickles by reference and copies as itself too.
The wrapped object itself is never changed.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import keyword
import os
import random
import sys
import time
import types
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import Any, NoReturn, TypeVar, overload

import wrapt

from . import _inflight, _metrics
from . import attributes as _attributes
from ._errors import internal_error
from ._limits import LIMITS
from ._state import _S
from ._state import finish as _finish
from ._state import finish_provisional as _finish_provisional
from ._tail import COUNTS as _TAIL_COUNTS
from ._tail import DISCARDED as _DISCARDED
from ._tail import TailSampling, _Provisional
from ._tail import let_go as _tail_let_go
from .attributes import SharedAttrs
from .attributes import pack as _pack
from .context import CURRENT
from .spans import ENDED, Span, SpanKind, _is_cancellation
from .tracer import _is_remote, start

__all__ = ["traced"]

F = TypeVar("F", bound=Callable[..., Any])

_cv_get = CURRENT.get
_cv_set = CURRENT.set
_cv_reset = CURRENT.reset
_MISSING = contextvars.Token.MISSING

_new = object.__new__
_getrandbits = random.getrandbits
_MASK64 = (1 << 64) - 1
_time_ns = time.time_ns
_perf_counter = time.perf_counter
_copy_context = contextvars.copy_context
_pc = time.perf_counter_ns
# Metrics (every call, sampled or not) and open roots (/inflight); see _metrics.py.
_M = _metrics.M
_series = _metrics.series
_pinned = _metrics.pinned
_observe_span = _metrics.observe_span
_OPEN = _inflight.OPEN
_FOLD_AT = _metrics.FOLD_AT
_add_failed = _metrics.add_failed


def _fail(s: Span, exc: BaseException) -> None:
    """Record an exception leaving a span; never raises."""
    try:
        s._fail(exc)
    except Exception as error:
        internal_error("recording an exception", error)


def _reset_elsewhere(token: contextvars.Token[Any], value: Any) -> None:
    """Undo ``_cv_set(value)`` where its token cannot be reset (ValueError).

    A coroutine or async generator driven by hand can be suspended in one
    Context and resumed in another: there the value is undone only if it is
    still current, as ``span()`` does.
    """
    if _cv_get() is value:
        old = token.old_value
        _cv_set(None if old is _MISSING else old)


def _close(s: Any) -> None:
    """End and file a span unless user code already ended it inside the call."""
    if s._t1 is None:  # (the end, see Span.__slots__)
        s._t1 = _time_ns()
        _finish(s)


# -- sync: a plain function around a plain function ------------------------------------------


def _sync_function(
    func: Callable[..., Any], name: str, kind: SpanKind, attrs: dict[str, Any], capture: _Capture | None
) -> Callable[..., Any]:
    """A plain function tracing each call of ``func``, which it calls from its own frame."""
    if capture is not None:
        return functools.update_wrapper(_sync_capture_function(func, name, kind, attrs, capture), func)
    h: Any = None  # this function's metrics series, looked up at its first call
    # Its open local roots, for /inflight (see _inflight.py): the span if sampled,
    # (seed, perf_counter_ns at start) if not (metrics on). Appended inside each call's
    # try and removed in its finally: nothing outlives a call, whatever is raised. A
    # list: an append and a remove of the one entry cost half a dict's set and delete
    # (no hashing, no table rebuilt as entries come and go).
    roots: list[Any] = []
    roots_append = roots.append
    roots_remove = roots.remove

    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal h
        # The hot path. Each branch does the least it can:
        # - a new trace draws its 128-bit id at once (one call, cheaper than
        #   two 64-bit draws and a shift); its low 64 bits are all the sampling
        #   rule looks at, and an unsampled trace keeps just that int in the
        #   ContextVar (ids are derived from it only if asked for);
        # - a new trace opens its store buffer here and children are handed
        #   their parent's, so filing a finished span is one list.append (store.py);
        # - the span is built inline (object.__new__ and slot stores, as
        #   tracer._new_span does): a function call is ~8% of a traced call;
        # - a sampled span shares the decorator's attribute dict until written;
        # - every other case (a custom sampler, a remote or unsampled parent)
        #   asks tracer.start() and runs in this same frame: the function is
        #   always called from here, so a traced call costs one frame more than
        #   an untraced one, however it is sampled (deep recursion).
        parent = _cv_get()
        s: Any  # (set in each branch below: two stores fewer for the paths that return early)
        buf: list[Any] | None
        if parent is None:
            tid = _getrandbits(128) or 1
            lo = tid & _MASK64
            if lo >= _S.bound:
                if not _M.on:
                    try:
                        token = _cv_set(lo)
                    except BaseException:  # a signal handler raised before the token was kept
                        _cv_set(None)
                        raise
                    try:
                        return func(*args, **kwargs)
                    finally:
                        _cv_reset(token)
                # Timed for the metrics, and filed for /inflight with the same start.
                if h is None:
                    h = _pinned(name, kind)
                t0 = _pc()
                filed = (lo, t0)
                try:
                    token = _cv_set(lo)
                except BaseException:  # a signal handler raised before the token was kept
                    _cv_set(None)
                    raise
                try:
                    roots_append(filed)  # (in the try: the finally takes it out whatever is raised)
                    result = func(*args, **kwargs)
                except BaseException as exc:
                    _add_failed(h, _pc() - t0, exc)
                    raise
                finally:
                    try:
                        _cv_reset(token)
                    finally:  # (also when a signal handler raises as the reset returns)
                        try:
                            roots_remove(filed)
                        except ValueError:  # never appended: a signal handler raised as the try began
                            pass
                h.append(_pc() - t0)
                if len(h) > _FOLD_AT:
                    h.fold()
                return result
            custom = _S.custom
            if custom and custom.__class__ is not TailSampling:
                s = start(name, kind, attrs, None)
                buf = None
            elif custom and lo >= custom.bound:  # type: ignore[union-attr]
                # Tail sampling: left out by the head rule, recorded provisionally (_tail.py).
                # Built here as below, but `buf` stays None: the root's end then skips the
                # inline filing (no len() through _Provisional.__len__) and decides below.
                s = _new(Span)
                s._name = name
                s._kind = kind
                s._trace_id = tid
                s._sid = _getrandbits(64) or 1
                s._parent_id = None
                s._attr_data = attrs
                s._extra = None
                s._token = None
                s._t1 = None
                s._trace = custom.open(tid)  # type: ignore[union-attr]
                s._t0 = _time_ns()
                buf = None
            else:
                pid = None
                buf = [tid, None]  # opened inline as TraceStore._new_trace does (room for one span)
                buf.pop()
                try:  # counted even when a signal handler raises just after the append
                    _S.ring.append(buf)
                finally:
                    next(_S.pushes)
        elif parent.__class__ is Span and parent._trace is not None:
            tid = parent._trace_id
            pid = parent._sid or parent._span_id  # (the property when it is being packed by its end in another thread)
            buf = parent._trace
        else:
            s = start(name, kind, attrs, parent)
            if s is None:  # the parent is unsampled: run in its context, with no span
                if not _M.on:
                    return func(*args, **kwargs)
                if h is None:
                    h = _pinned(name, kind)
                t0 = _pc()
                try:
                    result = func(*args, **kwargs)
                except BaseException as exc:
                    _add_failed(h, _pc() - t0, exc)
                    raise
                h.append(_pc() - t0)
                if len(h) > _FOLD_AT:
                    h.fold()
                return result
            buf = None
        if buf is not None:
            s = _new(Span)
            s._name = name
            s._kind = kind
            s._trace_id = tid
            s._sid = _getrandbits(64) or 1
            s._parent_id = pid
            s._attr_data = attrs
            s._extra = None
            s._token = None
            s._t1 = None
            s._trace = buf
            s._t0 = _time_ns()
        elif s.__class__ is not Span:  # a new unsampled trace's seed (or a remote unsampled parent's child)
            if h is None:
                h = _pinned(name, kind)
            t0 = _pc()
            try:
                token = _cv_set(s)
            except BaseException:  # a signal handler raised before the token was kept
                _cv_set(parent)
                raise
            try:
                if _M.on and (parent is None or _is_remote(parent)):  # a local root: listed while it runs
                    _OPEN[s] = (h, t0, name)
                result = func(*args, **kwargs)
            except BaseException as exc:
                if _M.on:
                    _add_failed(h, _pc() - t0, exc)
                raise
            finally:
                try:
                    _cv_reset(token)
                finally:
                    _OPEN.pop(s, None)
            if _M.on:
                h.append(_pc() - t0)
                if len(h) > _FOLD_AT:
                    h.fold()
            return result
        try:  # (a try block costs nothing until something is raised)
            token = _cv_set(s)
        except BaseException:  # a signal handler raised before the token was kept: put the context back
            _cv_set(parent)
            raise
        try:
            if parent is None:  # a local root: listed for /inflight while it runs
                roots_append(s)
            elif buf is not None:  # the parent is a Span (a child that start() made is linked there)
                # The chain /inflight shows: the parent's latest child, while the parent is open
                # (_inflight.py). The check and the store are one statement on one line, no call:
                # the parent's end cannot come between them and pack an attribute there (spans.ENDED).
                (parent if parent._t1 is None else ENDED)._attr0 = s
            elif s._extra is not None and s._extra.remote_parent:  # below a context from elsewhere: a local root
                _OPEN[s] = s
            return func(*args, **kwargs)
        except BaseException as exc:
            _fail(s, exc)
            raise
        finally:
            try:
                _cv_reset(token)
            finally:  # (also when a signal handler raises as the reset returns)
                if parent is None:
                    try:
                        roots_remove(s)
                    except ValueError:  # never appended: a signal handler raised as the try began
                        pass
                elif buf is None:  # (start() made it: a local root below a remote parent, or a child)
                    _OPEN.pop(s, None)
            if s._t1 is None:  # not ended by hand inside the call (_t1: the end, see Span.__slots__)
                end = _time_ns()
                s._t1 = end
                # tracer._finish inline for the common case (a call saved).
                if buf is not None and len(buf) <= _S.fast_limit:
                    d = end - s._t0  # (before packing folds _t0 into _t1)
                    if type(s._attr_data) is dict:  # attributes of its own: pack them (see attributes.pack)
                        _pack(s)
                    else:  # its latest child, linked while it was open (see Span.__slots__): let go
                        s._attr0 = None
                    s._trace = None  # no span <-> buffer cycle (see Span.__exit__)
                    buf.append(s)
                    if _M.on:  # _finish() records the metrics of the other branch
                        if s._extra is None and s._name is name:  # status UNSET, name as decorated
                            if h is None:
                                h = _pinned(name, kind)
                            h.append(d if d > 0 else 0)  # (a wall clock set back: not an error)
                            if len(h) > _FOLD_AT:
                                h.fold()
                        else:
                            _observe_span(s)
                else:
                    p = s._trace
                    if p.__class__ is not _Provisional:
                        _finish(s)
                    else:  # a span of a provisional trace (tail sampling): timed here, as above
                        d = end - s._t0
                        if (
                            parent is None
                            and not p.touched
                            and s._extra is None  # status UNSET, no exception event
                            and s._name is name  # (for the metrics below)
                            and d <= p.sampling.fast_ns
                        ):
                            # The local root of a trace that holds only itself, nothing failed,
                            # fast: discarded here, as _tail.TailSampling.decide would. `touched`
                            # says whether anything else happened to the trace: a span of it
                            # ended (its end marks it first) or its context was handed out.
                            p.state = _DISCARDED
                            if p.touched:  # a span of it ended in another thread just now: not left held
                                _tail_let_go(p)
                            next(_TAIL_COUNTS.discarded)
                            p = None
                        if _M.on:  # counted once, whether its trace is kept or not (not by _finish_provisional)
                            if s._extra is None and s._name is name:
                                if h is None:
                                    h = _pinned(name, kind)
                                h.append(d if d > 0 else 0)
                                if len(h) > _FOLD_AT:
                                    h.fold()
                            else:
                                _observe_span(s)
                        if p is not None:
                            _finish_provisional(s, p)

    _inflight.watch(call, name, roots)
    return functools.update_wrapper(call, func)


def _sync_capture_function(
    func: Callable[..., Any], name: str, kind: SpanKind, attrs: dict[str, Any], capture: _Capture
) -> Callable[..., Any]:
    """As _sync_function, writing arguments and result on the span (not the hot path: no inlining)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        s = start(name, kind, attrs, _cv_get())
        if s.__class__ is not Span:
            return _run_started(s, func, args, kwargs, name, kind)
        if s._parent_id is None:  # a local root: listed by /inflight while open
            _inflight.add_root(s)
        capture.arguments(s, None, args, kwargs)  # type: ignore[arg-type]
        token = _cv_set(s)
        try:
            result = func(*args, **kwargs)
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

    return call


# -- sync: any other callable, through wrapt -------------------------------------------------


def _timed(name: str, kind: SpanKind, s: Any, wrapped: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """Run an unsampled call (``s`` from start(), not a Span) and record its duration in the metrics."""
    h = _series(name, kind)
    # A local root: a new trace, or below a context from elsewhere (_cv_get(): the parent, still current).
    root = s.__class__ is int or (s is not None and _is_remote(_cv_get()))
    t0 = _pc()
    token = None
    try:
        if root:
            _OPEN[s] = (h, t0, name)
        if s is not None:
            token = _cv_set(s)
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        if _M.on:
            _add_failed(h, _pc() - t0, exc)
        raise
    finally:
        if token is not None:
            _cv_reset(token)
        if root:
            _OPEN.pop(s, None)
    if _M.on:
        h.append(_pc() - t0)
        if len(h) > _FOLD_AT:
            h.fold()
    return result


def _run_started(
    s: Any, wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], name: str, kind: SpanKind
) -> Any:
    """Run a call under whatever start() returned: a span, an unsampled seed, or None."""
    if s.__class__ is not Span:
        if not _M.on:
            if s is None:  # the parent is unsampled: keep its context
                return wrapped(*args, **kwargs)
            token = _cv_set(s)
            try:
                return wrapped(*args, **kwargs)
            finally:
                _cv_reset(token)
        return _timed(name, kind, s, wrapped, args, kwargs)
    if s._parent_id is None or (s._extra is not None and s._extra.remote_parent):  # a local root: listed by /inflight
        _inflight.add_root(s)
    token = _cv_set(s)
    try:
        return wrapped(*args, **kwargs)
    except BaseException as exc:
        _fail(s, exc)
        raise
    finally:
        _cv_reset(token)
        _close(s)


def _sync_wrapper(name: str, kind: SpanKind, attrs: dict[str, Any]) -> Callable[..., Any]:
    """The wrapt wrapper for a sync callable that is not a plain function (bound method, partial, object)."""

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return _run_started(start(name, kind, attrs, _cv_get()), wrapped, args, kwargs, name, kind)

    return wrapper


def _sync_capture_wrapper(name: str, kind: SpanKind, attrs: dict[str, Any], capture: _Capture) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        s = start(name, kind, attrs, _cv_get())
        if s.__class__ is not Span:
            return _run_started(s, wrapped, args, kwargs, name, kind)
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


# A plain coroutine function is traced by a plain `async def` with the very same
# parameters, generated once per decorated function (as dataclasses and
# namedtuple generate theirs): calling it binds the arguments, so a bad one
# raises TypeError at call time as without the decorator, and nothing else runs
# until it is awaited; the user's coroutine is made then, inside it. It is a
# plain function: Python binds it as a method, pickles it by reference and
# copies it as itself, inspect sees a coroutine function, and a call costs no
# proxy, no holder object and no second coroutine (measured: the wrapt path
# below costs 1.5x as much). It builds the span inline, as the sync wrapper
# does (see _sync_function for why each step is as it is). Every name it uses
# starts with `_at_`: a function with a parameter named so takes the wrapt path.
# A change to the inline span of _sync_function.call belongs here too.
_ASYNC_SOURCE = """\
def _at_outer({helpers}):
    def _at_make(_at_func, _at_name, _at_kind, _at_attrs):
        _at_h = None
        async def _at_call({params}):
            nonlocal _at_h
            _at_parent = _at_cv_get()
            _at_s = None
            _at_buf = None
            if _at_parent is None:
                _at_tid = _at_getrandbits(128) or 1
                _at_lo = _at_tid & _at_MASK64
                if _at_lo >= _at_S.bound:
                    _at_s = _at_lo
                elif _at_S.custom:
                    _at_s = _at_start(_at_name, _at_kind, _at_attrs, None)
                else:
                    _at_pid = None
                    _at_buf = [_at_tid, None]
                    _at_buf.pop()
                    try:
                        _at_S.ring.append(_at_buf)
                    finally:
                        _at_next(_at_S.pushes)
            elif _at_parent.__class__ is _at_Span and _at_parent._trace is not None:
                _at_tid = _at_parent._trace_id
                _at_pid = _at_parent._sid or _at_parent._span_id
                _at_buf = _at_parent._trace
            else:
                _at_s = _at_start(_at_name, _at_kind, _at_attrs, _at_parent)
                if _at_s is None:
                    if not _at_M.on:
                        return await _at_func({forward})
                    if _at_h is None:
                        _at_h = _at_pinned(_at_name, _at_kind)
                    _at_t0 = _at_pc()
                    try:
                        _at_result = await _at_func({forward})
                    except _at_BaseException as _at_exc:
                        _at_add_failed(_at_h, _at_pc() - _at_t0, _at_exc)
                        raise
                    _at_h.append(_at_pc() - _at_t0)
                    if _at_len(_at_h) > _at_FOLD_AT:
                        _at_h.fold()
                    return _at_result
            if _at_buf is not None:
                _at_s = _at_new(_at_Span)
                _at_s._name = _at_name
                _at_s._kind = _at_kind
                _at_s._trace_id = _at_tid
                _at_s._sid = _at_getrandbits(64) or 1
                _at_s._parent_id = _at_pid
                _at_s._attr_data = _at_attrs
                _at_s._extra = None
                _at_s._token = None
                _at_s._t1 = None
                _at_s._trace = _at_buf
                _at_s._t0 = _at_time_ns()
            elif _at_s.__class__ is not _at_Span:
                _at_timed = _at_M.on
                _at_root = False
                if _at_timed:
                    if _at_h is None:
                        _at_h = _at_pinned(_at_name, _at_kind)
                    _at_t0 = _at_pc()
                    if _at_s.__class__ is _at_int or _at_is_remote(_at_parent):
                        _at_root = True
                        _at_OPEN[_at_s] = (_at_h, _at_t0, _at_name)
                try:
                    _at_token = _at_cv_set(_at_s)
                except _at_BaseException:
                    if _at_root:
                        _at_OPEN.pop(_at_s, None)
                    _at_cv_set(_at_parent)
                    raise
                try:
                    _at_result = await _at_func({forward})
                except _at_BaseException as _at_exc:
                    if _at_timed:
                        _at_add_failed(_at_h, _at_pc() - _at_t0, _at_exc)
                    raise
                finally:
                    if _at_root:
                        _at_OPEN.pop(_at_s, None)
                    try:
                        _at_cv_reset(_at_token)
                    except _at_ValueError:
                        _at_reset_elsewhere(_at_token, _at_s)
                if _at_timed:
                    _at_h.append(_at_pc() - _at_t0)
                    if _at_len(_at_h) > _at_FOLD_AT:
                        _at_h.fold()
                return _at_result
            _at_root = _at_parent.__class__ is not _at_Span
            try:
                _at_token = _at_cv_set(_at_s)
            except _at_BaseException:
                _at_cv_set(_at_parent)
                raise
            try:
                if _at_root:
                    _at_OPEN[_at_s] = _at_s
                else:  # the parent's latest child: /inflight's chain (one statement, as in _sync_function)
                    (_at_parent if _at_parent._t1 is None else _at_ENDED)._attr0 = _at_s
                return await _at_func({forward})
            except _at_BaseException as _at_exc:
                _at_fail(_at_s, _at_exc)
                raise
            finally:
                if _at_root:
                    _at_OPEN.pop(_at_s, None)
                try:
                    _at_cv_reset(_at_token)
                except _at_ValueError:
                    _at_reset_elsewhere(_at_token, _at_s)
                if _at_s._t1 is None:
                    _at_end = _at_time_ns()
                    _at_s._t1 = _at_end
                    if _at_buf is not None and _at_len(_at_buf) <= _at_S.fast_limit:
                        _at_d = _at_end - _at_s._t0
                        if _at_type(_at_s._attr_data) is _at_dict:
                            _at_pack(_at_s)
                        else:
                            _at_s._attr0 = None
                        _at_s._trace = None
                        _at_buf.append(_at_s)
                        if _at_M.on:
                            if _at_s._extra is None and _at_s._name is _at_name:
                                if _at_h is None:
                                    _at_h = _at_pinned(_at_name, _at_kind)
                                _at_h.append(_at_d if _at_d > 0 else 0)
                                if _at_len(_at_h) > _at_FOLD_AT:
                                    _at_h.fold()
                            else:
                                _at_observe_span(_at_s)
                    else:
                        _at_finish(_at_s)

        return _at_call
    return _at_make
"""


@functools.lru_cache(maxsize=1024)  # one compiled maker per parameter shape
def _async_maker(params: str, forward: str) -> Callable[..., Any]:
    """The compiled factory of a traced `async def` for one parameter shape."""
    # Builtins too go in under names of ours: a parameter may be called `type` or `len`.
    namespace: dict[str, Any] = {
        "_at_cv_get": _cv_get,
        "_at_cv_set": _cv_set,
        "_at_cv_reset": _cv_reset,
        "_at_getrandbits": _getrandbits,
        "_at_MASK64": _MASK64,
        "_at_S": _S,
        "_at_start": start,
        "_at_Span": Span,
        "_at_ENDED": ENDED,
        "_at_is_remote": _is_remote,
        "_at_new": _new,
        "_at_time_ns": _time_ns,
        "_at_reset_elsewhere": _reset_elsewhere,
        "_at_fail": _fail,
        "_at_pack": _pack,
        "_at_finish": _finish,
        "_at_next": next,
        "_at_len": len,
        "_at_type": type,
        "_at_dict": dict,
        "_at_BaseException": BaseException,
        "_at_add_failed": _add_failed,
        "_at_ValueError": ValueError,
        "_at_int": int,
        "_at_M": _M,
        "_at_pc": _pc,
        "_at_pinned": _pinned,
        "_at_FOLD_AT": _FOLD_AT,
        "_at_OPEN": _OPEN,
        "_at_observe_span": _observe_span,
    }
    # They reach the wrapper as free variables of the maker, never as globals:
    # the wrapper is given the function's own globals (see _async_function).
    source = _ASYNC_SOURCE.format(params=params, forward=forward, helpers=", ".join(namespace))
    scope: dict[str, Any] = {}
    exec(compile(source, "<autotrace @traced>", "exec"), scope)  # our own source; parameter names checked
    make: Callable[..., Any] = scope["_at_outer"](**namespace)
    return make


def _async_function(func: types.FunctionType, name: str, kind: SpanKind, attrs: dict[str, Any]) -> Any:
    """A plain ``async def`` tracing each call of the plain coroutine function ``func``, or None.

    None when its parameters cannot be copied safely (a name of ours among them):
    the caller takes the wrapt path then.
    """
    code = func.__code__
    if not code.co_flags & inspect.CO_COROUTINE:
        return None
    names = code.co_varnames
    npos, nposonly, nkw = code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount
    at = npos + nkw
    star = names[at] if code.co_flags & inspect.CO_VARARGS else None
    at += star is not None
    starstar = names[at] if code.co_flags & inspect.CO_VARKEYWORDS else None
    used = [*names[: npos + nkw], star or "", starstar or ""]
    # Names that are not parameters in source (a keyword or __debug__, possible in
    # a code object made by hand) would not compile: the wrapt path takes them.
    if any(not n.isidentifier() or keyword.iskeyword(n) or n == "__debug__" or n.startswith("_at_") for n in used if n):
        return None
    params: list[str] = list(names[:nposonly])
    if nposonly:
        params.append("/")
    params.extend(names[nposonly:npos])
    forward: list[str] = list(names[:npos])
    if star is not None:
        params.append(f"*{star}")
        forward.append(f"*{star}")
    elif nkw:
        params.append("*")
    for kw in names[npos : npos + nkw]:
        params.append(kw)
        forward.append(f"{kw}={kw}")
    if starstar is not None:
        params.append(f"**{starstar}")
        forward.append(f"**{starstar}")
    made = _async_maker(", ".join(params), ", ".join(forward))(func, name, kind, attrs)
    # Tracebacks and profiles name the wrapper's frame after the function.
    if sys.version_info >= (3, 11):
        made_code = made.__code__.replace(co_name=code.co_name, co_qualname=code.co_qualname)
    else:  # pragma: no cover - Python 3.10
        made_code = made.__code__.replace(co_name=code.co_name)
    # The function's own globals, as a wrapt proxy showed them: tools resolve
    # string annotations (`from __future__ import annotations`) in
    # `wrapper.__globals__` (FastAPI before 0.115 does, unwrapping nothing).
    # Its defaults are the function's own objects (none is written in the source).
    call = types.FunctionType(made_code, func.__globals__, code.co_name, func.__defaults__, made.__closure__)
    call.__kwdefaults__ = func.__kwdefaults__
    return functools.update_wrapper(call, func)


class _Pending:
    """The user's coroutine, held until the traced coroutine first runs.

    The user's coroutine is created at call time (a bad argument raises there,
    as without the decorator), but only awaited once the traced coroutine runs.
    A traced coroutine closed, or cancelled, before it ever ran never runs its
    body: this closes the user's coroutine then, which would otherwise warn that
    it was never awaited. (A traced coroutine never awaited at all warns itself,
    under the function's name, as the user's coroutine would.)
    """

    __slots__ = ("coro",)
    coro: Any  # a coroutine, or any awaitable a function marked as a coroutine function returns

    def __del__(self) -> None:
        coro = self.coro
        if coro is not None:
            self.coro = None
            try:
                close = getattr(coro, "close", None)
                if close is not None:
                    close()
            except Exception as exc:
                internal_error("closing a coroutine that never ran", exc)


def _async_wrapper(
    func: Any, name: str, kind: SpanKind, attrs: dict[str, Any], capture: _Capture | None
) -> Callable[..., Any]:
    async def run(pending: _Pending, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        coro = pending.coro
        pending.coro = None
        # The span starts when the coroutine is first awaited, in the awaiting task's context.
        parent = _cv_get()
        s = start(name, kind, attrs, parent)
        if s.__class__ is not Span:
            h = _series(name, kind) if _M.on else None
            root = s.__class__ is int or (s is not None and _is_remote(parent))  # a new trace, or from elsewhere
            t0 = _pc()
            if s is None:
                token = None
            else:
                token = _cv_set(s)
            try:
                if root and h is not None:
                    _OPEN[s] = (h, t0, name)
                result = await coro
            except BaseException as exc:
                if h is not None and _M.on:
                    _add_failed(h, _pc() - t0, exc)
                raise
            finally:
                if root:
                    _OPEN.pop(s, None)
                if token is not None:
                    try:
                        _cv_reset(token)
                    except ValueError:  # resumed in another Context
                        _reset_elsewhere(token, s)
            if h is not None and _M.on:
                h.append(_pc() - t0)
                if len(h) > _FOLD_AT:
                    h.fold()
            return result
        if capture is not None:
            capture.arguments(s, instance, args, kwargs)  # type: ignore[arg-type]
        if s._parent_id is None or (s._extra is not None and s._extra.remote_parent):  # type: ignore[union-attr]
            _inflight.add_root(s)
        token = _cv_set(s)
        try:
            result = await coro
        except BaseException as exc:
            _fail(s, exc)  # type: ignore[arg-type]
            if capture is not None:  # the span would otherwise end only after a result
                _close(s)
            raise
        finally:
            try:
                _cv_reset(token)
            except ValueError:  # resumed in another Context
                _reset_elsewhere(token, s)
            if capture is None:
                _close(s)
        if capture is not None:
            try:
                capture.result(s, result)  # type: ignore[arg-type]
            finally:
                _close(s)
        return result

    # A traced coroutine that is never awaited warns as the user's would: by its name.
    for attr in ("__name__", "__qualname__"):
        value = getattr(func, attr, None)
        if isinstance(value, str):
            setattr(run, attr, value)

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # Calling the function here, not inside run(), keeps a bad-argument
        # TypeError at call time, as it is without the decorator.
        coro = wrapped(*args, **kwargs)
        pending = _new(_Pending)  # no __init__ call: this is every call's cost
        pending.coro = coro
        return run(pending, instance, args, kwargs)

    return wrapper


# -- generators ---------------------------------------------------------------------------------

_TTFT = "autotrace.stream.time_to_first_item_s"  # not gen_ai.*: a traced generator need not be a model call
_ITEMS = "autotrace.stream.items"
_MAX_GAP = "autotrace.stream.max_gap_s"
_CLOSED = "autotrace.stream.closed_early"


def _end_stream(s: Span, closed_early: bool, started: float, first: float, count: int, max_gap: float) -> None:
    """Write a finished stream's figures on its span, then end it; never raises (but a signal's exception)."""
    try:
        attrs = s._attrs
        if s._end is None and type(attrs) is SharedAttrs and len(attrs) + 4 <= LIMITS.max_attributes:
            # The usual case, the decorator's attributes not yet copied: one new
            # dict with the figures (finite floats, an int, True: nothing for
            # set_attribute to coerce or refuse), not a set_attribute() each.
            own = dict(attrs)
            if count:
                own[_TTFT] = first - started
            own[_ITEMS] = count
            if count > 1:
                own[_MAX_GAP] = max_gap
            if closed_early:
                own[_CLOSED] = True
            s._attrs = own
        else:
            if count:
                s.set_attribute(_TTFT, first - started)
            s.set_attribute(_ITEMS, count)
            if count > 1:
                s.set_attribute(_MAX_GAP, max_gap)
            if closed_early:
                s.set_attribute(_CLOSED, True)
    except Exception as exc:
        internal_error("stream statistics", exc)  # raises a signal handler's exception again
    finally:
        _close(s)


def _stream_done(h: Any, unsampled: bool, failed: bool, began: float, first: float, last: float, count: int) -> None:
    """Record a finished stream in the metrics: time to first item, mean gap after it, items; and,
    unsampled, its duration (a sampled stream's span records its own when it ends)."""
    if not _M.on:
        return
    try:
        ttft = round((first - began) * 1e9) if count else -1
        gap = round((last - first) * 1e9 / (count - 1)) if count > 1 else -1
        h.streams.append((ttft, gap, count))
        if unsampled:
            d = round((_perf_counter() - began) * 1e9)
            h.append(~d if failed else d)
        # Both queues: a sampled stream's span may have been renamed (its duration queued elsewhere).
        if len(h) > _FOLD_AT or len(h.streams) > _FOLD_AT:
            h.fold()
    except Exception as exc:
        internal_error("stream metrics", exc)


_ABSENT = object()
_MIRRORED: contextvars.ContextVar[Any] = contextvars.ContextVar("autotrace.mirrored")  # which stream wrote here


def _mirror(
    ctx: contextvars.Context, snap: contextvars.Context, tokens: dict[Any, Any] | None, closing: bool = False
) -> tuple[contextvars.Context, dict[Any, Any] | None]:
    """Write in the running context what a generator's body changed in its own since ``snap``.

    Every ContextVar but the current span, so that a body setting one (a
    ``contextlib.contextmanager`` setting a tenant, ``decimal.localcontext()``)
    is seen by its consumer while it is suspended, as without tracing. A
    variable the body unset again is undone with the token of its first write
    here, which restores what the consumer had. Returns the new snapshot and
    those tokens (``_MIRRORED``'s among them); never raises (but a signal's exception).
    """
    try:
        if closing and (tokens is None or _MIRRORED.get(None) is not tokens):
            # Closed from a context it never wrote in (a garbage collection in
            # another request's task): what its `finally` restores is not
            # written there, where untraced its token resets would fail.
            return snap, tokens
        for var, value in ctx.items():
            if var is not CURRENT and var is not _MIRRORED and snap.get(var, _ABSENT) is not value:
                if tokens is None:
                    tokens = {}
                if _MIRRORED.get(None) is not tokens:  # marks each context it writes in
                    tokens.setdefault(_MIRRORED, _MIRRORED.set(tokens))
                tokens.setdefault(var, var.set(value))
        for var in snap:
            if var is not CURRENT and var is not _MIRRORED and var not in ctx:
                first = tokens.pop(var, None) if tokens else None
                if first is not None:
                    try:
                        var.reset(first)
                    except (ValueError, RuntimeError):  # resumed in another Context than it was written in
                        pass
    except Exception as exc:
        internal_error("mirroring a generator's context variables", exc)
    return ctx.copy(), tokens


def _unmark(tokens: dict[Any, Any]) -> None:
    """Take a finished stream's mark off the context it first wrote in, when that is the running one."""
    try:
        _MIRRORED.reset(tokens[_MIRRORED])
    except (ValueError, RuntimeError, KeyError):  # another Context, or already undone
        pass


def _list_root(s: Any, span: Span | None, sh: Any, name: str, parent: Any) -> bool:
    """List a stream's root for /inflight from its first resume: a sampled one in ROOTS (until its
    span ends), an unsampled one in OPEN (True: the driver takes it out when the stream ends).
    A root: a new trace, or below a context from elsewhere (``parent``)."""
    if span is not None:
        if span._parent_id is None or (span._extra is not None and span._extra.remote_parent):
            _inflight.add_root(span)
        return False
    if sh is not None and (s.__class__ is int or (s is not None and _is_remote(parent))):
        _OPEN[s] = (sh, _pc(), name)
        return True
    return False


def _gen_wrapper(
    name: str, kind: SpanKind, attrs: dict[str, Any], capture: _Capture | None, awaitable: bool = False
) -> Callable[..., Any]:
    def drive(
        gen: Generator[Any, Any, Any], ctx: contextvars.Context, instance: Any, args: Any, kwargs: Any
    ) -> Generator[Any, Any, Any]:
        # The user's generator runs in a Context of its own (`ctx`), copied where
        # it was created: its span is current there at every resume, and so is
        # a span its body leaves open across a yield, while the consumer's
        # context never holds either. Context.run() switches contexts in C,
        # with no ContextVar write per item: a set() and reset() around each
        # resume was two thirds of an item's cost. The span starts at the first
        # resume, as a child of what was current where the generator was made.
        # Any other ContextVar the body writes is written in the consumer's
        # context too (_mirror), as it would be untraced: `ctx != snap` is one
        # pointer comparison in C while the body writes none (~12 ns an item).
        run = ctx.run
        parent = run(_cv_get)
        s = start(name, kind, attrs, parent)
        if s is not None:
            run(_cv_set, s)
        snap = ctx.copy()
        tokens: dict[Any, Any] | None = None
        span = s if s.__class__ is Span else None
        if span is not None and capture is not None:
            capture.arguments(span, instance, args, kwargs)  # type: ignore[arg-type]
        sh = _series(name, kind) if _M.on else None  # every stream, sampled or not, in the metrics
        opened = _list_root(s, span, sh, name, parent)
        failed = False
        # The stream's figures, kept for every stream (sampled or not) in locals:
        # a perf_counter() per item is all the timing costs.
        count = 0
        started = first = last = _perf_counter()
        max_gap = 0.0
        closed_early = closing = False
        send = gen.send
        thrown: Any = None
        try:
            try:
                item = run(send, None)
            except StopIteration as stop:
                return stop.value
            if ctx != snap:
                snap, tokens = _mirror(ctx, snap, tokens)
            first = last = _perf_counter()
            count = 1
            while True:
                try:
                    value = yield item
                except GeneratorExit:
                    closed_early = closing = True
                    run(gen.close)
                    raise
                except BaseException as exc:  # thrown in by the consumer: passed on below, outside this handler
                    thrown = exc
                else:
                    try:
                        item = run(send, value)
                    except StopIteration as stop:
                        return stop.value
                    if ctx != snap:
                        snap, tokens = _mirror(ctx, snap, tokens)
                    now = _perf_counter()
                    if now - last > max_gap:
                        max_gap = now - last
                    last = now
                    count += 1
                    continue
                try:
                    item = run(gen.throw, thrown)
                except StopIteration as stop:
                    return stop.value
                finally:
                    thrown = None  # not kept: no frame <-> traceback cycle
                if ctx != snap:
                    snap, tokens = _mirror(ctx, snap, tokens)
                now = _perf_counter()
                if now - last > max_gap:
                    max_gap = now - last
                last = now
                count += 1
        except GeneratorExit:
            raise
        except BaseException as exc:
            failed = not _is_cancellation(exc)
            if span is not None:
                # A cancelled consumer ends the stream early: closed early, status UNSET (see Span._fail).
                closed_early = not failed
                _fail(span, exc)
            raise
        finally:
            try:
                if ctx != snap:  # what the last resume wrote: its end, a failure, a close
                    _, tokens = _mirror(ctx, snap, tokens, closing)
                if tokens is not None:
                    _unmark(tokens)
            finally:
                if opened:
                    _OPEN.pop(s, None)
                if sh is not None:
                    _stream_done(sh, span is None, failed, started, first, last, count)
                if span is not None:
                    _end_stream(span, closed_early, started, first, count, max_gap)

    if awaitable:  # a @types.coroutine generator: its stream is awaited, so the driver must be awaitable too
        drive = types.coroutine(drive)  # type: ignore[assignment]

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return drive(wrapped(*args, **kwargs), _copy_context(), instance, args, kwargs)

    return wrapper


_ITEM = object()  # what _pump hands back when the body has yielded; anything else is what the body awaits


def _pump(cell: list[Any], aw: Any) -> Generator[Any, Any, None]:
    """Step an async generator's asend/athrow/aclose awaitables, each sent in, in the Context running this.

    ``yield from`` passes what the body awaits up to the caller and takes the
    item the body yields as the awaitable's result, in C: no StopIteration is
    caught in Python. The item goes in ``cell``; ``_ITEM`` comes back.
    """
    while True:
        cell[0] = yield from aw
        del aw  # a finished athrow() keeps its exception: not held while the stream is suspended
        aw = yield _ITEM


@types.coroutine
def _relay(run: Callable[..., Any], pump: Generator[Any, Any, None], waiting: Any) -> Generator[Any, Any, None]:
    """Pass what a stream's body awaits up to the task and the task's answer back, in the body's Context,
    until the body yields (or ends: its exception goes up)."""
    while True:
        try:
            answer = yield waiting
        except BaseException as exc:  # the awaiting task cancelled or closed: the body's to handle, at its await
            waiting = run(pump.throw, exc)
        else:
            waiting = run(pump.send, answer)
        if waiting is _ITEM:
            return


def _asyncgen_wrapper(name: str, kind: SpanKind, attrs: dict[str, Any], capture: _Capture | None) -> Callable[..., Any]:
    async def drive(
        agen: AsyncGenerator[Any, Any], ctx: contextvars.Context, instance: Any, args: Any, kwargs: Any
    ) -> AsyncGenerator[Any, Any]:
        # As the sync driver does, the body runs in a Context of its own
        # (`ctx`, copied where the generator was made): its span is current
        # there at every resume, as is a span it leaves open across a yield,
        # while the consumer's context never holds either, with no ContextVar
        # set and reset per item (they were a third of an item's cost). Each
        # step is a ctx.run() of _pump, whose `yield from` takes the item from
        # the body's awaitable in C; when the body awaits something, _relay
        # passes it up to the task (and the task's answer or cancellation back
        # to the body), still in ctx. Any other ContextVar the body writes is
        # written in the consumer's context too (_mirror), as it is untraced.
        run = ctx.run
        parent = run(_cv_get)
        s = start(name, kind, attrs, parent)
        if s is not None:
            run(_cv_set, s)
        snap = ctx.copy()
        tokens: dict[Any, Any] | None = None
        span = s if s.__class__ is Span else None
        if span is not None and capture is not None:
            capture.arguments(span, instance, args, kwargs)  # type: ignore[arg-type]
        sh = _series(name, kind) if _M.on else None  # every stream, sampled or not, in the metrics
        opened = _list_root(s, span, sh, name, parent)
        failed = False
        count = 0
        started = first = last = _perf_counter()
        max_gap = 0.0
        closed_early = closing = False
        asend = agen.asend
        cell: list[Any] = [None]
        pump = _pump(cell, asend(None))
        step = pump.send
        thrown: Any = None
        try:
            try:
                waiting = run(step, None)
                if waiting is not _ITEM:  # the body awaits something: so does the task, through us
                    await _relay(run, pump, waiting)
                    waiting = None
            except StopAsyncIteration:
                return
            if ctx != snap:
                snap, tokens = _mirror(ctx, snap, tokens)
            first = last = _perf_counter()
            count = 1
            while True:
                try:
                    value = yield cell[0]
                except GeneratorExit:
                    closed_early = closing = True
                    waiting = run(step, agen.aclose())  # in the body's Context, as every step
                    if waiting is not _ITEM:
                        await _relay(run, pump, waiting)
                    raise
                except BaseException as exc:  # thrown in by the consumer: passed on below, outside this handler
                    thrown = exc
                else:
                    try:
                        waiting = run(step, asend(value))
                        if waiting is not _ITEM:
                            await _relay(run, pump, waiting)
                            waiting = None
                    except StopAsyncIteration:
                        return
                    if ctx != snap:
                        snap, tokens = _mirror(ctx, snap, tokens)
                    now = _perf_counter()
                    if now - last > max_gap:
                        max_gap = now - last
                    last = now
                    count += 1
                    continue
                try:
                    waiting = run(step, agen.athrow(thrown))
                    if waiting is not _ITEM:
                        await _relay(run, pump, waiting)
                        waiting = None
                except StopAsyncIteration:
                    return
                finally:
                    thrown = None  # not kept: no frame <-> traceback cycle
                if ctx != snap:
                    snap, tokens = _mirror(ctx, snap, tokens)
                now = _perf_counter()
                if now - last > max_gap:
                    max_gap = now - last
                last = now
                count += 1
        except GeneratorExit:
            raise
        except BaseException as exc:
            failed = not _is_cancellation(exc)
            if span is not None:
                # A cancelled consumer ends the stream early (asyncio.run() cancels
                # the aclose() of a stream left by `break`, throwing CancelledError in
                # at the yield): closed early, status left UNSET (see Span._fail).
                closed_early = not failed
                _fail(span, exc)
            raise
        finally:
            try:
                if ctx != snap:  # what the last resume wrote: its end, a failure, a close
                    _, tokens = _mirror(ctx, snap, tokens, closing)
                if tokens is not None:
                    _unmark(tokens)
            finally:
                if opened:
                    _OPEN.pop(s, None)
                if sh is not None:
                    _stream_done(sh, span is None, failed, started, first, last, count)
                if span is not None:
                    _end_stream(span, closed_early, started, first, count, max_gap)

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return drive(wrapped(*args, **kwargs), _copy_context(), instance, args, kwargs)

    return wrapper


# -- argument and result capture ---------------------------------------------------------------


class _Capture:
    """Writes a call's arguments and result on its span, redacted and truncated."""

    def __init__(self, func: Callable[..., Any], args: bool, result: bool, plain: bool) -> None:
        self.capture_args = args
        self.capture_result = result
        try:
            self.signature: inspect.Signature | None = inspect.signature(func)
        except (TypeError, ValueError):
            self.signature = None
        # A plain function traced in a class body is called with its self (or
        # cls) among the arguments (wrapt hands the instance apart): not captured.
        self.skip: str | None = None
        if plain and self.signature is not None and _in_class_body(func):
            first = next(iter(self.signature.parameters), None)
            if first in ("self", "cls"):
                self.skip = first

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
            skip = self.skip
            capture_into(
                s,
                [
                    (f"code.function.args.{key}", key, value)
                    for key, value in bound.items()
                    if not ((instance is not None and value is instance) or key == skip)
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


def _in_class_body(func: Callable[..., Any]) -> bool:
    """Whether a function was defined in a class body (by its ``__qualname__``)."""
    qualname = getattr(func, "__qualname__", "")
    return "." in qualname and not qualname.rsplit(".", 1)[0].endswith(">")


def _default_name(func: Any) -> str:
    """The span name of an unnamed ``@traced``: the callable's ``__qualname__``.

    A ``functools.partial`` is named after the function it calls, a callable
    object after its class: never a repr, which would carry a memory address.
    """
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    return name if isinstance(name, str) else type(func).__qualname__


class _Traced(wrapt.FunctionWrapper[..., Any]):
    """A traced callable that wrapt wraps; pickled by reference and copied as itself, as a function is."""

    def __reduce_ex__(self, protocol: Any) -> Any:
        # A string: pickle saves a global, found again as module + __qualname__
        # (and checked to be this very object), as for a plain function.
        qualname = getattr(self.__wrapped__, "__qualname__", None)
        if not isinstance(qualname, str):
            raise TypeError(f"cannot pickle a traced {type(self.__wrapped__).__name__}: it has no name to be found by")
        return qualname

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: Any) -> Any:
        return self


class _BoundTraced(wrapt.BoundFunctionWrapper[..., Any]):
    """A traced method bound by wrapt; pickled as a bound method is, copied as itself."""

    def __reduce_ex__(self, protocol: Any) -> Any:
        # As Python pickles a bound method: the attribute, looked up again on its
        # instance, or on the class for a classmethod, staticmethod or a method
        # taken from the class.
        owner = self._self_instance
        if owner is None or self._self_binding in ("classmethod", "staticmethod"):
            owner = getattr(self, "_self_owner", None)
        if owner is None:
            return _Traced.__reduce_ex__(self, protocol)  # type: ignore[arg-type]
        return getattr, (owner, self.__name__)

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: Any) -> Any:
        return self


_Traced.__bound_function_wrapper__ = _BoundTraced  # type: ignore[misc]


class _TracedFunction(_Traced):
    """A traced plain function that wrapt wraps (a coroutine or generator function)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # wrapt's own __call__ asks the wrapped function for __self__ on every
        # call (for a function bound before it was wrapped): on a plain function
        # that raises and clears an AttributeError, most of a call's cost. A
        # plain function has none: this is wrapt's branch for it, without the
        # lookup. Bound calls go through _BoundTraced, wrapt's own.
        return self._self_wrapper(self.__wrapped__, None, args, kwargs)  # type: ignore[call-arg, arg-type]


def _decorate(
    func: Any,
    name: str | None,
    kind: SpanKind | str,
    attributes: Mapping[str, Any] | None,
    capture_args: bool,
    capture_result: bool,
) -> Any:
    if isinstance(func, type):
        raise TypeError(
            f"@traced cannot trace the class {func.__qualname__}: it would trace its construction only. "
            f"Decorate the methods to trace (for example {func.__qualname__}.__init__ or __call__) instead."
        )
    binder = type(func) if isinstance(func, (classmethod, staticmethod)) else None
    inner = func.__func__ if binder is not None else func
    if not callable(inner):
        raise TypeError(f"@traced needs a function or method; got {type(func).__name__}")
    span_kind = SpanKind.coerce(kind)
    if name is None:
        name = _default_name(inner)
    elif not isinstance(name, str):
        raise TypeError(f"@traced name must be a str; got {type(name).__name__}")
    target = inner
    while isinstance(target, functools.partial):
        target = target.func
    name = _attributes.clean_name(name)  # at most max_name_length, cut once here, not per call
    static: dict[str, Any] = {}
    for key, value in _identity(target).items():
        _attributes.put(static, key, value, LIMITS)
    if attributes is not None:
        if not isinstance(attributes, Mapping):
            raise TypeError(f"@traced attributes must be a mapping; got {type(attributes).__name__}")
        for key, value in attributes.items():
            _attributes.put(static, key, value, LIMITS)
    static = SharedAttrs(static)  # every span of this function shares it until written
    plain = type(inner) is types.FunctionType
    capture = None
    if capture_args or capture_result:
        capture = _Capture(inner, capture_args, capture_result, plain and binder is not staticmethod)

    if inspect.isasyncgenfunction(target):
        wrapper = _asyncgen_wrapper(name, span_kind, static, capture)
    elif inspect.iscoroutinefunction(target):
        if plain and capture is None:
            call = _async_function(inner, name, span_kind, static)
            if call is not None:
                return call if binder is None else binder(call)
        wrapper = _async_wrapper(target, name, span_kind, static, capture)
    elif inspect.isgeneratorfunction(target):
        code = getattr(target, "__code__", None)
        awaitable = code is not None and bool(code.co_flags & inspect.CO_ITERABLE_COROUTINE)
        wrapper = _gen_wrapper(name, span_kind, static, capture, awaitable)
    elif plain:
        # A plain function around it; a classmethod or staticmethod binds it as before.
        call = _sync_function(inner, name, span_kind, static, capture)
        return call if binder is None else binder(call)
    elif capture is not None:
        wrapper = _sync_capture_wrapper(name, span_kind, static, capture)
    else:
        wrapper = _sync_wrapper(name, span_kind, static)
    if type(func) is types.FunctionType:
        return _TracedFunction(func, wrapper)
    return _Traced(func, wrapper)


class _Decorator:
    """What ``traced("name")`` or ``traced(kind=...)`` returns: applied to a function, it traces it."""

    __slots__ = ("args",)

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __call__(self, f: F) -> F:
        return _decorate(f, *self.args)  # type: ignore[no-any-return]

    # `with traced("x"):` is a common first guess: say what to write instead of
    # "'function' object does not support the context manager protocol".
    def __enter__(self) -> NoReturn:
        raise TypeError(_NOT_A_CONTEXT_MANAGER)

    def __exit__(self, *exc: object) -> None:
        """Never reached: entering raises."""

    async def __aenter__(self) -> NoReturn:
        raise TypeError(_NOT_A_CONTEXT_MANAGER)

    async def __aexit__(self, *exc: object) -> None:
        """Never reached: entering raises."""


_NOT_A_CONTEXT_MANAGER = (
    "traced() is a decorator, not a context manager: put @traced(name) on a function, "
    "or write `with span(name):` around a block"
)


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
        return _Decorator(name, kind, attributes, capture_args, capture_result)
    return _decorate(func, name, kind, attributes, capture_args, capture_result)
