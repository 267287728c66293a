"""UUIDv7 ids from the standard library (Python 3.14 has uuid.uuid7; 3.11 does not)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from uuid import UUID


def new_id() -> UUID:
    """A time-ordered UUID (RFC 9562 version 7): 48 bits of milliseconds, then randomness."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return UUID(int=value)


def id_time(value: UUID) -> datetime:
    """When a UUIDv7 was made (to the millisecond)."""
    return datetime.fromtimestamp((value.int >> 80) / 1000, UTC)
