"""The SMTP provider against real loopback aiosmtpd servers: TLS, AUTH, pooling, errors."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from comms.devsink import SinkHandler, SmtpSink
from comms.devstack import free_port
from comms.providers import ConfigurationError, OutboundEmail, PermanentError, ThrottledError
from comms.providers.smtp import SmtpProvider, close_all_connections


def _email(to: str = "ann@example.org") -> OutboundEmail:
    delivery = uuid.uuid4()
    return OutboundEmail(
        delivery_id=delivery, tenant_id=uuid.uuid4(), message_id=uuid.uuid4(),
        sender="news@example.com", recipient=to, subject="Hello", text="Hi", html="<p>Hi</p>",
        reply_to="reply@example.com", headers={"List-Id": "news"},
        message_id_header=f"<{delivery}@test>",
    )  # fmt: skip


def _server_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    return context


def _authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"right-password"
    return AuthResult(success=ok, handled=False)


class _Counting(SinkHandler):
    connections = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        type(self).connections += 1
        session.host_name = hostname
        return responses


@pytest.fixture(autouse=True)
def _fresh_pool() -> Iterator[None]:
    close_all_connections()
    yield
    close_all_connections()


def test_sends_a_multipart_message_and_reuses_the_connection() -> None:
    handler = _Counting()
    _Counting.connections = 0
    with SmtpSink(handler) as sink:
        provider = SmtpProvider({"host": "127.0.0.1", "port": sink.port})
        first = _email()
        result = provider.send(first)
        provider.send(_email("bob@example.org"))
        assert handler.count() == 2
        assert _Counting.connections == 1  # one EHLO: the pooled connection was reused
    assert result.provider_message_id == first.message_id_header.strip("<>")
    raw = handler.received[0].raw.decode()
    assert "multipart/alternative" in raw
    assert "Reply-To: reply@example.com" in raw
    assert "List-Id: news" in raw


def test_reconnects_when_the_server_dropped_the_pooled_connection() -> None:
    handler = SinkHandler()
    with SmtpSink(handler) as sink:
        provider = SmtpProvider({"host": "127.0.0.1", "port": sink.port})
        provider.send(_email())
    with SmtpSink(handler, port=sink.port):
        provider.send(_email("bob@example.org"))  # the old socket is dead; a new one is opened
    assert handler.count() == 2


def test_starttls_with_auth(tls_files: tuple[Path, Path]) -> None:
    handler = SinkHandler()
    controller = Controller(
        handler, hostname="127.0.0.1", port=(port := free_port()), ready_timeout=10,
        tls_context=_server_context(tls_files), require_starttls=True,
        authenticator=_authenticator, auth_require_tls=True,
    )  # fmt: skip
    controller.start()
    try:
        base = {"host": "localhost", "port": port, "tls": "starttls", "username": "ann",
                "verify_certificate": False}  # fmt: skip
        SmtpProvider({**base, "password": "right-password"}).send(_email())
        assert handler.count() == 1
        close_all_connections()
        with pytest.raises(ConfigurationError, match="authentication failed for 'ann'") as info:
            SmtpProvider({**base, "password": "wrong-password"}).send(_email())
        assert "wrong-password" not in str(info.value)
    finally:
        close_all_connections()  # client side first, so the server closes cleanly
        controller.stop()


def _untrusted_starttls_server(tls_files: tuple[Path, Path], port: int) -> threading.Thread:
    """A minimal SMTP server offering STARTTLS with a self-signed certificate, once."""
    listener = socket.create_server(("127.0.0.1", port))

    def serve() -> None:
        with listener, listener.accept()[0] as conn, conn.makefile("rwb") as f:
            f.write(b"220 localhost ESMTP\r\n")
            f.flush()
            f.readline()  # EHLO
            f.write(b"250-localhost\r\n250 STARTTLS\r\n")
            f.flush()
            f.readline()  # STARTTLS
            f.write(b"220 go ahead\r\n")
            f.flush()
            with contextlib.suppress(ssl.SSLError, OSError):
                _server_context(tls_files).wrap_socket(conn, server_side=True).close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_certificate_is_verified_by_default(tls_files: tuple[Path, Path]) -> None:
    port = free_port()
    server = _untrusted_starttls_server(tls_files, port)
    provider = SmtpProvider({"host": "localhost", "port": port, "tls": "starttls"})
    with pytest.raises(ConfigurationError, match="TLS failed"):
        provider.send(_email())
    server.join(10)


def test_implicit_tls(tls_files: tuple[Path, Path]) -> None:
    handler = SinkHandler()
    controller = Controller(
        handler, hostname="127.0.0.1", port=(port := free_port()), ready_timeout=10,
        ssl_context=_server_context(tls_files),
    )  # fmt: skip
    controller.start()
    try:
        SmtpProvider(
            {"host": "localhost", "port": port, "tls": "implicit", "verify_certificate": False}
        ).send(_email())
        assert handler.count() == 1
    finally:
        close_all_connections()  # client side first, so the server closes cleanly
        controller.stop()


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("550 5.1.1 no such user", PermanentError),
        ("454 4.7.0 slow down", ThrottledError),
        ("451 4.3.0 later", ThrottledError),
    ],
)
def test_refusals_are_classified(reply: str, error: type[Exception]) -> None:
    with (
        SmtpSink(SinkHandler(on_rcpt=lambda _: reply)) as sink,
        pytest.raises(error, match=reply.split()[0]),
    ):
        SmtpProvider({"host": "127.0.0.1", "port": sink.port}).send(_email())


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="'host' is required"):
        SmtpProvider({})
    with pytest.raises(ConfigurationError, match="'tls' must be"):
        SmtpProvider({"host": "h", "tls": "sometimes"})


def test_non_ascii_headers_are_encoded_and_bodies_survive_a_round_trip() -> None:
    import dataclasses
    import email
    from email import policy

    from comms.providers.smtp import build_mime

    link = "https://example.com/u/" + "t" * 300
    outbound = dataclasses.replace(
        _email(),
        sender="Zoë Müller <news@example.com>",
        subject="Grüße aus Köln " + "x" * 90,
        text="Hallo Zoë\n" + "y" * 1200,
        html="<p>Grüße</p>",
        headers={"List-Unsubscribe": f"<{link}>"},
    )
    raw = build_mime(outbound).as_bytes()
    assert raw.isascii()  # 7-bit clean: encoded words and quoted-printable
    assert max(len(line) for line in raw.splitlines()) <= 998
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert str(parsed["Subject"]) == outbound.subject
    assert parsed["From"].addresses[0].display_name == "Zoë Müller"
    assert link in str(parsed["List-Unsubscribe"])
    plain = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert plain is not None and plain.get_content() == outbound.text
    assert html is not None and html.get_content() == outbound.html


@pytest.mark.parametrize("field", ["subject", "sender", "reply_to"])
def test_a_line_break_in_a_header_is_refused_not_injected(field: str) -> None:
    import dataclasses

    from comms.providers.smtp import build_mime

    outbound = dataclasses.replace(_email(), **{field: "Hi\r\nBcc: victim@example.org"})
    with pytest.raises(PermanentError, match="line break"):
        build_mime(outbound)
