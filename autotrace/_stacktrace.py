"""``exception.stacktrace``: the traceback text of an exception event, made once and bounded.

An exception leaving N nested traced calls is recorded on N spans, each wanting
the traceback from its own frame down to the raise. Formatting the whole
traceback at every level is O(N²) (``traceback.format_exception`` per frame:
24 s at depth 800). Here the frames are walked once per exception object: each
traced level walks only the frames the exception crossed since the level
below recorded it, and each frame's text is made once. A span's text shows at
most ``MAX_FRAMES`` frames (the ``OUTER_FRAMES`` nearest the span and the rest
nearest the raise, with a line saying how many are left out), so a level costs
O(1) however deep the stack: the whole exception costs O(N).

The walk keeps (file, line, function) triples and ids, never traceback or frame
objects: those would keep every local variable of every frame alive.

``traceback``'s own functions are not used: they catch everything with bare
``except:`` clauses (a signal handler's ``TimeoutError`` raised inside one
would vanish) and format every frame every time.
"""

from __future__ import annotations

import linecache
import os
import threading
import tokenize
import types
from typing import Any

from ._errors import reraise_foreign

MAX_FRAMES = 64
"""Frames shown per exception in the chain."""
OUTER_FRAMES = 16
"""Of those, the frames nearest the span (the others are nearest the raise)."""
MAX_SOURCE_LINE = 200
"""Characters of a source line shown."""
MAX_CHAIN = 4
"""Exceptions shown in a ``__cause__`` / ``__context__`` chain, this one included."""
MAX_MESSAGE = 4096
"""Characters of ``exception.message`` (and of the status description's message)."""
MAX_STACKTRACE = 32_768
"""Characters of ``exception.stacktrace`` in all."""

WORK = [0]
"""Traceback entries walked and frame lines made, ever (tests check the work is linear in depth)."""

_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


class _Record:
    """What has been walked of one exception's traceback (innermost frame first)."""

    __slots__ = ("chain", "exc_id", "head_id", "lines", "raw")

    def __init__(self, exc_id: tuple[int, type, int, int]) -> None:
        self.exc_id = exc_id
        self.head_id = 0
        self.chain: str | None = None  # the chained exceptions' text, made once
        self.raw: list[tuple[str, int | None, str]] = []
        self.lines: list[str | None] = []


_local = threading.local()  # the exception this thread recorded last: the one an outer span records next


def type_name(exc: BaseException) -> str:
    """The exception's class as ``module.QualName`` (builtins unqualified)."""
    return class_name(type(exc))


def class_name(cls: type) -> str:
    """A class as ``module.QualName`` (builtins unqualified): the rule of exception.type and error.type."""
    qualname = cls.__qualname__
    try:  # a class may carry any object as __module__, even one whose __str__ raises
        module = getattr(cls, "__module__", None)
        if module is not None and type(module) is not str:
            module = str(module)
    except Exception as error:
        reraise_foreign(error)
        module = None
    return qualname if module in (None, "builtins", "__builtin__") else f"{module}.{qualname}"


def error_type(exc: BaseException) -> str:
    """The ``error.type`` attribute for an exception: the rule of ``exception.type`` (``type_name``), one for all."""
    return type_name(exc)


def message(exc: BaseException) -> str:
    """``str(exc)``, at most MAX_MESSAGE characters; a placeholder when its ``__str__`` raises."""
    try:
        text = str(exc)
        if type(text) is not str:
            text = str.__str__(text)
    except Exception as error:
        reraise_foreign(error)
        text = f"<exception str() failed: {type(error).__qualname__}>"
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE]


def stacktrace(exc: BaseException, name: str, text: str) -> str:
    """The traceback text of ``exc`` as Python prints it, bounded (see the module docstring)."""
    rec = _sync(exc)
    if rec.chain is None:
        rec.chain = "".join(_chain(exc))
    head = "Traceback (most recent call last):\n" if rec.raw else ""
    tail = f"{name}: {text}\n" if text else f"{name}\n"
    out = f"{rec.chain}{head}{_frames(rec)}{tail}"
    return out if len(out) <= MAX_STACKTRACE else out[: MAX_STACKTRACE - 16] + "\n[truncated]\n"


