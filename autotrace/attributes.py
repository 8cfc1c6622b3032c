"""Attribute values: coercion to OpenTelemetry types, truncation and limits.

OpenTelemetry allows str, bool, int, float and homogeneous sequences of one of
those. Numbers of other libraries (numpy, torch scalars: anything with
``.item()``, ``__index__`` or ``__float__``) become bool, int or float without
importing those libraries; everything else is converted (to str, or to a list
of str), never raised on: a tracing library must not fail because a caller
passed an odd value.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator, Mapping
from typing import Any

from ._errors import reraise_foreign
from ._errors import safe_str as safe_str  # its old home
from ._limits import LIMITS, Limits

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_SCALARS = (str, bool, int, float)


def clean_name(name: object) -> str:
    """A span or event name as a str (anything else is converted), cut at ``max_name_length``."""
    if type(name) is not str:
        name = safe_str(name)
    limit = LIMITS.max_name_length
    return name if len(name) <= limit else name[:limit]


MAX_RANGE_ITEMS = 1024
"""A ``range`` with more items than this is stored as its repr, not expanded into a list."""


def _truncate(text: str, limit: int | None) -> str:
    if limit is not None and len(text) > limit:
        return text[:limit]
    return text


def coerce(value: Any, limit: int | None = None, max_items: int | None = None) -> Any:
    """Return ``value`` as a valid OpenTelemetry attribute value, or None to drop it.

    None is dropped, as OpenTelemetry does. Ints outside int64 become str, since
    OTLP's intValue is 64-bit. Sequences keep their first ``max_items`` items and
    their element type when all elements share one (None elements allowed);
    mixed ones become lists of str.
    """
    cls = type(value)
    if cls is str:
        return value if limit is None or len(value) <= limit else value[:limit]
    if cls is bool or cls is float:
        return value
    if cls is int:
        return value if _INT64_MIN <= value <= _INT64_MAX else str(value)
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return _coerce_sequence(value, limit, max_items)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return coerce(int(value), limit)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return _truncate(str.__str__(value), limit)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _truncate(bytes(value).decode("utf-8", "backslashreplace"), limit)
    if isinstance(value, range) and len(value) > MAX_RANGE_ITEMS:
        return _truncate(repr(value), limit)  # "range(0, 1000000000)": not a billion ints in memory
    if isinstance(value, (set, frozenset, range)):
        try:
            return _coerce_sequence(list(itertools.islice(value, max_items)), limit, None)
        except Exception as exc:
            reraise_foreign(exc)
    number = _number(value)
    if number is not None:
        return coerce(number, limit)
    return _truncate(safe_str(value), limit)


def _number(value: Any) -> bool | int | float | None:
    """A scalar number of another library (numpy, torch...) as bool, int or float; None for anything else.

    Duck-typed, so nothing is imported: a scalar with ``.item()`` (numpy
    scalars and 0-d arrays, 0-d tensors) gives its Python value (``np.bool_``
    gives a bool); else ``__index__`` gives an int, and ``__float__`` a float
    for a 0-d array of a library with no ``.item()``. Arrays with a shape stay
    text, and so do Decimal and Fraction (their text is exact, a float is not).
    """
    cls = type(value)
    try:
        if getattr(cls, "item", None) is not None:
            if getattr(value, "shape", ()) != ():
                return None  # an array of several items: its text says more than one number
            item = value.item()
            return item if type(item) in _NUMBERS else None
        if getattr(cls, "__index__", None) is not None:
            return operator.index(value)
        if getattr(cls, "__float__", None) is not None and getattr(value, "shape", None) == ():
            return float(value)
    except Exception as exc:
        reraise_foreign(exc)
    return None


_NUMBERS = (bool, int, float)


def _plain(item: Any) -> Any:
    """A sequence item as a plain str, bool, int or float when it is one (or a number); else itself."""
    if isinstance(item, str):
        return str.__str__(item)
    if isinstance(item, bool):
        return bool(item)
    if isinstance(item, int):
        return int(item)
    if isinstance(item, float):
        return float(item)
    number = _number(item)
    return item if number is None else number


def _coerce_sequence(seq: list[Any] | tuple[Any, ...], limit: int | None, max_items: int | None) -> list[Any]:
    if max_items is not None and len(seq) > max_items:
        seq = seq[:max_items]
    kinds = set()
    for item in seq:
        if item is None:
            continue
        cls = type(item)
        if cls not in _SCALARS:  # a subclass, or a number of another library: convert them all
            seq = [None if v is None else _plain(v) for v in seq]
            break
    for item in seq:
        if item is None:
            continue
        cls = type(item)
        kinds.add(cls if cls in _SCALARS else object)
    if len(kinds) == 1:
        (kind,) = kinds
        if kind is str:
            return [None if v is None else _truncate(v, limit) for v in seq]
        if kind is int:
            if all(v is None or _INT64_MIN <= v <= _INT64_MAX for v in seq):
                return list(seq)
        elif kind is not object:
            return list(seq)
    elif not kinds:
        return list(seq)
    return [None if v is None else _truncate(safe_str(v), limit) for v in seq]


def put(attrs: dict[str, Any], key: Any, value: Any, limits: Limits) -> bool:
    """Store one coerced value; False when the attribute limit refused it."""
    if type(key) is not str:
        key = safe_str(key)
    if not key:
        return True  # OpenTelemetry ignores empty keys; nothing to count
    try:
        value = coerce(value, limits.max_attribute_length, limits.max_sequence_length)
    except Exception as exc:
        reraise_foreign(exc)
        value = "<unconvertible>"
    if value is None:
        attrs.pop(key, None)
        return True
    if key not in attrs and len(attrs) >= limits.max_attributes:
        return False
    attrs[key] = value
    return True


def clean(attributes: Mapping[str, Any] | None, limits: Limits) -> tuple[dict[str, Any], int]:
    """Coerce a mapping into a new attribute dict; returns it and how many were dropped."""
    out: dict[str, Any] = {}
    dropped = 0
    if not attributes:
        return out, 0
    try:
        items = list(attributes.items())
    except Exception as exc:
        reraise_foreign(exc)
        return out, 0
    for key, value in items:
        if not put(out, key, value, limits):
            dropped += 1
    return out, dropped


class ReadOnlyDict(Mapping[str, Any]):
    """A read-only view of a span's attribute dict."""

    __slots__ = ("_d",)

    def __init__(self, d: dict[str, Any]) -> None:
        self._d = d

    def __getitem__(self, key: str) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return repr(self._d)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ReadOnlyDict):
            return self._d == other._d
        return self._d == other

    __hash__ = None  # type: ignore[assignment]


