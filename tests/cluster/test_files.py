"""tests/integration/test_files.py on the cluster."""

from tests.integration.test_files import *  # noqa: F403
