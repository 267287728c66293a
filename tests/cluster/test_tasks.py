"""tests/integration/test_tasks.py on the cluster."""

from tests.integration.test_tasks import *  # noqa: F403
