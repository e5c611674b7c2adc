"""A frontend's view of the API: a TypeScript client generated from the live schema.

tests/spa/ holds a strict TypeScript program (openapi-fetch over openapi-typescript types)
that walks the journey an SPA makes. These tests generate its types from the running
service, type-check it, prove that a `switch` over an error code the operation never answers
does not compile, run it against a live uvicorn, check that @hey-api/openapi-ts reads the
schema alike, and lint the schema with Redocly's recommended rules. They skip, saying why,
where node/npm are missing (.ci/run installs them).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

SPA = Path(__file__).resolve().parent / "spa"
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None,
    reason="node and npm are needed for the generated TypeScript client (apt-get install "
    "nodejs npm; .ci/run does it)",
)


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run a command in tests/spa; fail with its output if it fails."""
    result = subprocess.run(args, cwd=SPA, capture_output=True, text=True, timeout=timeout, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output}"
    return output


def bin_(name: str) -> str:
    return str(SPA / "node_modules" / ".bin" / name)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """`npm ci`, skipped when node_modules was installed from this very lock file."""
    lock = (SPA / "package-lock.json").read_bytes()
    stamp = SPA / "node_modules" / ".installed-lock-sha256"
    digest = hashlib.sha256(lock).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        run("npm", "ci", "--no-audit", "--no-fund", "--prefer-offline")
        stamp.write_text(digest)
    return SPA / "node_modules"


@pytest.fixture(scope="module")
def generated_types(node_modules: Path, live_server: str) -> Path:
    """The live schema saved beside the program, and its types from openapi-typescript."""
    schema = httpx.get(f"{live_server}/api/schema", timeout=10).json()
    (SPA / "api-schema.json").write_text(json.dumps(schema, indent=1))
    output = run(bin_("openapi-typescript"), "api-schema.json", "-o", "src/api.d.ts")
    assert "⚠" not in output and "warn" not in output.lower(), output
    return SPA / "src" / "api.d.ts"


def test_the_journey_type_checks_strictly(generated_types: Path) -> None:
    run(bin_("tsc"), "--noEmit", "--strict", "-p", "tsconfig.json")


def test_a_switch_over_a_code_the_operation_never_answers_does_not_compile(
    generated_types: Path,
) -> None:
    result = subprocess.run(
        [bin_("tsc"), "--noEmit", "--strict", "-p", "tsconfig.negative.json"],
        cwd=SPA,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0, "a case label the operation never answers compiled"
    errors = [line for line in result.stdout.splitlines() if "error TS" in line]
    # Exactly the unknown label is refused; the codes cancel can answer are accepted.
    assert len(errors) == 1, result.stdout
    assert "TS2678" in errors[0] and '"sold_out"' in errors[0], errors[0]
    assert '"already_cancelled"' in errors[0]


def test_the_journey_runs_against_a_live_server(generated_types: Path, live_server: str) -> None:
    run(bin_("tsc"), "-p", "tsconfig.json")
    output = run("node", "build/journey.js", env={**os.environ, "API_BASE_URL": live_server})
    assert "journey ok: 2 events" in output, output


def test_hey_api_reads_the_schema_the_same_way(generated_types: Path) -> None:
    # The second generator: optional request defaults, required response fields, the code
    # union per operation (hey-check/types.ts holds a @ts-expect-error for a foreign code).
    output = run(bin_("openapi-ts"), "-i", "api-schema.json", "-o", "hey")
    assert "warn" not in output.lower(), output
    run(bin_("tsc"), "--noEmit", "--strict", "-p", "tsconfig.hey.json")


def node_major() -> int:
    version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
    return int(version.strip().lstrip("v").split(".")[0])


def test_the_schema_passes_redocly_recommended_rules(generated_types: Path) -> None:
    if node_major() < 20:
        pytest.skip("@redocly/cli needs node >= 20.19 (this distribution's node is older)")
    # tests/spa/redocly-lint.yaml says which rule is off and why; .redocly.lint-ignore.yaml lists
    # the single occurrences left (the probes have no 4xx).
    result = subprocess.run(
        [
            bin_("redocly"),
            "lint",
            "--config",
            "redocly-lint.yaml",
            "api-schema.json",
            "--format=json",
        ],
        cwd=SPA,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"},
    )
    report = json.loads(result.stdout[result.stdout.index("{") :])
    problems = [
        f"{p['ruleId']} ({p['severity']}): {p['message']} at {p['location'][0]['pointer']}"
        for p in report["problems"]
        if not p.get("ignored")
    ]
    assert problems == [], "\n".join(problems)
    assert result.returncode == 0, result.stderr
