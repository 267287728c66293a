"""tests/integration/test_erasure.py on the cluster: a tenant's erasure, table by table."""

from tests.integration.test_erasure import *  # noqa: F403
