"""Taskfile.yml: one thin task per documented command, each running what it says."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from tenantry.cli import main

from .stack import ROOT, load_yaml, tool

TASKFILE = ROOT / "Taskfile.yml"
# Each task and the command line it runs (go-task's dry run), arguments after `--` included.
EXPECTED = {
    "dev": (["dev"], "uv run tenantry dev"),
    "test": (["test", "--", "-x"], "uv run pytest -x"),
    "lint": (["lint"], "uv run ruff check src tests migrations"),
    "fmt": (["fmt"], "uv run ruff format src tests migrations"),
    "typecheck": (["typecheck"], "uv run mypy"),
    "migrate": (["migrate"], "uv run tenantry db upgrade"),
    "revision": (["revision", "--", "add widgets"], "uv run alembic revision --autogenerate -m 'add widgets'"),
    "worker": (["worker"], "uv run tenantry worker"),
    "seed": (["seed", "--", "--tenants", "2"], "uv run tenantry seed --tenants 2"),
    "bench": (["bench", "--", "--workers", "2"], "uv run python bench/suite.py --workers 2"),
    "compose-up": (["compose-up"], "docker compose up -d --build --wait"),
    "compose-down": (["compose-down"], "docker compose down"),
    "logs": (["logs", "--", "api"], "docker compose logs -f api"),
}  # fmt: skip


def tasks() -> dict[str, Any]:
    taskfile = load_yaml(TASKFILE)
    assert taskfile["version"] == "3"
    return dict(taskfile["tasks"])


def test_every_documented_command_has_a_described_task() -> None:
    assert set(tasks()) == set(EXPECTED)
    for name, task in tasks().items():
        assert task.get("desc"), name


def test_tasks_call_commands_that_exist() -> None:
    for name, task in tasks().items():
        for command in task["cmds"]:
            words = str(command).split()
            if words[:3] == ["uv", "run", "tenantry"]:
                assert words[3] in main.commands, f"{name}: no `tenantry {words[3]}`"
    default = re.fullmatch(r'\{\{\.BENCH \| default "(\w+)"\}\}', tasks()["bench"]["vars"]["BENCH"])
    assert default is not None
    assert default[1] == "suite"
    # Every benchmark the description names is a script of bench/.
    named = re.search(r"\(([\w, ]+)\)", tasks()["bench"]["desc"])
    assert named is not None
    for bench in [default[1], *named[1].split(", ")]:
        assert (ROOT / "bench" / f"{bench}.py").is_file(), bench


def go_task() -> list[str]:
    found = tool("task")
    if found is None:
        pytest.skip("go-task is not installed (it comes with the dev dependencies: uv sync)")
    # CI may force colours on; the assertions read plain lines.
    return [found, "--color=false"]


def test_go_task_lists_every_task() -> None:
    result = subprocess.run(
        [*go_task(), "--list-all", "--json"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    listed = {task["name"]: task["desc"] for task in json.loads(result.stdout)["tasks"]}
    assert set(listed) == set(EXPECTED)
    assert all(listed.values())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_runs_the_documented_command(name: str) -> None:
    arguments, command = EXPECTED[name]
    result = subprocess.run(
        [*go_task(), "--dry", *arguments], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert f"task: [{name}] {command}" in [line.rstrip() for line in result.stderr.splitlines()]


def test_bench_runs_the_benchmark_named() -> None:
    result = subprocess.run(
        [*go_task(), "--dry", "bench", "BENCH=tasks", "--", "--tasks", "100"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    lines = [line.rstrip() for line in result.stderr.splitlines()]
    assert "task: [bench] uv run python bench/tasks.py --tasks 100" in lines


def test_revision_insists_on_a_message() -> None:
    result = subprocess.run(
        [*go_task(), "--dry", "revision"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "task revision --" in result.stderr
