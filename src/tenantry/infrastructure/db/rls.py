"""Row level security DDL, shared by the migrations of every tenant-owned table.

Migrations import these on purpose: each new tenant table calls :func:`enable_tenant_rls` and
:func:`grant_to_app` (or :func:`grant_append_only_to_app`), and the catalog test fails the suite
when one forgets.
"""

from __future__ import annotations

from collections.abc import Iterable

APP_ROLE = "tenantry_app"
# Owns the SECURITY DEFINER functions (migrations 0009_task_sweeps, 0011_audit_events): logs in
# never; one policy on tasks, DELETE on audit_events under the tenant policy.
MAINTENANCE_ROLE = "tenantry_maintenance"
POLICY = "tenant_isolation"
# After a transaction-local SET ends the setting reads as '': NULLIF turns that into "no tenant".
TENANT_PREDICATE = "tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid"


def create_app_role() -> list[str]:
    """The role the API and workers log in as: owns nothing, is no superuser, cannot bypass RLS.

    Its password, where the server asks for one, is the operator's:
    ``ALTER ROLE tenantry_app PASSWORD '...'``.
    """
    attributes = "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"
    return [create_role(APP_ROLE, attributes), f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}"]


def create_role(name: str, attributes: str) -> str:
    """Roles are cluster-wide, so one is made only when missing. Two databases of one cluster
    migrating at once may both find it missing: the one that loses the race to create it has
    nothing left to do."""
    return f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN
                CREATE ROLE {name} {attributes};
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END
        $$
    """  # noqa: S608 - constant identifiers, no input


def grant_to_app(table: str) -> str:
    return f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {APP_ROLE}"


def grant_append_only_to_app(table: str) -> str:
    """Rows the app adds and reads but never changes or removes (the audit trail): refused by
    privilege, so no policy or statement of the app can weaken it."""
    return f"GRANT SELECT, INSERT ON {table} TO {APP_ROLE}"


def revoke_from_app(table: str) -> str:
    return f"REVOKE ALL ON {table} FROM {APP_ROLE}"


def enable_tenant_rls(table: str) -> list[str]:
    return [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        # FORCE: the table owner is held to the policy too, not only other roles.
        f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY {POLICY} ON {table} USING ({TENANT_PREDICATE}) "
        f"WITH CHECK ({TENANT_PREDICATE})",
    ]


def disable_tenant_rls(table: str) -> list[str]:
    return [
        f"DROP POLICY IF EXISTS {POLICY} ON {table}",
        f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
    ]


def hand_over_to_maintenance(signatures: Iterable[str]) -> list[str]:
    """Make the maintenance role the owner of these functions."""
    return as_maintenance_owner(
        f"ALTER FUNCTION {signature} OWNER TO {MAINTENANCE_ROLE}" for signature in signatures
    )


def as_maintenance_owner(statements: Iterable[str]) -> list[str]:
    """Run statements only the maintenance role's members may: handing it a function, or
    replacing one it owns. A superuser may do that outright; another owner (one with
    CREATEROLE, say on a managed server) needs to be able to SET ROLE to the maintenance role,
    which must be allowed to create in the schema: both are granted for this transaction and
    revoked before it ends."""
    lend = f"""
        DO $$
        BEGIN
            IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                EXECUTE format('GRANT {MAINTENANCE_ROLE} TO %I', current_user);
                GRANT CREATE ON SCHEMA public TO {MAINTENANCE_ROLE};
            END IF;
        END
        $$
    """  # noqa: S608 - constant identifiers, no input
    take_back = f"""
        DO $$
        BEGIN
            IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                REVOKE CREATE ON SCHEMA public FROM {MAINTENANCE_ROLE};
                EXECUTE format('REVOKE {MAINTENANCE_ROLE} FROM %I', current_user);
            END IF;
        END
        $$
    """  # noqa: S608 - constant identifiers, no input
    return [lend, *statements, take_back]
