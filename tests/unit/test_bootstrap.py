"""The composition root loads what the process is configured for, and nothing more."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# The client libraries of the optional backends: boto's and aiohttp's modules (S3) and hvac's
# (Vault) were a quarter of the CPU a process spent importing tenantry.bootstrap.
OPTIONAL_BACKENDS = ("aioboto3", "aiobotocore", "aiohttp", "boto3", "botocore", "hvac")

PROBE = """
import json, sys
from tenantry import bootstrap
from tenantry.config import load_settings

settings = load_settings(environ=dict(TENANTRY_DATA_DIR=sys.argv[1]), env_file=None)
bootstrap.create_storage(settings)
bootstrap.create_secrets(settings)
print(json.dumps(sorted(sys.modules)))
"""


def test_local_storage_and_environment_secrets_load_no_s3_or_vault_client(
    tmp_path: Path,
) -> None:
    """`tenantry serve`, `tenantry worker` and every test process start sooner without them."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TENANTRY_")}
    probe = [sys.executable, "-c", PROBE, str(tmp_path)]
    loaded = json.loads(subprocess.run(probe, capture_output=True, check=True, env=env).stdout)
    assert "tenantry.bootstrap" in loaded
    assert [name for name in loaded if name.split(".")[0] in OPTIONAL_BACKENDS] == []
