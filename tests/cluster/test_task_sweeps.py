"""tests/integration/test_task_sweeps.py on the cluster: the worker's cross-tenant maintenance."""

from tests.integration.test_task_sweeps import *  # noqa: F403
