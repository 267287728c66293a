"""The log pipeline's rendering, without I/O beyond a string buffer."""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Any

import structlog

from tenantry.config import load_settings
from tenantry.infrastructure.observability.logging import LineWriter, configure_logging


def sign_in(password: str) -> None:
    raise ValueError("refused")


def test_a_console_traceback_shows_no_frame_locals() -> None:
    stream = io.BytesIO()
    logger = logging.getLogger("tenantry.test.console")
    logger.addHandler(LineWriter(stream, json=False).handler())
    logger.propagate = False
    # Built at run time: the traceback shows source lines, which must not be what gives it away.
    password = "-".join(["hunter2", "Secret", "99"])
    try:
        sign_in(password)
    except ValueError:
        logger.exception("unhandled error")
    finally:
        logger.handlers.clear()
    written = stream.getvalue().decode()
    assert "ValueError: refused" in written
    assert "sign_in" in written  # the traceback is there, its frames' variables are not
    assert password not in written
    # Not a terminal: Python's own traceback, not rich's (which highlights whole files).
    assert re.search(r'^  File ".*test_logging\.py", line \d+, in sign_in$', written, re.M)


def json_lines(stream: io.BytesIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_our_lines_and_foreign_lines_carry_the_same_fields() -> None:
    stream = io.BytesIO()
    configure_logging(load_settings(environ={"TENANTRY_LOG_JSON": "true"}, env_file=None), stream)
    try:
        with structlog.contextvars.bound_contextvars(request_id="r-1", tenant_id="t-1"):
            structlog.get_logger("tenantry.test.ours").info("ours", answer=42)
            logging.getLogger("tenantry.test.foreign").warning("foreign %s", "args")
        structlog.get_logger("tenantry.test.ours").debug("below the level: never rendered")
    finally:
        configure_logging(load_settings(environ={}, env_file=None))
    ours, foreign = json_lines(stream)
    assert ours["message"] == "ours"
    assert ours["answer"] == 42
    assert foreign["message"] == "foreign args"
    assert (ours["level"], foreign["level"]) == ("info", "warning")
    assert (ours["logger"], foreign["logger"]) == ("tenantry.test.ours", "tenantry.test.foreign")
    for line in (ours, foreign):
        assert line["request_id"] == "r-1"
        assert line["tenant_id"] == "t-1"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line["timestamp"])


def test_an_exception_is_rendered_as_structured_frames_without_locals() -> None:
    stream = io.BytesIO()
    configure_logging(load_settings(environ={"TENANTRY_LOG_JSON": "true"}, env_file=None), stream)
    password = "-".join(["hunter2", "Secret", "98"])
    try:
        try:
            sign_in(password)
        except ValueError:
            structlog.get_logger("tenantry.test.failing").exception("unhandled error")
    finally:
        configure_logging(load_settings(environ={}, env_file=None))
    (line,) = json_lines(stream)
    assert line["level"] == "error"
    assert line["exception"][0]["exc_type"] == "ValueError"
    assert password not in stream.getvalue().decode()
