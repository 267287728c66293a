"""What of tests/integration/test_webhooks.py the cluster changes: the outbox written with a
change, the claim and purge across tenants, and another tenant's view."""

from tests.integration.test_webhooks import (  # noqa: F401 - fixtures the tests take
    client,
    receiver,
    test_another_tenant_finds_nothing,
    test_changes_and_tasks_reach_the_receiver_signed_and_logged,
    test_the_purge_takes_finished_deliveries_past_the_retention_of_every_tenant,
    test_workers_claim_disjoint_deliveries_and_a_lapsed_lease_again,
)
