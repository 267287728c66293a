"""The first wall has one author: infrastructure/db/tenancy.py writes the tenant predicate, and
every statement elsewhere starts from it (``of_tenant``, a repository's ``scoped`` or
``update_rows``). Read from the source: a predicate written by hand anywhere else fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tenantry

SOURCE = Path(tenantry.__file__).parent
INFRASTRUCTURE = SOURCE / "infrastructure"
# Where the predicate is written, and where the policies' SQL states it for the second wall.
AUTHORS = {INFRASTRUCTURE / "db" / "tenancy.py", INFRASTRUCTURE / "db" / "rls.py"}
COLUMN = "tenant_id"


def rooted_at_self(node: ast.expr) -> bool:
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id == "self"


def is_tenant_column(node: ast.expr) -> bool:
    """``Model.tenant_id`` or ``table.c.tenant_id``; ``self.tenant_id`` is a value, not a column."""
    return isinstance(node, ast.Attribute) and node.attr == COLUMN and not rooted_at_self(node)


def is_column(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and not rooted_at_self(node)


def tenant_predicates(tree: ast.AST) -> list[int]:
    """Lines that filter on the tenant column: compared with a value (a name, a call such as
    bindparam, a constant, an attribute of self), tested with in_/is_, or given to filter_by.
    A comparison of two columns is a join and not counted."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and len(node.comparators) == 1:
            left, right = node.left, node.comparators[0]
            for column, value in ((left, right), (right, left)):
                if is_tenant_column(column) and not is_column(value):
                    lines.append(node.lineno)
                    break
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method, of = node.func.attr, node.func.value
            tested = method in {"in_", "is_", "not_in", "notin_"} and is_tenant_column(of)
            filtered = method == "filter_by" and any(k.arg == COLUMN for k in node.keywords)
            if tested or filtered:
                lines.append(node.lineno)
    return lines


def test_no_tenant_predicate_is_written_outside_the_base() -> None:
    written = {
        f"{path.relative_to(SOURCE)}:{line}"
        for path in INFRASTRUCTURE.rglob("*.py")
        if path not in AUTHORS
        for line in tenant_predicates(ast.parse(path.read_text(), str(path)))
    }
    assert written == set(), "use of_tenant(), scoped() or update_rows() from db/tenancy.py"


@pytest.mark.parametrize(
    "statement",
    [
        "update(Task).where(Task.tenant_id == self.tenant_id)",
        "select(Task).where(self.repository.tenant_id == Task.tenant_id)",
        "select(t).where(t.c.tenant_id == bindparam('tenant_id'))",
        "select(Task).where(Task.tenant_id == tenant_id)",
        "select(Task).where(Task.tenant_id != None)",
        "select(Task).where(Task.tenant_id.in_(tenants))",
        "session.query(Task).filter_by(tenant_id=tenant_id)",
    ],
)
def test_a_hand_written_predicate_is_found(statement: str) -> None:
    assert tenant_predicates(ast.parse(statement)) == [1]


@pytest.mark.parametrize(
    "statement",
    [
        "select(User).join(Tenant, Tenant.id == User.tenant_id)",
        "select(Doc).join(Project, Project.tenant_id == Doc.tenant_id)",
        "select(Task).where(of_tenant(Task, self.tenant_id))",
        "Repository(session=session, tenant_id=tenant_id)",
        "if self.tenant_id == other: pass",
    ],
)
def test_joins_and_the_bases_own_calls_are_not_predicates(statement: str) -> None:
    assert tenant_predicates(ast.parse(statement)) == []
