"""Locust load test of the booking endpoint: `locust -f bench/locustfile.py --host http://127.0.0.1:8000`.

Each simulated attendee registers, logs in and books one ticket at a time for the
hot event created by the first user to start. Run the server with
RATE_LIMIT_ENABLED=false. (Locust is not a dependency of the project: `pip install locust`.)
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

from locust import HttpUser, between, task

PASSWORD = "Load-test-password-9"
_setup_lock = threading.Lock()
_hot: dict[str, int] = {}


def _account(client, role: str) -> str:
    username = f"locust_{role}_{uuid.uuid4().hex[:10]}"
    client.post(
        "/api/auth/register/",
        json={
            "username": username,
            "email": f"{username}@example.com",
            "password": PASSWORD,
            "role": role,
        },
    )
    r = client.post("/api/auth/login/", json={"username": username, "password": PASSWORD})
    return r.json()["access"]


class Attendee(HttpUser):
    wait_time = between(0, 0.1)

    def on_start(self) -> None:
        with _setup_lock:
            if not _hot:
                headers = {"Authorization": f"Bearer {_account(self.client, 'organizer')}"}
                start = (datetime.now(UTC) + timedelta(days=30)).isoformat()
                event = self.client.post(
                    "/api/events/",
                    json={
                        "name": "Locust hot event",
                        "location": "Benchmark Hall",
                        "start_time": start,
                        "total_capacity": 1_000_000,
                    },
                    headers=headers,
                ).json()
                tt = self.client.post(
                    f"/api/events/{event['id']}/ticket-types/",
                    json={"name": "Standard", "price": "10.00", "quantity_available": 1_000_000},
                    headers=headers,
                ).json()
                _hot.update(event_id=event["id"], ticket_type_id=tt["id"])
        self.headers = {"Authorization": f"Bearer {_account(self.client, 'attendee')}"}

    @task
    def book(self) -> None:
        self.client.post(
            "/api/bookings/",
            json={
                "event_id": _hot["event_id"],
                "items": [{"ticket_type_id": _hot["ticket_type_id"], "quantity": 1}],
            },
            headers=self.headers,
            name="POST /api/bookings/",
        )
