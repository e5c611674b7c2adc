"""Fuzzing the whole API from its OpenAPI schema (schemathesis) against a live uvicorn.

Every operation is called with generated valid and invalid input (wrong types,
boundaries, invalid UTF-8, ...) as an attendee and as an organizer, then with the
hostile values of tests/schema_probe.py (NUL in every string input, numbers past
bigint). No answer may be a 5xx, and every status, content type and body must be
the one the schema documents for that operation.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from tests.factories import make_event, make_ticket_type, token_for
from tests.schema_probe import probe

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)
# Per operation and role (FUZZ_MAX_EXAMPLES); the two roles run in parallel, ~40 s.
FUZZ_PASSWORD = "Fuzzing-only-password-93"
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "15"))


async def _fuzz(base: str, token: str, seed: int, report: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{base}/api/schema",
        "--url",
        base,
        "--checks",
        CHECKS,
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--phases",
        "examples,coverage,fuzzing",
        "--mode",
        "all",
        "--seed",
        str(seed),
        "--workers",
        "2",
        "--no-shrink",
        "--generation-with-security-parameters",
        "false",
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--max-failures",
        "20",
        "--no-color",
        "--report-dir",
        str(report),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    return proc.returncode or 0, output.decode(errors="replace")


async def test_fuzzing_finds_no_server_error_and_no_undocumented_answer(
    live_server, db, create_user, tmp_path
) -> None:
    # Not the password of the schema's examples, or the examples phase would deactivate them.
    attendee = await create_user("attendee", password=FUZZ_PASSWORD)
    organizer = await create_user("organizer", password=FUZZ_PASSWORD)
    # Something to find under the small ids the generator tries first.
    event = await make_event(db, organizer)
    await make_ticket_type(db, event)
    started = time.monotonic()
    results = await asyncio.gather(
        _fuzz(live_server, token_for(attendee), 1, tmp_path / "attendee"),
        _fuzz(live_server, token_for(organizer), 2, tmp_path / "organizer"),
    )
    for role, (code, output) in zip(("attendee", "organizer"), results, strict=True):
        assert code == 0, f"fuzzing as {role} failed:\n{output[-12000:]}"
    # Schemathesis never sends a NUL in a query string: the schema probe does.
    for user in (attendee, organizer):
        problems = await asyncio.to_thread(probe, live_server, token_for(user))
        assert not problems, "\n".join(problems[:20])
    # Its cost is reported, not asserted: a busy machine is no reason to fail the suite.
    print(f"fuzzing took {time.monotonic() - started:.0f} s")
