"""A bounded, redacting repr: what a captured non-string value is shown as (rule 3 of ``redaction``).

Arrays and tensors are summarised from their metadata only (shape, dtype,
device, nbytes), alone or inside a container.

Only as much of a container as fits the length limit is looked at; every
secret-looking key of a mapping, dataclass, named tuple or plain object is
masked on the way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import ItemsView, Iterator, Mapping
from typing import Any

from ._errors import reraise_foreign, safe_str
from ._secrets import REDACTED, looks_secret

__all__ = ["array_summary", "render"]

_MAX_DEPTH = 6
_ELLIPSIS = "…"


class _Render:
    """A repr that redacts secret-looking keys and fields, and stops once ``budget`` characters are out."""

    __slots__ = ("budget", "parts", "path")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.parts: list[str] = []
        self.path: set[int] = set()

    def emit(self, text: str) -> bool:
        """Write text; False once the budget is spent (callers then stop)."""
        if self.budget <= 0:
            return False
        if len(text) > self.budget:
            text = text[: self.budget]
        self.parts.append(text)
        self.budget -= len(text)
        return self.budget > 0

    def leaf(self, value: Any) -> bool:
        if isinstance(value, (str, bytes, bytearray)):
            # Only the part that can be shown is repr'd: a 1 GB string costs what 1 kB does.
            cut = value[: self.budget + 1]
            return self.emit(_safe_repr(cut))
        return self.emit(_safe_repr(value))

    def value(self, value: Any, depth: int) -> bool:
        if value is _MASKED:
            return self.emit(repr(REDACTED))
        if isinstance(value, (str, bytes, bytearray, int, float, type(None))):
            return self.leaf(value)
        summary = array_summary(value)
        if summary is not None:  # an array or tensor inside a container: its metadata, never its values
            return self.emit(repr(summary.scalar) if summary.scalar is not None else summary.text())
        if depth >= _MAX_DEPTH:
            return self.emit(_ELLIPSIS)
        ident = id(value)
        if ident in self.path:
            return self.emit("<recursive>")
        self.path.add(ident)
        try:
            return self._container(value, depth)
        finally:
            self.path.discard(ident)

    def _container(self, value: Any, depth: int) -> bool:
        if isinstance(value, Mapping):
            return self.items("{", "}", _mapping_items(value, self.budget), depth, ": ")
        if isinstance(value, ItemsView):  # headers.items(): a mapping's pairs, its secret keys masked alike
            pairs = _bounded_items(value, self.budget, "<unreadable mapping>")
            return self.emit(f"{_type_name(value)}(") and self.items("{", "}", pairs, depth, ": ") and self.emit(")")
        fields = _fields(value, self.budget)
        if fields is not None:
            return self.items(f"{_type_name(value)}(", ")", fields, depth, "=")
        if isinstance(value, (list, tuple)) and _is_secret_pair(value):
            # ("Authorization", "Bearer x") in a header list is a mapping item in disguise.
            value = [value[0], _MASKED] if isinstance(value, list) else (value[0], _MASKED)
        if isinstance(value, list):
            return self.seq("[", "]", value, depth)
        if isinstance(value, tuple):
            return self.seq("(", ")" if len(value) != 1 else ",)", value, depth)
        if isinstance(value, (set, frozenset)):
            return self.seq("{", "}", value, depth)
        return self.leaf(value)

    def seq(self, open_: str, close: str, items: Any, depth: int) -> bool:
        if not self.emit(open_):
            return False
        for i, item in enumerate(items):
            if (i and not self.emit(", ")) or not self.value(item, depth + 1):
                return False
        return self.emit(close)

    def items(self, open_: str, close: str, pairs: Any, depth: int, sep: str) -> bool:
        if not self.emit(open_):
            return False
        for i, (key, item) in enumerate(pairs):
            if i and not self.emit(", "):
                return False
            shown = key if sep == "=" else _safe_repr(key)
            if not self.emit(f"{shown}{sep}"):
                return False
            secret = _secret_key(key)
            if not (self.emit(repr(REDACTED)) if secret else self.value(item, depth + 1)):
                return False
        return self.emit(close)


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
        return text if type(text) is str else safe_str(text)
    except Exception as error:
        reraise_foreign(error)
        return safe_str(value)


def _type_name(value: Any) -> str:
    try:
        return type(value).__qualname__
    except Exception as error:
        reraise_foreign(error)
        return "object"


_MASKED = object()
"""Stands for a value rendered as ``'[REDACTED]'``."""


def _key_text(key: Any) -> str | None:
    """A mapping key or pair head as text: str, or bytes as in ASGI/WSGI header lists; None otherwise."""
    if isinstance(key, str):
        return key
    if isinstance(key, (bytes, bytearray)):
        return bytes(key[:200]).decode("latin-1")
    return None


def _secret_key(key: Any) -> bool:
    """looks_secret for a mapping key or pair head (see _key_text)."""
    text = _key_text(key)
    return text is not None and looks_secret(text)


def _is_secret_pair(value: list[Any] | tuple[Any, ...]) -> bool:
    """A two-item list or tuple whose first item is a secret-looking key: ``("password", "hunter2")``.

    A bare ``token`` does not count here: ``("token", "hello")`` and ``["token", "logprob"]`` are
    what LLM code passes around; header pairs name theirs (``X-Auth-Token``, ``Authorization``).
    """
    try:
        if len(value) != 2:
            return False
        key = _key_text(value[0])
        return key is not None and key.strip().lower() != "token" and looks_secret(key)
    except Exception as error:
        reraise_foreign(error)
        return False


def _bounded_items(pairs: Any, limit: int, unreadable: str) -> Iterator[tuple[Any, Any]]:
    """At most ``limit`` (key, value) pairs, read lazily; a failure mid-way ends them with a placeholder."""
    try:
        iterator = iter(pairs)
        for _ in range(limit):
            try:
                key, item = next(iterator)
            except StopIteration:
                return
            yield key, item
    except Exception as error:
        reraise_foreign(error)
        yield unreadable, ""


def _mapping_items(value: Mapping[Any, Any], limit: int) -> Iterator[tuple[Any, Any]]:
    """The items of a mapping, only as many as can be shown (each takes at least one character)."""
    try:
        items = value.items()
    except Exception as error:
        reraise_foreign(error)
        items = None
    return _bounded_items(items, limit, "<unreadable mapping>")


def _fields(value: Any, limit: int) -> Iterator[tuple[Any, Any]] | None:
    """Named fields of a dataclass, named tuple or plain object (``object.__repr__``); None for other values."""
    try:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            if not _generated_repr(type(value)):
                return None  # its own __repr__ decides what it shows (then masked as text)
            fields = ((f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value) if f.repr)
            return _bounded_items(fields, limit, "<unreadable fields>")
        cls = type(value)
        names = getattr(cls, "_fields", None)
        if isinstance(value, tuple) and isinstance(names, tuple):
            pairs = list(zip(names, value, strict=False))
            if len(pairs) == 2 and _secret_key(pairs[0][1]):  # Header(name="Authorization", value=...)
                pairs[1] = (pairs[1][0], _MASKED)
            return _bounded_items(pairs, limit, "<unreadable fields>")
        # Only a class that kept object's repr: a custom __repr__ decides itself what it shows.
        if getattr(cls, "__repr__", None) is object.__repr__ and not isinstance(value, type):
            attrs = object.__getattribute__(value, "__dict__")
            if isinstance(attrs, dict):
                return _bounded_items(attrs.items(), limit, "<unreadable fields>")
    except AttributeError:
        return None  # no __dict__ (slots, builtins): the plain repr shows no attribute values
    except Exception as error:
        reraise_foreign(error)
        return iter([("<unreadable fields>", "")])
    return None


def _generated_repr(cls: type) -> bool:
    """Whether a dataclass's ``__repr__`` is the one @dataclass wrote (fields with repr=True, in order).

    That one is built from source text with exec() and wrapped against recursion, so it has a
    ``__wrapped__`` whose code comes from ``<string>``; a __repr__ written in a class body does not.
    """
    wrapped = getattr(getattr(cls, "__repr__", None), "__wrapped__", None)
    code = getattr(wrapped, "__code__", None)
    return code is not None and code.co_filename == "<string>" and code.co_name == "__repr__"


def render(value: Any, limit: int) -> str:
    """``repr(value)`` with secret-looking keys and fields redacted, cut to ``limit`` characters."""
    out = _Render(limit + 1)
    try:
        out.value(value, 0)
    except RecursionError:
        out.emit(_ELLIPSIS)
    return "".join(out.parts)


# -- arrays and tensors: metadata only ------------------------------------------------------------

_NOT_ARRAYS = (str, bytes, bytearray, list, tuple, dict, set, frozenset, type(None), type)
_MAX_DIMS = 64


class _ArraySummary:
    """What is kept of an array-like: its shape, dtype, device and size, or its value when it is a CPU scalar."""

    __slots__ = ("device", "dtype", "nbytes", "scalar", "shape", "type_name")

    def __init__(self) -> None:
        self.shape: list[int] = []
        self.dtype = ""
        self.device: str | None = None
        self.nbytes: int | None = None
        self.scalar: bool | int | float | None = None
        self.type_name = ""

    def attributes(self, prefix: str) -> dict[str, Any]:
        """``prefix.shape``, ``prefix.dtype``, ``prefix.device``, ``prefix.nbytes`` (those known)."""
        out: dict[str, Any] = {f"{prefix}.shape": self.shape, f"{prefix}.dtype": self.dtype}
        if self.device is not None:
            out[f"{prefix}.device"] = self.device
        if self.nbytes is not None:
            out[f"{prefix}.nbytes"] = self.nbytes
        return out

    def text(self) -> str:
        """One line for a value shown inside text: ``Tensor(shape=[1, 512], dtype=float16, device=cuda:0)``."""
        shape = ", ".join(str(d) for d in self.shape)
        device = f", device={self.device}" if self.device is not None else ""
        return f"{self.type_name}(shape=[{shape}], dtype={self.dtype}{device})"


def _metadata_text(value: Any) -> str:
    text = safe_str(value)[:64]
    return text[6:] if text.startswith("torch.") else text  # torch.float16 -> float16, as numpy names it


def array_summary(value: Any) -> _ArraySummary | None:
    """The summary of an array-like (``shape`` and ``dtype``: numpy, torch, jax...); None for other values.

    Only metadata is read: never the data (no ``tolist``, ``cpu``, ``numpy``, ``repr``
    or iteration), so a 10^8-element array or a CUDA tensor costs what a small one
    does and no device is synchronised. A 0-d array on the CPU (a numpy scalar is
    one) is read with ``item()``: that copies one number and syncs nothing.
    """
    if isinstance(value, _NOT_ARRAYS):
        return None
    try:
        shape = getattr(value, "shape", None)
        if not isinstance(shape, (tuple, list)) or len(shape) > _MAX_DIMS:
            return None  # a shape is a tuple (torch.Size is one); a Mock's or a DataFrame's attribute is not
        dtype = getattr(value, "dtype", None)
        if dtype is None:
            return None
        summary = _ArraySummary()
        summary.shape = [_dim(d) for d in shape]
        summary.dtype = _metadata_text(dtype)
        summary.type_name = _type_name(value)
        device = getattr(value, "device", None)
        if device is not None:
            summary.device = _metadata_text(device)
        nbytes = getattr(value, "nbytes", None)
        if isinstance(nbytes, int) and not isinstance(nbytes, bool):
            summary.nbytes = int(nbytes)
        else:
            itemsize = getattr(dtype, "itemsize", None)
            if isinstance(itemsize, int) and all(d >= 0 for d in summary.shape):
                size = itemsize
                for d in summary.shape:
                    size *= d
                summary.nbytes = size
    except Exception:
        return None
    if not summary.shape and summary.device in (None, "cpu"):
        # Only on the CPU: item() on a CUDA tensor waits for the device.
        try:
            item = value.item()
        except Exception:
            item = None
        if type(item) in (bool, int, float):
            summary.scalar = item
    return summary


def _dim(d: Any) -> int:
    if type(d) is int:
        return d
    try:
        return int(d)  # a numpy integer; an unknown (None) or NaN dimension is -1
    except Exception:
        return -1
