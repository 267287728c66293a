"""tests/integration/test_webhooks.py on the cluster: the claim and purge across tenants."""

from tests.integration.test_webhooks import *  # noqa: F403
