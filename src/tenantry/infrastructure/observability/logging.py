"""structlog for our own lines and for every standard-library logger (uvicorn, SQLAlchemy, arq).

Context bound with ``structlog.contextvars`` (``request_id``, ``tenant_id``, ``user_id``) is
merged into every line, ours and foreign, written while that context is active.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

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


def _render_json(_: WrappedLogger, __: str, event_dict: EventDict) -> str:
    return _json.encode(event_dict).decode()


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def build_handler(stream: TextIO, *, json: bool) -> logging.Handler:
    """A handler that renders every record, structlog's or the standard library's, one way."""
    final: list[Processor]
    if json:
        final = [
            # Never show_locals: a frame's locals hold passwords, tokens and hashes.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.EventRenamer("message"),
            _render_json,
        ]
    else:
        colors = stream.isatty()
        final = [
            structlog.dev.ConsoleRenderer(
                colors=colors,
                # Rich tracebacks show every frame's locals by default: the same rule.
                exception_formatter=structlog.dev.RichTracebackFormatter(
                    color_system="truecolor" if colors else None, show_locals=False
                ),
            )
        ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    return handler


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    # Lines show their own fields only, so the standard library need not look up the caller's
    # frame, thread or process for each record: the logging HOWTO's "Optimization" settings,
    # about a third of the cost of the access line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers = [build_handler(stream or sys.stdout, json=settings.json_logs)]
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
