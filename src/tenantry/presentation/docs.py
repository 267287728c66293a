"""The API docs page, served whole by the app: Swagger UI from the files the swagger-ui-py
package ships, and its start script from this package. No CDN: the page works offline, and
its Content-Security-Policy allows 'self' only (presentation/middleware.py)."""

from __future__ import annotations

import html
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from litestar import Request, Router
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.static_files import create_static_files_router

from tenantry.presentation.security import NO_CREDENTIALS, PUBLIC

STATIC = "/static"


def _package_dir(name: str) -> Path:
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the {name} package is not installed", name=name)
    return Path(spec.submodule_search_locations[0])


# Swagger UI's own files (swagger-ui-bundle.js ...), then ours (docs.js). Found without
# importing swagger_ui, whose import loads jinja2, yaml and urllib into every process.
SWAGGER_UI_FILES = _package_dir("swagger_ui") / "static"
OWN_FILES = Path(__file__).parent / "static"


class SwaggerUI(OpenAPIRenderPlugin):
    """Swagger UI at the docs path, its scripts and styles from ``<docs path>/static``."""

    def __init__(self, docs_path: str) -> None:
        super().__init__(path="/")
        self.assets = f"{docs_path}{STATIC}"

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:  # noqa: ARG002 - the plugin's signature
        title = html.escape(str(openapi_schema["info"]["title"]))
        assets = self.assets
        return f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>{title}</title>
    <link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
    <link rel="stylesheet" href="{assets}/swagger-ui.css">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="{assets}/swagger-ui-bundle.js"></script>
    <script src="{assets}/swagger-ui-standalone-preset.js"></script>
    <script src="{assets}/docs.js"></script>
  </body>
</html>
""".encode()


def docs_assets(docs_path: str) -> Router:
    """The files the docs page loads, public like the page."""
    return create_static_files_router(
        path=f"{docs_path}{STATIC}",
        directories=[SWAGGER_UI_FILES, OWN_FILES],
        opt=PUBLIC,
        security=NO_CREDENTIALS,
        include_in_schema=False,
        name="docs-assets",
    )
