"""The log pipeline's rendering, without I/O beyond a string buffer."""

from __future__ import annotations

import io
import logging

from tenantry.infrastructure.observability.logging import build_handler


def sign_in(password: str) -> None:
    raise ValueError("refused")


def test_a_console_traceback_shows_no_frame_locals() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("tenantry.test.console")
    logger.addHandler(build_handler(stream, json=False))
    logger.propagate = False
    # Built at run time: the traceback shows source lines, which must not be what gives it away.
    password = "-".join(["hunter2", "Secret", "99"])
    try:
        sign_in(password)
    except ValueError:
        logger.exception("unhandled error")
    finally:
        logger.handlers.clear()
    written = stream.getvalue()
    assert "ValueError: refused" in written
    assert "sign_in" in written  # the traceback is there, its frames' variables are not
    assert password not in written
