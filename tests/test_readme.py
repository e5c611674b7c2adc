"""The README's shell tour runs as pasted, against a live server (docs that cannot rot)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def curl_tour() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.DOTALL)
    tours = [block for block in blocks if block.startswith("B=http://127.0.0.1:8000\n")]
    assert len(tours) == 1, "the README has one curl tour starting with B=http://127.0.0.1:8000"
    return tours[0]


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's tour needs curl")
def test_the_readme_curl_tour_runs_as_pasted(live_server: str) -> None:
    tour = curl_tour().replace("B=http://127.0.0.1:8000", f"B={live_server}", 1)
    # -e and pipefail: a step that fails (an error where the tour expects an id) stops it;
    # -u: every variable the tour uses, it sets.
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", tour], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    olga, arne, catalogue, cancelled = documents(result.stdout)
    assert olga["username"] == "olga" and olga["role"] == "organizer"
    assert arne["username"] == "arne" and arne["role"] == "attendee"
    assert catalogue["count"] == 1 and catalogue["results"][0]["name"] == "Jazz night"
    assert cancelled["status"] == "cancelled" and cancelled["total_price"] == "140.00"


def documents(output: str) -> list[dict[str, Any]]:
    """The JSON bodies curl printed one after the other (without newlines between them)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(output.rstrip()):
        body, at = decoder.raw_decode(output, at)
        found.append(body)
        while at < len(output) and output[at].isspace():
            at += 1
    return found
