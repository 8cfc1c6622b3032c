"""Per-span limits in force, set by ``configure()`` and read where spans are written."""

from __future__ import annotations


class Limits:
    """The limits OpenTelemetry calls SpanLimits, plus spans per trace."""

    __slots__ = (
        "max_attribute_length",
        "max_attributes",
        "max_events",
        "max_links",
        "max_name_length",
        "max_sequence_length",
        "max_spans_per_trace",
    )

    def __init__(self) -> None:
        self.max_attributes = 128
        self.max_events = 128
        self.max_links = 128
        self.max_attribute_length: int | None = None
        self.max_spans_per_trace = 10_000
        self.max_name_length = 1024  # span and event names
        self.max_sequence_length = 1024  # items of one list or tuple attribute value


# One mutable instance, read on every write: configure() updates it in place so
# that modules holding a reference see the new values.
LIMITS = Limits()
