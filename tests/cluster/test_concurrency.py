"""tests/integration/test_concurrency.py on the cluster."""

from tests.integration.test_concurrency import *  # noqa: F403
