"""tests/integration/test_tenancy.py on the cluster."""

from tests.integration.test_tenancy import *  # noqa: F403
