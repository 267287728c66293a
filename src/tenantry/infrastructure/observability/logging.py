"""structlog for our own lines and for every standard-library logger (uvicorn, SQLAlchemy, arq).

Context bound with ``structlog.contextvars`` (``request_id``, ``tenant_id``, ``user_id``) is
merged into every line, ours and foreign, written while that context is active.

Our own lines take structlog's native path: a filtering bound logger (a call below the level is
a no-op), a handful of processors, msgspec's JSON and one write; the standard library's record
machinery is only for foreign loggers. Both render through the same :class:`LineWriter`, so a
line has the same fields whoever wrote it. A request's access line is written on every call,
which is why this path is kept short.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from tenantry.config import Settings

_json = msgspec.json.Encoder()

# Loggers that install their own handlers or are too chatty at INFO.
_ROUTED_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "sqlalchemy",
    "arq",
    "litestar",
    "alembic",
)


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # uvicorn duplicates its message with ANSI codes in an extra field.
    event_dict.pop("color_message", None)
    return event_dict


# Never show_locals: a frame's locals hold passwords, tokens and hashes.
_render_exception = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)
# What structlog's add_log_level calls the levels of these methods.
_LEVEL_OF_METHOD = {"warn": "warning", "exception": "error"}


def _render_json(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> bytes:
    if "exc_info" in event_dict:
        event_dict = _render_exception(logger, method_name, event_dict)
    event_dict["message"] = event_dict.pop("event", None)
    return _json.encode(event_dict)


def _timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # A datetime, which msgspec writes as RFC 3339 in UTC ("2026-12-03T16:41:25.123456Z", what
    # structlog's ISO TimeStamper writes) without formatting a string first.
    event_dict["timestamp"] = datetime.now(UTC)
    return event_dict


def _level_name_time(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """add_log_level, add_logger_name and _timestamp in one call, for our own lines."""
    event_dict["level"] = _LEVEL_OF_METHOD.get(method_name, method_name)
    event_dict["logger"] = logger.name
    event_dict["timestamp"] = datetime.now(UTC)
    return event_dict


def _timestamp_text(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    if isinstance(stamp := event_dict.get("timestamp"), datetime):
        event_dict["timestamp"] = stamp.isoformat().replace("+00:00", "Z")
    return event_dict


def _encode(_: WrappedLogger, __: str, line: Any) -> bytes:
    # Placed after the console's renderer: ``line`` is its text.
    return str(line).encode()


def _decode(_: WrappedLogger, __: str, line: Any) -> str:
    # Placed after a writer's renderers, whose ``line`` is bytes: a logging.Formatter returns text.
    return bytes(line).decode()


def _shared_processors() -> list[Processor]:
    """What every line gets, before it is rendered: context, level, logger name, time."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        _timestamp,
    ]


def _renderers(stream: BinaryIO, *, json: bool) -> list[Processor]:
    """From an event dict to the bytes of its line."""
    if json:
        return [_render_json]
    colors = stream.isatty()
    return [
        _timestamp_text,
        structlog.dev.ConsoleRenderer(
            colors=colors,
            # Rich highlights each frame's whole source file: a second or more of CPU per
            # traceback, on the event loop. Worth it for a person at a terminal only; a pipe
            # (CI, a container's log) gets Python's plain traceback. Neither shows frames'
            # locals (rich would by default): they can hold secrets.
            exception_formatter=structlog.dev.RichTracebackFormatter(
                color_system="truecolor", show_locals=False
            )
            if colors
            else structlog.dev.plain_traceback,
        ),
        _encode,
    ]


