"""tests/integration/test_isolation.py on the cluster."""

from tests.integration.test_isolation import *  # noqa: F403
