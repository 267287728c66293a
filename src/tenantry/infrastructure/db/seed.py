"""Realistic demo and benchmark data, written fast: bulk inserts, one transaction per tenant."""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from tenantry.domain.users import Role
from tenantry.infrastructure.db.documents import DocumentModel
from tenantry.infrastructure.db.projects import ProjectModel
from tenantry.infrastructure.db.tenancy import bind_tenant
from tenantry.infrastructure.db.tenants import TenantModel
from tenantry.infrastructure.db.users import UserModel

WORDS = [
    "apollo",
    "artemis",
    "borealis",
    "cobalt",
    "delta",
    "ember",
    "falcon",
    "granite",
    "harbor",
    "indigo",
    "juniper",
    "kestrel",
    "lumen",
    "meridian",
    "nimbus",
    "onyx",
    "polaris",
    "quartz",
    "raven",
    "sierra",
    "tundra",
    "umber",
    "vega",
    "willow",
    "xenon",
    "yarrow",
    "zephyr",
    "roadmap",
    "launch",
    "budget",
    "research",
    "hiring",
    "audit",
    "migration",
    "onboarding",
    "pricing",
]
CHUNK = 1000


class SeedReport(msgspec.Struct, kw_only=True):
    tenants: int = 0
    skipped: int = 0
    projects: int = 0
    documents: int = 0
    slugs: list[str] = msgspec.field(default_factory=list)


def _phrase(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize()


async def _insert(session: AsyncSession, model: type[Any], rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), CHUNK):
        await session.execute(insert(model), rows[start : start + CHUNK])


async def seed(
    sessions: Callable[[], AbstractAsyncContextManager[AsyncSession]],
    *,
    tenants: int,
    projects: int,
    documents: int,
    password_hash: str,
    prefix: str = "seed",
    rng: random.Random | None = None,
) -> SeedReport:
    """``tenants`` tenants named ``<prefix>-0001`` ..., each with an owner
    ``owner@<slug>.example`` and ``projects`` projects of ``documents`` documents.
    Tenants that already exist are left as they are, so seeding twice adds nothing."""
    rng = rng or random.Random(7)  # noqa: S311 - demo data, not secrets
    report = SeedReport()
    now = datetime.now(UTC)
    for number in range(1, tenants + 1):
        slug = f"{prefix}-{number:04d}"
        async with sessions() as session:
            if await session.scalar(select(TenantModel.id).where(TenantModel.slug == slug)):
                report.skipped += 1
                continue
            tenant = TenantModel(id=uuid7(), name=f"{prefix.title()} Tenant {number}", slug=slug)
            session.add(tenant)
            await session.flush()
            bind_tenant(session, tenant.id)
            owner = UserModel(
                id=uuid7(),
                tenant_id=tenant.id,
                username="owner",
                email=f"owner@{slug}.example",
                password_hash=password_hash,
                roles=[Role.OWNER.value],
                settings={},
                is_active=True,
            )
            session.add(owner)
            await session.flush()
            project_rows: list[dict[str, Any]] = []
            document_rows: list[dict[str, Any]] = []
            for _ in range(projects):
                created = now - timedelta(minutes=rng.randint(0, 525_600))
                project_id = uuid7()
                project_rows.append(
                    {
                        "id": project_id,
                        "tenant_id": tenant.id,
                        "owner_id": owner.id,
                        "name": _phrase(rng, 3),
                        "description": _phrase(rng, 12),
                        "version": 1,
                        "created_at": created,
                        "updated_at": created,
                    }
                )
                document_rows.extend(
                    {
                        "id": uuid7(),
                        "tenant_id": tenant.id,
                        "project_id": project_id,
                        "created_by": owner.id,
                        "title": _phrase(rng, 4),
                        "content": _phrase(rng, 60),
                        "meta": {"words": 60, "tags": [rng.choice(WORDS)]},
                        "version": 1,
                        "created_at": created,
                        "updated_at": created,
                    }
                    for _ in range(documents)
                )
            await _insert(session, ProjectModel, project_rows)
            await _insert(session, DocumentModel, document_rows)
            await session.commit()
        report.tenants += 1
        report.projects += len(project_rows)
        report.documents += len(document_rows)
        report.slugs.append(slug)
    return report
