"""`python -m tenantry` is the `tenantry` command."""

from tenantry.cli import main

main()
