"""An API key's uploads on the cluster: the key's check at the row reaches the tenant's shard
(the rest of tests/integration/test_api_keys.py reads and writes the keys themselves, which the
cluster does not change)."""

from tests.integration.test_api_keys import (  # noqa: F401 - collected from here
    test_a_key_uploads_files_small_and_held_ahead,
)