class SharedAttrs(dict[str, Any]):
    """An attribute dict shared by many spans (a decorator's static attributes).

    A span holding one copies it before its first write; a span whose dict is
    a plain ``dict`` owns it. The type is the mark, so spans need no flag.
    """

    __slots__ = ()


class FrozenAttrs(tuple[Any, ...]):
    """A finished span's own attributes, packed: ``(keys, value, value, ...)``.

    A 3-item dict is 184 bytes whatever it holds; this is 72, and the keys
    tuple is shared by every span that set the same keys in the same order.
    Read-only mapping; a finished span's attributes never change.
    """

    __slots__ = ()

    def _keys(self) -> tuple[str, ...]:
        keys: tuple[str, ...] = tuple.__getitem__(self, 0)
        return keys

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        try:
            index = self._keys().index(key)
        except ValueError:
            raise KeyError(key) from None
        return tuple.__getitem__(self, index + 1)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        return iter(self._keys())

    def __len__(self) -> int:
        return tuple.__len__(self) - 1

    def __contains__(self, key: object) -> bool:
        return key in self._keys()

    def keys(self) -> tuple[str, ...]:
        """The attribute keys, in the order they were set."""
        return self._keys()

    def values(self) -> tuple[Any, ...]:
        """The attribute values."""
        return tuple.__getitem__(self, slice(1, None))  # type: ignore[no-any-return]

    def items(self) -> Iterator[tuple[str, Any]]:
        """(key, value) pairs, in the order they were set."""
        return zip(self._keys(), self.values(), strict=True)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Mapping, FrozenAttrs)):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(dict(self.items()))


Mapping.register(FrozenAttrs)  # type: ignore[type-abstract]

_KEYS: dict[tuple[str, ...], tuple[str, ...]] = {}
_KEYS_LIMIT = 4096  # distinct key sequences interned; past it each span keeps its own tuple


def _shared_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    shared = _KEYS.get(keys)
    if shared is None:
        if len(_KEYS) < _KEYS_LIMIT:
            _KEYS[keys] = keys
        shared = keys
    return shared


def freeze(attrs: dict[str, Any]) -> FrozenAttrs:
    """Pack a finished span's own attribute dict (see FrozenAttrs)."""
    return FrozenAttrs((_shared_keys(tuple(attrs)), *attrs.values()))


INLINE = 3
_MASK64 = (1 << 64) - 1
"""A finished span keeps up to this many attributes of its own in its slots, not in an object of their own."""


def pack(span: Any) -> None:
    """Pack a finished span's own attribute dict (``span._attr_data``) into the span (see Span.__slots__).

    Up to INLINE values go in the span's slots ``_attr0``.. and ``_attr_data``
    becomes the keys tuple; more make a FrozenAttrs. Keys and values are read
    in one step each (C loops the GIL does not leave), so a write racing the
    end cannot pair a key with another key's value: a size that changed
    between the two reads packs a copy instead.
    """
    attrs = span._attr_data
    values = tuple(attrs.values())
    keys = tuple(attrs)
    n = len(values)
    if n != len(keys):  # written by another thread between the two reads
        attrs = dict(attrs)
        values = tuple(attrs.values())
        keys = tuple(attrs)
        n = len(values)
    if n > INLINE:
        span._attr_data = FrozenAttrs((_shared_keys(keys), *values))
        span._attr0 = None  # (its latest child while it was open, see Span.__slots__: let go)
    elif n == 3:
        span._attr0, span._attr1, span._attr2 = values
    elif n == 2:
        span._attr0, span._attr1 = values
    elif n == 1:
        span._attr0 = values[0]
    else:
        span._attr0 = None  # (as above)
    if n <= INLINE:
        span._attr_data = _shared_keys(keys)
    # Span id, start and end: three 64-bit ints of 36 bytes each become one of 52.
    # Only here, on spans that paid for attributes of their own (~70 ns more);
    # the others end without it. The three stores below are one straight run
    # (no call, no loop, and the ints they let go have no finalizer), so under
    # the GIL another thread sees all of them or none; and the packed int is
    # written first, so a reader of _span_id or _start finds it whenever the
    # plain one is gone.
    sid, start, end = span._sid, span._t0, span._t1
    if 0 < sid <= _MASK64 and 0 <= start <= end <= _MASK64:  # ints (made so where they are set)
        span._t1 = (sid << 128) | (start << 64) | end
        span._t0 = None
        span._sid = None