class LineWriter:
    """Renders event dicts one way (JSON or the console's) and writes them to one binary
    stream, a line each, flushed: structlog's lines directly, the standard library's through
    :meth:`handler`."""

    def __init__(self, stream: BinaryIO, *, json: bool) -> None:
        self.stream = stream
        self.renderers = _renderers(stream, json=json)
        self.lock = threading.Lock()

    def render(self, event_dict: EventDict) -> bytes:
        line: Any = event_dict
        for render in self.renderers:
            line = render(None, "", line)
        return cast("bytes", line)

    def write(self, line: bytes) -> None:
        with self.lock:
            self.stream.write(line + b"\n")
            self.stream.flush()

    def handler(self) -> logging.Handler:
        """A standard-library handler that renders foreign records as this writer does."""
        return _ForeignHandler(self)


class _ForeignHandler(logging.Handler):
    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer
        self.formatter = structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *_shared_processors(),
                structlog.stdlib.ExtraAdder(),
                _drop_color_message,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *writer.renderers,
                _decode,
            ],
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.write(self.format(record).encode())
        except Exception:  # noqa: BLE001 - what logging.Handler.emit does: report, go on
            self.handleError(record)


# Where structlog's lines go. Loggers are cached on first use, so they reach the writers through
# this list rather than holding one: a test can add a writer after they were first used.
_WRITERS: list[LineWriter] = []


def _write(event_dict: EventDict) -> None:
    if len(_WRITERS) == 1:
        writer = _WRITERS[0]
        writer.write(writer.render(event_dict))
        return
    for writer in _WRITERS:
        # Each rendering pops what it renders (the exception, the event).
        writer.write(writer.render(dict(event_dict)))


class NamedLogger:
    """structlog's wrapped logger: named (the ``logger`` field), hands each event to the
    writers."""

    __slots__ = ("name",)

    def __init__(self, name: str | None = None, *_: Any) -> None:
        self.name = name or "tenantry"

    def msg(self, event_dict: EventDict) -> None:
        _write(event_dict)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


class AccessLines:
    """The access line of each request, a line of logger ``tenantry.access`` with the fields a
    structlog call would give it, handed straight to the writers. It is the one line every
    request writes, and structlog's general path around it (bound context copied, processors
    called, every context variable walked for structlog's) cost more than the line itself."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = logging.getLevelNamesMapping()[settings.log_level] <= logging.INFO

    def write(self, fields: dict[str, Any]) -> None:
        if not self.enabled:
            return
        fields["event"] = "request"
        fields["level"] = "info"
        fields["logger"] = "tenantry.access"
        fields["timestamp"] = datetime.now(UTC)
        _write(fields)


def _to_writers(_: WrappedLogger, __: str, event_dict: EventDict) -> Any:
    # (args, kwargs) for the wrapped logger's method: the event dict as one argument.
    return (event_dict,), {}


def configure_logging(settings: Settings, stream: BinaryIO | None = None) -> None:
    writer = LineWriter(stream or sys.stdout.buffer, json=settings.json_logs)
    _WRITERS[:] = [writer]
    structlog.configure(
        # The shared processors, fewer calls: every request writes a line through these.
        processors=[structlog.contextvars.merge_contextvars, _level_name_time, _to_writers],
        logger_factory=NamedLogger,
        wrapper_class=structlog.make_filtering_bound_logger(settings.log_level),
        cache_logger_on_first_use=True,
    )
    # Foreign lines show their own fields only, so the standard library need not look up the
    # caller's frame, thread or process for each record: the logging HOWTO's "Optimization".
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers = [writer.handler()]
    root.setLevel(settings.log_level)
    for name in _ROUTED_LOGGERS:
        routed = logging.getLogger(name)
        routed.handlers.clear()
        routed.propagate = True
    # We write one access line per request ourselves, with the route template and request id.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    logging.getLogger("sqlalchemy.engine").setLevel(
        logging.INFO if settings.log_sql else logging.WARNING
    )


@contextlib.contextmanager
def captured(stream: BinaryIO) -> Iterator[None]:
    """Every line, ours and foreign, also written to ``stream`` as JSON while the block runs."""
    writer = LineWriter(stream, json=True)
    handler = writer.handler()
    _WRITERS.append(writer)
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        _WRITERS.remove(writer)
