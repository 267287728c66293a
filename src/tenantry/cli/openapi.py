"""``tenantry openapi``: the HTTP contract, committed as docs/openapi.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

DEFAULT_PATH = Path("docs/openapi.json")


@click.command()
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_PATH,
    show_default=True,
    help="Where the document goes ('-': standard output).",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when the file is not current.")
@click.option(
    "--breaking-against",
    "released",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Write nothing; exit 1 when the API breaks clients of this (released) document.",
)
def openapi(output: Path, check: bool, released: Path | None) -> None:
    """Write the API's OpenAPI document (built-in task types only), or check that the
    committed one is current. Run it after changing the API, and commit the result."""
    from tenantry.bootstrap import openapi_document

    document = openapi_document()
    if released is not None:
        from tenantry.cli.contract import breaking_changes

        changes = breaking_changes(json.loads(released.read_text()), json.loads(document))
        for change in changes:
            click.echo(change)
        if changes:
            raise click.ClickException(f"{len(changes)} breaking changes against {released}")
        click.echo(f"nothing breaks clients of {released}")
        return
    if str(output) == "-":
        sys.stdout.buffer.write(document)
        return
    if check:
        current = output.read_bytes() if output.is_file() else b""
        if current != document:
            raise click.ClickException(
                f"{output} is not the current contract: run `uv run tenantry openapi` and commit it"
            )
        click.echo(f"{output} is current.")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(document)
    click.echo(f"wrote {output}")
