"""What every tenant-owned entity's repository offers: the generic port and its list query.

A feature's port extends :class:`Repository` with what is its own (a task's claim, a file's
usage sum), or with nothing. Rows are one tenant's: the implementation is built for a tenant
and cannot read or write another's. For soft-deletable entities, deleted rows are invisible
unless ``include_deleted`` asks for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

import msgspec

T = TypeVar("T")


class ListQuery(msgspec.Struct, kw_only=True, frozen=True):
    """Paging and filters shared by the list endpoints of tenant data. ``q`` searches the
    entity's ``search_field``; ``order_by`` names a field, ``-`` first for descending."""

    limit: int = 20
    offset: int = 0
    q: str | None = None
    order_by: str = "-created_at"
    created_after: datetime | None = None
    created_before: datetime | None = None


def given(**values: Any) -> dict[str, Any]:
    """The fields of a partial update (a PATCH) that were given."""
    return {name: value for name, value in values.items() if value is not None}


class Repository(Protocol[T]):
    """One tenant's rows of ``T``. ``where`` narrows by equality on fields (a document's
    ``project_id``, say)."""

    async def get(
        self, id: UUID, /, *, include_deleted: bool = False, **where: Any
    ) -> T | None: ...

    async def count(self, *, include_deleted: bool = False, **where: Any) -> int: ...

    async def add(self, **values: Any) -> T:
        """Insert one row; its id (unless given), tenant, version and times are filled in."""
        ...

    async def add_at_commit(self, **values: Any) -> T:
        """The row :meth:`add` would insert, inserted by the commit of the transaction, in its
        round trip: for a new row nothing reads before the commit. Its refusal (a NUL in a
        text, a reference gone) fails the commit, and none of the transaction is written."""
        ...

    async def add_many(self, rows: Sequence[Mapping[str, Any]]) -> list[T]: ...

    async def update(
        self,
        id: UUID,
        changes: Mapping[str, Any],
        /,
        *,
        expected_version: int | None = None,
        **where: Any,
    ) -> T | None:
        """Apply ``changes`` and bump the version (for versioned entities); None when there is
        no such row. With ``expected_version``, raise ``StaleVersion`` when the row has moved
        on: of two writers holding the same version, exactly one wins."""
        ...

    async def update_with_before(
        self,
        id: UUID,
        changes: Mapping[str, Any],
        /,
        *,
        expected_version: int | None = None,
        **where: Any,
    ) -> tuple[T, T] | None:
        """:meth:`update`, answering the row as it was and as it is now, ``(before, after)``:
        an audit trail's change in the update's own statement, not a read before it."""
        ...

    async def soft_delete(self, id: UUID, /, at: datetime, **where: Any) -> T | None:
        """Mark the live row deleted; the row as it now is, None when there was none (another
        delete went first). A use case that may not delete it raises, and its transaction
        undoes the delete: who may is known from the row the delete answers, not a read first."""
        ...

    async def soft_delete_all_at_commit(self, at: datetime, **where: Any) -> None:
        """Mark every live row matching ``where`` deleted, by the commit of the transaction, in
        its round trip (as :meth:`add_at_commit` adds a row): for rows that go with another
        whose own delete answered (a project's documents)."""
        ...

    async def delete(self, id: UUID, /, **where: Any) -> bool:
        """Remove the row for good."""
        ...

    async def list(
        self, query: ListQuery, /, *, include_deleted: bool = False, **where: Any
    ) -> tuple[list[T], int]:
        """A page in the query's order, and the total of rows matching its filters."""
        ...
