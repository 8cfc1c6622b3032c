"""The current span, kept in a ContextVar, and ways to carry it where it does not flow.

asyncio tasks copy the context when they are created, so a task started inside
a span sees that span as its parent; ``asyncio.to_thread`` copies it too. A new
thread, though, starts with an *empty* context (``contextvars`` values are not
inherited by threads, before Python 3.14's opt-in ``thread_inherit_context``),
and a pool's worker threads keep whatever they had: a span started there would
begin a new trace. ``wrap`` / ``run_in_context`` / ``ContextThread`` /
``ContextExecutor`` / ``wrap_executor`` carry the caller's trace across.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeAlias, TypeVar, Union

from ._current import CURRENT as _CURRENT
from ._current import current_span_context
from ._model import INVALID_SPAN_CONTEXT, SpanContext
from ._model import unsampled_context as unsampled_context  # its old home
from .spans import NonRecordingSpan, Span

__all__ = [
    "ContextExecutor",
    "ContextThread",
    "current_span",
    "current_span_context",
    "run_in_context",
    "use_span",
    "wrap",
    "wrap_executor",
]

P = ParamSpec("P")
R = TypeVar("R")

# What the ContextVar holds: None outside any span; a Span when sampled; a
# NonRecordingSpan for an unsampled or remote context made current; or a bare
# int, the low 64 bits of an unsampled trace id started by @traced. The int is
# the cheapest thing that still identifies the trace: its ids are derived from
# it only when somebody asks (current_span(), propagation), see below.
Current: TypeAlias = Union[Span, NonRecordingSpan, int, None]
CURRENT = _CURRENT


def current_span() -> Span | NonRecordingSpan:
    """The active span, or a non-recording span (ids all zero) outside any span."""
    cur = CURRENT.get()
    if cur is None:
        # A new one each time, not a shared instance: `with current_span():` keeps
        # its context token on the span, and threads must not share that slot.
        return NonRecordingSpan(INVALID_SPAN_CONTEXT)
    if cur.__class__ is int:
        return NonRecordingSpan(unsampled_context(cur))
    result: Span | NonRecordingSpan = cur
    return result


@contextmanager
def use_span(
    span: Span | NonRecordingSpan | SpanContext | None, *, end_on_exit: bool = False
) -> Iterator[Span | NonRecordingSpan]:
    """Make a span, or a context from ``propagation.extract``, current for a block.

    Spans started in the block become its children; with a remote context they
    continue the caller's trace. ``None`` (an invalid header) leaves the
    current context as it is.
    """
    if span is None:
        yield current_span()
        return
    target = NonRecordingSpan(span) if isinstance(span, SpanContext) else span
    token = CURRENT.set(target)
    try:
        yield target
    finally:
        CURRENT.reset(token)
        if end_on_exit:
            target.end()


# -- carrying the context into threads and executors ------------------------------------------


def wrap(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` bound to the caller's context now: wherever it runs, it runs in this trace.

    ``threading.Thread(target=wrap(work)).start()`` makes spans in ``work``
    children of the current span. The whole ``contextvars`` context is
    captured (other libraries' variables come along, as with
    ``asyncio.to_thread``); each call runs in its own copy of it, so the
    wrapped function may run in several threads at once.
    """
    captured = contextvars.copy_context()

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return captured.copy().run(fn, *args, **kwargs)

    try:
        run.__wrapped__ = fn  # type: ignore[attr-defined]
        run.__name__ = getattr(fn, "__name__", run.__name__)
        run.__qualname__ = getattr(fn, "__qualname__", run.__qualname__)
        run.__doc__ = getattr(fn, "__doc__", None)
    except (AttributeError, TypeError):
        pass
    return run


def run_in_context(
    parent: Span | NonRecordingSpan | SpanContext | contextvars.Context | None,
    fn: Callable[P, R],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """Call ``fn(*args, **kwargs)`` with ``parent`` as the current span, and return its result.

    For work handed over by hand (a queue, a callback registry): send
    ``autotrace.current_span()`` (or ``contextvars.copy_context()``) along with
    the job and run it with ``run_in_context(job.parent, handle, job)`` in the
    worker. ``None`` runs ``fn`` in the worker's own context.
    """
    if isinstance(parent, contextvars.Context):
        return parent.copy().run(fn, *args, **kwargs)
    with use_span(parent):
        return fn(*args, **kwargs)


class ContextThread(threading.Thread):
    """A ``threading.Thread`` whose target runs in the context of the code that created it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._autotrace_context = contextvars.copy_context()

    def run(self) -> None:
        """Run the target inside the creator's context."""
        self._autotrace_context.run(super().run)


def _submit_in_context(
    executor: concurrent.futures.Executor, fn: Callable[..., R], args: Any, kwargs: Any
) -> concurrent.futures.Future[R]:
    return executor.submit(_run_captured, contextvars.copy_context(), fn, args, kwargs)


def _run_captured(captured: contextvars.Context, fn: Callable[..., R], args: Any, kwargs: Any) -> R:
    return captured.run(fn, *args, **kwargs)


class ContextExecutor(concurrent.futures.ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run in the context of the code that submitted them.

    ``submit`` and ``map`` capture the caller's context at submission, so a
    span started by a task is a child of the submitter's span, pools nested
    or not.
    """

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[R]:
        """Schedule ``fn(*args, **kwargs)`` to run in the caller's context."""
        return super().submit(_run_captured, contextvars.copy_context(), fn, args, kwargs)


class _ContextExecutorProxy(concurrent.futures.Executor):
    """Any executor, with every task run in its submitter's context (see wrap_executor)."""

    def __init__(self, executor: concurrent.futures.Executor) -> None:
        self._executor = executor

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[R]:
        """Schedule ``fn(*args, **kwargs)`` on the wrapped executor, in the caller's context."""
        return _submit_in_context(self._executor, fn, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut the wrapped executor down."""
        self._executor.shutdown(wait=wait, cancel_futures=cancel_futures)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._executor, name)

    def __repr__(self) -> str:
        return f"wrap_executor({self._executor!r})"


def wrap_executor(executor: concurrent.futures.Executor) -> concurrent.futures.Executor:
    """Wrap an existing thread-based executor so every task runs in its submitter's context.

    ``submit``, ``map``, ``shutdown`` and ``with`` work as on the executor
    itself. Process pools cannot carry a context (it does not pickle): pass
    ``autotrace.propagation.inject({})`` to the task and ``extract`` it there.
    """
    if isinstance(executor, (ContextExecutor, _ContextExecutorProxy)):
        return executor
    if isinstance(executor, concurrent.futures.ProcessPoolExecutor):
        raise TypeError(
            "wrap_executor needs a thread-based executor: a process pool cannot carry a context; "
            "send autotrace.propagation.inject({}) with the task and extract() it in the worker"
        )
    if not isinstance(executor, concurrent.futures.Executor):
        raise TypeError(f"wrap_executor needs a concurrent.futures.Executor; got {type(executor).__name__}")
    return _ContextExecutorProxy(executor)
