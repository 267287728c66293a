"""deploy/Dockerfile and .dockerignore: a small multi-stage uv build that runs as non-root."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import tomllib
from dataclasses import dataclass

import pytest

from .stack import DEPLOY, ROOT, tool

DOCKERFILE = DEPLOY / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[str]:
        return [i.arguments for i in self.instructions if i.keyword == keyword]


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            found.append(Instruction(keyword.upper(), arguments.strip()))
            pending = ""
    return found


def stages() -> list[Stage]:
    args: dict[str, str] = {}
    result: list[Stage] = []
    for instruction in instructions():
        if instruction.keyword == "ARG" and not result:
            name, _, default = instruction.arguments.partition("=")
            args[name] = default
        elif instruction.keyword == "FROM":
            base, _, name = re.sub(r"--platform=\S+\s+", "", instruction.arguments).partition(
                " AS "
            )
            for arg, value in args.items():
                base = base.replace("${" + arg + "}", value)
            result.append(Stage(base=base.strip(), name=name.strip() or None, instructions=[]))
        else:
            result[-1].instructions.append(instruction)
    return result


def exec_form(arguments: str) -> list[str]:
    parsed = json.loads(arguments)
    assert isinstance(parsed, list), f"{arguments} is not in exec form"
    return [str(part) for part in parsed]


def test_builds_in_stages_and_runs_on_python_slim() -> None:
    built = stages()
    assert len(built) >= 3
    runtime = built[-1]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", runtime.base)
    builder = next(stage for stage in built if stage.name == "builder")
    assert builder.base == runtime.base, "the venv must find the same interpreter at runtime"


def test_installs_the_locked_dependencies_with_uv_without_dev() -> None:
    builder = next(stage for stage in stages() if stage.name == "builder")
    runs = " ".join(builder.all("RUN"))
    assert "uv sync --frozen --no-dev" in runs
    assert any("/uv" in copy for copy in builder.all("COPY"))
    runtime = stages()[-1]
    assert any(copy.startswith("--from=builder") for copy in runtime.all("COPY"))
    assert "uv" not in " ".join(runtime.all("RUN")), "the runtime stage installs nothing"


def test_runs_as_a_numeric_non_root_user() -> None:
    users = stages()[-1].all("USER")
    assert users, "no USER in the runtime stage"
    user, _, group = users[-1].partition(":")
    assert user.isdigit(), "a name cannot be checked by runAsNonRoot"
    assert int(user) > 0
    assert group.isdigit(), "a name cannot be checked by runAsNonRoot"
    assert int(group) > 0
    last_user = max(i for i, x in enumerate(stages()[-1].instructions) if x.keyword == "USER")
    after = [x.keyword for x in stages()[-1].instructions[last_user:]]
    assert "RUN" not in after, "RUN after USER would run as the app user, or undo it"


def test_health_check_asks_for_health_without_curl() -> None:
    checks = stages()[-1].all("HEALTHCHECK")
    assert len(checks) == 1
    command = exec_form(checks[0].split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"]
    assert "/health" in command[2]
    assert "urllib" in command[2]


def test_entrypoint_is_the_tenantry_command_serving_by_default() -> None:
    runtime = stages()[-1]
    assert exec_form(runtime.all("ENTRYPOINT")[-1]) == ["tenantry"]
    assert exec_form(runtime.all("CMD")[-1]) == ["serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tenantry"] == "tenantry.cli:main"


def test_the_runtime_environment_serves_on_every_interface() -> None:
    env = " ".join(stages()[-1].all("ENV"))
    assert "TENANTRY_HOST=0.0.0.0" in env
    assert "TENANTRY_ENV=production" in env
    assert "PATH=/app/.venv/bin:$PATH" in env


def matches(glob: str, path: str) -> bool:
    """Go's filepath.Match, segment by segment, plus the leading ``**/`` of .dockerignore."""
    parts = path.split("/")
    if glob.startswith("**/"):
        return any(matches(glob[3:], "/".join(parts[i:])) for i in range(len(parts)))
    globs = glob.split("/")
    return len(globs) == len(parts) and all(map(fnmatch.fnmatchcase, parts, globs))


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: a pattern matching a directory covers what is under it, and the last
    pattern that matches decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        glob = pattern.removeprefix("!").strip("/")
        if any(matches(glob, prefix) for prefix in prefixes):
            verdict = not pattern.startswith("!")
    return verdict


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_the_build_context_holds_what_the_image_copies() -> None:
    patterns = dockerignore()
    copied = [
        source
        for stage in stages()
        for copy in stage.all("COPY")
        if not copy.startswith("--from")
        for source in copy.split()[:-1]
    ]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not ignored(source, patterns), f"{source} is copied but ignored"
    for mounted in (
        "uv.lock",
        "pyproject.toml",
        "src/tenantry/cli/__init__.py",
        "migrations/env.py",
    ):
        assert not ignored(mounted, patterns), mounted


def test_the_build_context_leaves_out_local_state_and_secrets() -> None:
    patterns = dockerignore()
    for path in (".env", ".git/config", ".venv/bin/python", ".tenantry/keyring.json",
                 "tests/conftest.py", "bench/login.py", "src/tenantry/__pycache__/cli.cpython-311.pyc"):  # fmt: skip
        assert ignored(path, patterns), path


def test_hadolint_finds_nothing() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (it comes with the dev dependencies: uv sync)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
