"""The audit trail's retention purge (the maintenance role's function, tenant by tenant) on the
cluster."""

from tests.integration.test_audit_rows import (  # noqa: F401 - fixtures the tests take
    tenants,
    test_the_database_refuses_to_purge_the_last_day,
    test_the_purge_use_case_removes_every_tenants_aged_events_as_the_app_role,
    units,
)