def _sync(exc: BaseException) -> _Record:
    """The record of ``exc``, walked up to its current traceback head."""
    head = exc.__traceback__
    rec: _Record | None = getattr(_local, "rec", None)
    # Not the id alone: a freed exception's id is soon another's, whose chain differs.
    key = (id(exc), type(exc), id(exc.__cause__), id(exc.__context__))
    if rec is None or rec.exc_id != key:
        rec = _Record(key)
        _local.rec = rec
    elif rec.head_id == id(head):
        return rec  # recorded already at this level (a span ended inside another's frame)
    new: list[tuple[str, int | None, str]] = []
    tb = head
    known = len(rec.raw)
    while tb is not None:
        if id(tb) == rec.head_id and known and rec.raw[known - 1][1] == tb.tb_lineno:
            break  # the rest was walked by the level below
        code = tb.tb_frame.f_code
        new.append((code.co_filename, tb.tb_lineno, code.co_name))
        tb = tb.tb_next
    else:
        rec.raw.clear()  # not an extension of what was walked (a new traceback): start over
        rec.lines.clear()
    WORK[0] += len(new)
    new.reverse()
    rec.raw.extend(new)
    rec.lines.extend([None] * len(new))
    rec.head_id = id(head)
    return rec


def _frames(rec: _Record) -> str:
    """The frame lines of a record, outermost first, at most MAX_FRAMES of them."""
    count = len(rec.raw)
    if count <= MAX_FRAMES:
        shown = range(count - 1, -1, -1)
        return "".join(_line(rec, i) for i in shown)
    inner = MAX_FRAMES - OUTER_FRAMES
    outer = "".join(_line(rec, i) for i in range(count - 1, count - 1 - OUTER_FRAMES, -1))
    rest = "".join(_line(rec, i) for i in range(inner - 1, -1, -1))
    return f"{outer}  [... {count - MAX_FRAMES} frames not shown ...]\n{rest}"


def _line(rec: _Record, index: int) -> str:
    text = rec.lines[index]
    if text is None:
        filename, lineno, func = rec.raw[index]
        text = rec.lines[index] = _format(filename, lineno, func)
    return text


def _format(filename: str, lineno: int | None, func: str) -> str:
    WORK[0] += 1
    text = f'  File "{filename}", line {lineno}, in {func}\n'
    # A frame may have no line number (None) at an instruction the compiler gave none.
    source = _source_line(filename, lineno) if type(lineno) is int else ""
    if source:
        if len(source) > MAX_SOURCE_LINE:
            source = source[:MAX_SOURCE_LINE] + "..."
        text += f"    {source}\n"
    return text


def _source_line(filename: str, lineno: int) -> str:
    """Line ``lineno`` of ``filename``, stripped ("" when unreadable), through linecache's cache.

    A file not cached yet is read here, not by linecache: linecache catches
    OSError while reading, and TimeoutError is an OSError, so a SIGALRM
    deadline landing in the read would vanish there.
    """
    entry = linecache.cache.get(filename)
    if (entry is None or len(entry) == 1) and filename and not filename.startswith("<"):
        try:
            stat = os.stat(filename)
            with tokenize.open(filename) as f:
                lines = f.readlines()
        except (OSError, UnicodeDecodeError, SyntaxError) as error:
            reraise_foreign(error)
            lines = []  # linecache may still find it (a path relative to sys.path, a loader)
        if lines:
            if not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            linecache.cache[filename] = (stat.st_size, stat.st_mtime, lines, filename)
    return linecache.getline(filename, lineno).strip()


def _chain(exc: BaseException) -> list[str]:
    """The blocks of the exceptions ``exc`` was raised from or during, oldest first."""
    blocks: list[str] = []
    seen = {id(exc)}
    current: Any = exc
    for _ in range(MAX_CHAIN - 1):
        cause = current.__cause__
        if cause is not None:
            link = _CAUSE
        elif not current.__suppress_context__ and current.__context__ is not None:
            cause, link = current.__context__, _CONTEXT
        else:
            break
        if not isinstance(cause, BaseException) or id(cause) in seen:
            break
        seen.add(id(cause))
        blocks.append(link)
        blocks.append(_block(cause))
        current = cause
    blocks.reverse()  # oldest first, each block before the sentence that links it to the next
    return blocks


def _block(exc: BaseException) -> str:
    """One chained exception's traceback, walked apart from the per-exception record."""
    rec = _Record((id(exc), type(exc), 0, 0))
    tb: types.TracebackType | None = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        rec.raw.append((code.co_filename, tb.tb_lineno, code.co_name))
        tb = tb.tb_next
    WORK[0] += len(rec.raw)
    rec.raw.reverse()
    rec.lines = [None] * len(rec.raw)
    name, text = type_name(exc), message(exc)
    head = "Traceback (most recent call last):\n" if rec.raw else ""
    return head + _frames(rec) + (f"{name}: {text}\n" if text else f"{name}\n")
