"""`python -m app worker` as it ships: it sends the outbox, and logs in the API's format."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from app.outbox.service import record_emails
from tests.factories import ROOT, TEST_SECRET_KEY
from tests.test_outbox_batch import reset_email

# arq's worker closes its pool with a call that redis-py 5 marks deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


async def statuses(db: Any) -> list[str]:
    async with db() as session:
        return list(await session.scalars(text("SELECT status FROM outbox_messages ORDER BY id")))


async def test_the_worker_command_sends_each_email_once_and_logs_json_lines(
    database_url: str, db: Any, redis_url: str, tmp_path: Path
) -> None:
    for n in range(3):  # three commits, as three bookings make
        async with db() as session:
            await record_emails(session, [reset_email(n)])
            await session.commit()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "SMTP_HOST": "",
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "worker"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        async with asyncio.timeout(30):
            while await statuses(db) != ["delivered"] * 3:
                assert proc.poll() is None, log.read_text()
                await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # stops gracefully: buffered lines are written
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    emails = [line for line in lines if line["logger"] == "app.notifications"]
    recipients = [re.search(r" to=(\S+)", e["message"]).group(1) for e in emails]  # type: ignore[union-attr]
    assert recipients == [reset_email(n).to for n in range(3)]  # once each, in order
    assert all("http://x/" in e["message"] for e in emails)  # the whole email, its link too
    assert any(line["logger"] == "app.worker" for line in lines)
