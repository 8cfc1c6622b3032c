"""Log correlation: trace and span ids on log records, through filters, the installer and threads."""

from __future__ import annotations

import io
import itertools
import logging
import logging.handlers
import queue
import threading
from collections.abc import Iterator

import pytest

import autotrace
from autotrace import logs
from autotrace.context import ContextThread
from autotrace.propagation import extract, inject

_names = itertools.count()


@pytest.fixture
def stream_logger() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    """A private logger writing to a StringIO; the log record factory is restored afterwards."""
    factory = logging.getLogRecordFactory()
    logger = logging.getLogger(f"autotrace-test-{next(_names)}")  # never reused: ids of freed objects are
    logger.setLevel(logging.INFO)
    # Propagating on purpose: pytest >= 9.2 adds its capture handler to every non-propagating
    # logger, and install(logger, fmt) would then set that shared handler's format too.
    logger.propagate = True
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger.addHandler(handler)
    yield logger, out, handler
    logs.uninstall()
    logging.setLogRecordFactory(factory)
    logger.handlers.clear()


def test_filter_adds_ids_inside_a_span(stream_logger: tuple[logging.Logger, io.StringIO, logging.Handler]) -> None:
    """With the filter on a handler, records logged in a span carry its ids and sampled flag."""
    logger, out, handler = stream_logger
    handler.addFilter(logs.TraceContextFilter())
    handler.setFormatter(logging.Formatter("%(trace_id)s %(span_id)s %(trace_sampled)s %(message)s"))
    with autotrace.span("op") as s:
        logger.info("inside")
    logger.info("outside")
    assert out.getvalue().splitlines() == [
        f"{s.trace_id} {s.span_id} True inside",
        f"{'0' * 32} {'0' * 16} False outside",
    ]


def test_filter_never_drops_records() -> None:
    """The filter always keeps the record."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert logs.TraceContextFilter().filter(record) is True


def test_install_format_works_everywhere(stream_logger: tuple[logging.Logger, io.StringIO, logging.Handler]) -> None:
    """install(logger, fmt) makes %(trace_id)s work for the logger and for records from its children."""
    logger, out, _ = stream_logger
    returned = logs.install(logger, fmt="%(trace_id)s|%(span_id)s|%(name)s|%(message)s")
    assert returned is logger
    child = logger.getChild("child")
    with autotrace.span("op") as s:
        logger.info("a")
        child.info("b")
    lines = out.getvalue().splitlines()
    assert lines == [f"{s.trace_id}|{s.span_id}|{logger.name}|a", f"{s.trace_id}|{s.span_id}|{child.name}|b"]


def test_install_adds_a_handler_when_there_is_none() -> None:
    """A logger without handlers gets a stderr handler using DEFAULT_FORMAT."""
    factory = logging.getLogRecordFactory()
    logger = logging.getLogger("autotrace-test-no-handler")
    try:
        logs.install(logger)
        (handler,) = logger.handlers
        assert isinstance(handler, logging.StreamHandler)
        assert handler.formatter is not None and handler.formatter._fmt == logs.DEFAULT_FORMAT
        logs.install(logger)  # idempotent: still one handler, one factory wrap
        assert len(logger.handlers) == 1
    finally:
        logs.uninstall()
        logging.setLogRecordFactory(factory)
        logger.handlers.clear()


def test_install_rejects_a_bad_format(stream_logger: tuple[logging.Logger, io.StringIO, logging.Handler]) -> None:
    """A format that cannot render fails at install time with a ValueError naming it."""
    logger, _, _ = stream_logger
    with pytest.raises(ValueError, match="fmt"):
        logs.install(logger, fmt="%(no_such_field)s")


def test_uninstall_restores_the_record_factory() -> None:
    """uninstall() puts back the factory install() wrapped."""
    factory = logging.getLogRecordFactory()
    logger = logging.getLogger("autotrace-test-uninstall")
    logger.addHandler(logging.NullHandler())
    try:
        logs.install(logger)
        assert logging.getLogRecordFactory() is not factory
        logs.uninstall()
        assert logging.getLogRecordFactory() is factory
    finally:
        logging.setLogRecordFactory(factory)
        logger.handlers.clear()


def test_records_from_other_threads(stream_logger: tuple[logging.Logger, io.StringIO, logging.Handler]) -> None:
    """Each thread's records carry that thread's span, whatever the other threads do."""
    logger, out, _ = stream_logger
    logs.install(logger, fmt="%(trace_id)s %(message)s")
    barrier = threading.Barrier(2, timeout=30)
    with autotrace.span("request") as s:
        carried = ContextThread(target=lambda: (barrier.wait(), logger.info("carried")))
    plain = threading.Thread(target=lambda: (barrier.wait(), logger.info("plain")))
    carried.start()
    plain.start()
    carried.join(30)
    plain.join(30)
    lines = sorted(out.getvalue().splitlines(), key=lambda line: line.split()[1])
    assert lines == [f"{s.trace_id} carried", f"{'0' * 32} plain"]


def test_queue_handler_keeps_the_logging_threads_ids(
    stream_logger: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    """Records handed to a QueueListener keep the ids of the thread that logged them."""
    logger, out, handler = stream_logger
    handler.addFilter(logs.TraceContextFilter())  # runs in the listener thread: must not overwrite
    handler.setFormatter(logging.Formatter("%(trace_id)s %(message)s"))
    logger.removeHandler(handler)
    q: queue.Queue[logging.LogRecord] = queue.Queue()
    queue_handler = logging.handlers.QueueHandler(q)
    queue_handler.addFilter(logs.TraceContextFilter())  # runs in the logging thread
    logger.addHandler(queue_handler)
    listener = logging.handlers.QueueListener(q, handler)
    listener.start()
    try:
        with autotrace.span("op") as s:
            logger.info("queued")
    finally:
        listener.stop()
    assert out.getvalue().splitlines() == [f"{s.trace_id} queued"]


def test_unsampled_trace_ids_match_propagation(
    stream_logger: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    """In an unsampled trace the logged ids are the ones sent to other services, with sampled False."""
    autotrace.configure(autotrace.TraceConfig(sample_rate=0.0))
    logger, out, _ = stream_logger
    logs.install(logger, fmt="%(trace_id)s %(span_id)s %(trace_sampled)s")

    @autotrace.traced
    def handler() -> dict[str, str]:
        logger.info("x")
        return inject()

    ctx = extract(handler())
    assert ctx is not None
    assert out.getvalue().strip() == f"{ctx.trace_id_hex} {ctx.span_id_hex} False"
