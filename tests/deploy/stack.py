"""Reading the deployment files the way their tools do: YAML, compose interpolation, the
Dockerfile's instructions."""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_ENV_EXAMPLE = DEPLOY / "compose.env.example"

# ${NAME}, ${NAME:-default}; "$$" is compose's escape for a literal "$".
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list[Any]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def compose() -> dict[str, Any]:
    return dict(load_yaml(COMPOSE_FILE))


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def is_one_shot(service: Mapping[str, Any]) -> bool:
    """A service that runs to completion: compose must not restart it."""
    return service.get("restart") == "no"


def variables(text: str) -> Iterator[tuple[str, str | None]]:
    """Every ``${NAME}`` / ``${NAME:-default}`` in compose text, with its default."""
    for match in _VARIABLE.finditer(text):
        if match[0] != "$$":
            yield match[1], match[2]


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """What compose makes of a value: variables from ``environ``, else their defaults."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, default = match[1], match[2]
        if name in environ:
            return environ[name]
        if default is None:
            raise KeyError(f"${{{name}}} has no default and is not set")
        return default

    return _VARIABLE.sub(replace, value)


def environment(service: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: interpolate(str(value), environ) for key, value in raw.items()}


def env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def tool(name: str) -> str | None:
    """A command-line tool on PATH, or beside this interpreter (the venv's bin)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text())
        for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    }
