"""``tenantry openapi``: the HTTP contract, committed as docs/openapi.json."""

from __future__ import annotations

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
def openapi(output: Path, check: bool) -> None:
    """Write the API's OpenAPI document (built-in task types only), or check that the
    committed one is current. Run it after changing the API, and commit the result."""
    from tenantry.bootstrap import openapi_document

    document = openapi_document()
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
