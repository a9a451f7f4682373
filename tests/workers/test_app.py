"""The Celery app's settings, and that importing it starts nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from comms.devstack import StackInfo


def test_importing_the_tasks_contacts_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMS_")}
    env["COMMS_DATA_DIR"] = str(tmp_path / "data")
    subprocess.run([sys.executable, "-c", "import workers.tasks"], env=env, check=True)
    assert not (tmp_path / "data").exists()


def test_fleet_settings(stack: StackInfo) -> None:
    from workers.app import fleet_config

    config = fleet_config()
    assert config["broker_url"] == stack.redis_url
    assert config["task_serializer"] == "json"
    assert config["accept_content"] == ["json"]
    assert config["task_acks_late"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert {q.name for q in config["task_queues"]} == {
        "send", "fanout", "events", "inbound", "scheduled"
    }  # fmt: skip
    assert config["task_routes"]["comms.deliver"] == {"queue": "send"}
    assert "comms.sweep" in config["beat_schedule"]
    # sending domains are re-checked by beat, weekly unless configured otherwise
    drift = [job for job in config["beat_schedule"].values() if job["task"] == "comms.domain_drift"]
    assert len(drift) == 1 and drift[0]["schedule"] == 7 * 24 * 3600.0
    assert config["task_routes"]["comms.inbound"] == {"queue": "inbound"}
