"""A real BIND 9 ``named`` on loopback for RFC 2136 tests (skipped when BIND is absent).

The zone ``acme.example`` accepts dynamic updates signed with the TSIG key
``comms-key.`` (hmac-sha256); ``named`` runs in the foreground from a
temporary directory that holds its configuration, zone file and journal.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from comms.devstack import free_port

ZONE = "acme.example"
KEY_NAME = "comms-key."
SECRET = base64.b64encode(b"bind-test-secret-0123456789abcdef").decode()


def named_binary() -> str | None:
    return shutil.which("named") or next(
        (p for p in ("/usr/sbin/named", "/usr/local/sbin/named") if os.access(p, os.X_OK)), None
    )


def _answers(port: int) -> bool:
    import dns.exception
    import dns.message
    import dns.query

    try:
        dns.query.udp(
            dns.message.make_query(f"{ZONE}.", "SOA"), "127.0.0.1", port=port, timeout=0.5
        )
    except (dns.exception.DNSException, OSError):
        return False
    return True


@contextmanager
def bind_server(workdir: Path) -> Iterator[int]:
    """Start ``named`` serving ZONE; yields its port."""
    binary = named_binary()
    assert binary is not None
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / f"{ZONE}.zone").write_text(
        "$TTL 300\n"
        f"@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 300\n"
        f"@ IN NS ns1.{ZONE}.\n"
        "ns1 IN A 127.0.0.1\n"
    )
    (workdir / "named.conf").write_text(
        f'options {{ directory "{workdir}"; pid-file "{workdir}/named.pid";\n'
        f"  listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};\n"
        "  recursion no; dnssec-validation no; allow-query { any; }; };\n"
        f'key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{SECRET}"; }};\n'
        "controls { };\n"
        f'zone "{ZONE}" {{ type primary; file "{workdir}/{ZONE}.zone";\n'
        f'  allow-update {{ key "{KEY_NAME}"; }}; }};\n'
    )
    args = [binary, "-g", "-c", str(workdir / "named.conf")]
    log = open(workdir / "named.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"named did not start:\n{(workdir / 'named.log').read_text()}")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
