"""Container image, compose file, settings example, Makefile and hooks."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from app.core.config import Settings
from tests.factories import ROOT


def _compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _compose_available(), reason="no docker client with the compose plugin")
def test_compose_file_is_valid() -> None:
    result = subprocess.run(
        ["docker", "compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


COMPOSE_SPEC = ROOT.parent / "shared" / "data" / "compose-spec.json"


def _interpolated_compose() -> dict:
    """docker-compose.yml as Compose reads it: ${VAR:-default} and $$ resolved (no .env)."""
    text = (ROOT / "docker-compose.yml").read_text()
    text = re.sub(
        r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}",
        lambda m: m.group(2) or "",
        text.replace("$$", "\0"),
    ).replace("\0", "$")
    return yaml.safe_load(text)


@pytest.mark.skipif(not COMPOSE_SPEC.exists(), reason=f"{COMPOSE_SPEC} is absent")
def test_compose_file_matches_the_compose_spec() -> None:
    import json

    import jsonschema

    schema = json.loads(COMPOSE_SPEC.read_text())
    jsonschema.Draft7Validator(schema).validate(_interpolated_compose())


def test_compose_scale_profile_has_the_cluster_topology() -> None:
    """--profile scale: replica, PgBouncer, two app instances and job workers, HAProxy."""
    services = _interpolated_compose()["services"]
    scale = {name for name, svc in services.items() if "scale" in svc.get("profiles", [])}
    assert scale == {"db-replica", "pgbouncer", "app-scaled", "worker-scaled", "haproxy"}
    app = services["app-scaled"]
    assert app["deploy"]["replicas"] == 2 and services["worker-scaled"]["deploy"]["replicas"] == 2
    assert "@pgbouncer:6432/" in app["environment"]["DATABASE_URL"]
    assert app["environment"]["DB_POOLER"] == "pgbouncer"
    assert "@db-replica:5432/" in app["environment"]["DATABASE_READ_URL"]
    assert "pg_basebackup" in str(services["db-replica"]["entrypoint"])
    configs = _interpolated_compose()["configs"]
    assert "pool_mode = transaction" in configs["pgbouncer-ini"]["content"]
    assert "app-scaled:8000" in configs["haproxy-cfg"]["content"]


def test_compose_starts_services_in_order() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = {name: svc for name, svc in compose["services"].items() if not svc.get("profiles")}
    assert set(services) == {"db", "redis", "migrate", "app", "worker"}
    assert services["db"]["image"].startswith("postgres:16")
    assert "pg_isready" in str(services["db"]["healthcheck"]["test"])
    assert services["redis"]["image"].startswith("redis:7")
    assert "healthcheck" in services["redis"]
    assert services["migrate"]["command"] == ["python", "-m", "app", "migrate"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    app = services["app"]
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert app["depends_on"]["redis"]["condition"] == "service_healthy"
    assert app["env_file"] == [{"path": ".env", "required": False}]
    assert any(str(port).endswith(":8000") for port in app["ports"])
    assert services["worker"]["command"] == ["python", "-m", "app", "worker"]
    for name in ("migrate", "app", "worker"):
        assert services[name]["environment"]["DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert "@db:5432/" in services[name]["environment"]["DATABASE_URL"]


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert len(stages) == 2 and all("python:${PYTHON_VERSION}-slim" in s for s in stages)
    assert "ARG PYTHON_VERSION=3.11" in text
    assert "uv sync --frozen --no-dev" in text
    runtime = text.split("AS runtime", 1)[1]
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert re.search(r"^USER\s+app\b", runtime, flags=re.MULTILINE)
    assert "HEALTHCHECK" in runtime and "/health/live" in runtime
    instructions = "\n".join(line for line in runtime.splitlines() if not line.startswith("#"))
    assert "curl" not in instructions and "apt-get" not in instructions
    cmd = re.search(r"^CMD .*$", runtime, flags=re.MULTILINE)
    assert cmd and "exec python -m app.core.server app.main:app" in cmd.group(0)
    assert "${WEB_CONCURRENCY:-2}" in cmd.group(0)
    assert "--loop uvloop --http httptools" in cmd.group(0)


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".env", ".venv", ".data", ".git", "tests"):
        assert entry in ignored


def test_env_example_lists_every_setting_with_its_default() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    documented = {}
    for line in lines:
        match = re.match(r"^#?\s?([A-Z][A-Z0-9_]+)=(.*)$", line)
        if match:
            documented[match.group(1)] = match.group(2)
    for name, field in Settings.model_fields.items():
        assert name.upper() in documented, f"{name.upper()} is missing from .env.example"
        default = field.get_default(call_default_factory=True)
        if isinstance(default, bool):
            assert documented[name.upper()] == str(default).lower(), name
        elif isinstance(default, int | float | str) and name != "data_dir":
            assert documented[name.upper()] == str(default), name


def test_env_example_values_are_accepted() -> None:
    """Uncommenting every line gives valid settings (the example cannot drift into nonsense)."""
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^#\s?([A-Z][A-Z0-9_]+)=(.+)$", line)
        if match and match.group(1).lower() in Settings.model_fields:
            values[match.group(1).lower()] = match.group(2)
    Settings(_env_file=None, **values)  # type: ignore[call-arg]


MAKE_TARGETS = [
    "run",
    "test",
    "up",
    "up-d",
    "down",
    "build",
    "rebuild",
    "migrate",
    "migrations",
    "createsuperuser",
    "shell",
    "lint",
    "format",
    "bench",
    "worker",
]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_help_lists_the_targets() -> None:
    out = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = {re.sub(r"\x1b\[[0-9;]*m", "", line).split()[0] for line in out.splitlines() if line}
    assert set(MAKE_TARGETS) <= listed, set(MAKE_TARGETS) - listed


def test_pre_commit_hooks_run_from_the_venv() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    for hook_id in (
        "ruff-check",
        "ruff-format",
        "codespell",
        "end-of-file-fixer",
        "trailing-whitespace",
        "check-yaml",
        "check-toml",
        "uv-lock",
    ):
        assert hook_id in hooks, hook_id
    assert all(repo["repo"] == "local" for repo in config["repos"])
    for hook in hooks.values():
        executable = hook["entry"].split()[0]
        if executable.startswith(".venv/"):
            assert (ROOT / executable).exists(), executable


def test_ci_workflow_runs_lint_and_tests_on_services() -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))
    assert {"push", "pull_request"} <= set(triggers)
    test_job = workflow["jobs"]["test"]
    assert test_job["services"]["postgres"]["image"] == "postgres:16"
    assert test_job["services"]["redis"]["image"] == "redis:7"
    assert "TEST_DATABASE_URL" in test_job["env"]
    runs = " ".join(str(step.get("run", "")) for step in test_job["steps"])
    assert "make test" in runs
    lint_runs = " ".join(str(step.get("run", "")) for step in workflow["jobs"]["lint"]["steps"])
    assert "make lint" in lint_runs


def test_ci_script_runs_make_test() -> None:
    script = (ROOT / ".ci/run").read_text()
    assert "set -euo pipefail" in script
    assert script.rstrip().endswith("make test")
