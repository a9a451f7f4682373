"""Real Celery worker processes (and beat) against the embedded stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from comms.devstack import StackInfo

ROOT = Path(__file__).resolve().parents[2]


class Fleet:
    """Starts and stops comms processes; each logs to its own file for debugging."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "comms.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=dict(os.environ),
            start_new_session=True,  # its own process group, so a kill takes its children
        )
        log.close()
        self.procs.append(proc)
        return proc

    def worker(
        self, name: str, queues: str = "send,fanout,scheduled", concurrency: int = 1
    ) -> subprocess.Popen[bytes]:
        return self.start(
            "worker", "-Q", queues, "-c", str(concurrency), "-n", f"{name}@%h", name=name
        )

    def beat(self) -> subprocess.Popen[bytes]:
        return self.start("beat", name="beat")

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process and every child it forked: no shutdown handlers run."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.log_dir.glob("*.log"))
        )


@pytest.fixture
def fleet(stack: StackInfo, clean_db: None, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.stop_all()


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    on_fail: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``predicate`` until it holds or ``timeout`` passes (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{on_fail()}")
