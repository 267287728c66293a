"""tests/integration/test_projects.py on the cluster."""

from tests.integration.test_projects import *  # noqa: F403
