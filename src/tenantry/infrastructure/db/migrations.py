"""Alembic, driven from code: the CLI, `tenantry dev` and the test harness all migrate this way."""

from __future__ import annotations

import io
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from types import ModuleType
from typing import TextIO

from alembic import command
from alembic.config import Config

PROJECT_ROOT = Path(__file__).resolve().parents[4]
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"


def alembic_config(database_url: str, stdout: TextIO | None = None) -> Config:
    config = Config(str(ALEMBIC_INI), stdout=stdout) if stdout else Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    # Passed as an attribute, not an ini option: ini interpolation would mangle '%' in URLs.
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "-1") -> None:
    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str) -> str:
    out = io.StringIO()
    command.current(alembic_config(database_url, stdout=out))
    return out.getvalue().strip()


def earlier_revision(name: str) -> ModuleType:
    """The module of revision ``name`` (its file's name, without ``.py``): for a downgrade that
    puts back what that revision made, from its own text."""
    path = PROJECT_ROOT / "migrations" / "versions" / f"{name}.py"
    spec = spec_from_file_location(f"tenantry_revision_{name}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
