"""Domain errors. The presentation layer maps each kind to one HTTP status."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class DomainError(Exception):
    """Base of every error a use case raises on purpose."""

    def __init__(self, detail: str, *, fields: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fields = fields or {}


class NotFound(DomainError):
    """The thing does not exist, or the caller may not know that it exists."""


class Conflict(DomainError):
    """The request clashes with the current state (a taken slug, a stale version)."""


class Forbidden(DomainError):
    """The caller is known but may not do this."""


class Invalid(DomainError):
    """The input breaks a domain rule; ``fields`` names the offending fields."""


class Unauthenticated(DomainError):
    """No valid credential. One message for every cause, so failures reveal nothing."""


INVALID_CREDENTIALS = "Invalid or expired credentials."


class RateLimited(DomainError):
    """Too many attempts; try again after ``retry_after`` seconds."""

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class StaleVersion(DomainError):
    """The write was based on a version that is no longer current (optimistic concurrency)."""


class Unavailable(DomainError):
    """A dependency (the database, the object store) cannot be reached right now; the same
    request may well succeed shortly. ``detail`` names it for the log, not for the client."""


def found(value: T | None, message: str) -> T:
    """``value``, or :class:`NotFound` with ``message`` when there is none."""
    if value is None:
        raise NotFound(message)
    return value
