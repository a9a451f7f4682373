"""The SMTP provider: any SMTP server, STARTTLS or implicit TLS, AUTH, pooled connections.

One connection per (host, port, user, tls) is kept open per worker process and
reused across sends; a dropped connection is reopened once before giving up.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import formataddr, formatdate, getaddresses
from typing import Any, ClassVar

from comms.models import Channel
from comms.providers.base import Outbound, OutboundEmail, Provider, SendResult
from comms.providers.errors import (
    ConfigurationError,
    PermanentError,
    ThrottledError,
    TransientError,
)

_THROTTLE_CODES = {421, 450, 451, 452, 454}
_pool: dict[tuple[str, int, str, str], smtplib.SMTP] = {}
_pool_lock = threading.Lock()


def close_all_connections() -> None:
    with _pool_lock:
        for conn in _pool.values():
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()
        _pool.clear()


_UTF8 = Charset("utf-8")
_UTF8.body_encoding = QP  # quoted-printable: readable, and long lines are soft-wrapped
#: fold only lines longer than RFC 5322's hard limit (long List-Unsubscribe URLs stay whole)
_POLICY = compat32.clone(max_line_length=998)
_ADDRESS_HEADERS = frozenset({"from", "to", "reply-to", "cc", "sender"})


def _header(name: str, value: str) -> str | Header:
    """A header value ready for the wire: RFC 2047-encoded only when it needs to be."""
    if "\r" in value or "\n" in value:
        raise PermanentError(f"header {name} contains a line break")
    if value.isascii():
        return value
    if name.lower() in _ADDRESS_HEADERS:
        return ", ".join(formataddr(pair, charset="utf-8") for pair in getaddresses([value]))
    return Header(value, _UTF8, header_name=name)


def build_mime(outbound: OutboundEmail) -> Message:
    """The RFC 5322 message for one recipient (SMTP sends it, SES sends it raw).

    Built with the ``compat32`` classes: they do not parse every header back into
    a syntax tree the way ``EmailMessage`` does, which made MIME building the
    most expensive step of a send. Header values are checked here instead.
    """
    charset: Any = _UTF8  # typeshed says str; the stdlib documents a Charset too
    parts: list[Message] = []
    if outbound.text is not None:
        parts.append(MIMEText(outbound.text, "plain", charset, policy=_POLICY))
    if outbound.html is not None:
        parts.append(MIMEText(outbound.html, "html", charset, policy=_POLICY))
    msg: Message = (
        parts[0]
        if len(parts) == 1
        else MIMEMultipart("alternative", _subparts=parts, policy=_POLICY)
    )
    headers = {
        "From": outbound.sender,
        "To": outbound.recipient,
        "Subject": outbound.subject,
        "Date": formatdate(localtime=False),
        "Message-ID": outbound.message_id_header,
        **({"Reply-To": outbound.reply_to} if outbound.reply_to else {}),
        **outbound.headers,
    }
    for name, value in headers.items():
        msg[name] = _header(name, value)  # type: ignore[assignment]  # Header is accepted
    return msg


class SmtpProvider(Provider):
    name = "smtp"
    channel = Channel.EMAIL
    settings_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["host"],
        "properties": {
            "host": {"type": "string"},
            "port": {"type": "integer", "default": 587},
            "tls": {"type": "string", "enum": ["none", "starttls", "implicit"], "default": "none"},
            "username": {"type": "string"},
            "password": {"type": "string", "secret": True},
            "timeout": {"type": "number", "default": 30},
            "verify_certificate": {"type": "boolean", "default": True},
        },
    }

    @property
    def _key(self) -> tuple[str, int, str, str]:
        return (
            str(self.settings["host"]),
            int(self.settings.get("port", 587)),
            str(self.settings.get("username", "")),
            str(self.settings.get("tls", "none")),
        )

    def validate_settings(self) -> None:
        super().validate_settings()
        if self.settings.get("tls", "none") not in ("none", "starttls", "implicit"):
            raise ConfigurationError("smtp: setting 'tls' must be none, starttls or implicit")

    def build_payload(self, outbound: Outbound) -> Message:
        assert isinstance(outbound, OutboundEmail)
        return build_mime(outbound)

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.settings.get("verify_certificate", True):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> smtplib.SMTP:
        host, port, username, tls = self._key
        timeout = float(self.settings.get("timeout", 30))
        conn: smtplib.SMTP | None = None
        try:
            if tls == "implicit":
                conn = smtplib.SMTP_SSL(host, port, timeout=timeout, context=self._ssl_context())
            else:
                conn = smtplib.SMTP(host, port, timeout=timeout)
                if tls == "starttls":
                    conn.starttls(context=self._ssl_context())
            if username:
                conn.login(username, str(self.settings.get("password", "")))
            return conn
        except smtplib.SMTPAuthenticationError as exc:
            self._discard(conn)
            raise ConfigurationError(f"smtp: authentication failed for {username!r}") from exc
        except smtplib.SMTPNotSupportedError as exc:
            self._discard(conn)
            raise ConfigurationError(f"smtp: server refused: {exc}") from exc
        except ssl.SSLError as exc:
            self._discard(conn)
            raise ConfigurationError(f"smtp: TLS failed: {exc.reason}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            self._discard(conn)
            raise TransientError(f"smtp: cannot connect to {host}:{port}: {exc}") from exc

    @staticmethod
    def _discard(conn: smtplib.SMTP | None) -> None:
        if conn is not None:
            conn.close()

    def _connection(self, fresh: bool = False) -> smtplib.SMTP:
        with _pool_lock:
            conn = _pool.get(self._key)
            if conn is None or fresh:
                if conn is not None:
                    conn.close()
                conn = self._connect()
                _pool[self._key] = conn
            return conn

    def _drop(self) -> None:
        with _pool_lock:
            conn = _pool.pop(self._key, None)
        if conn is not None:
            conn.close()

    def call(self, payload: Message) -> dict[str, Any]:
        for attempt in (1, 2):
            conn = self._connection(fresh=attempt == 2)
            try:
                refused = conn.send_message(payload)
                return {"refused": refused}
            except smtplib.SMTPServerDisconnected as exc:
                # a pooled connection the server closed while idle: reconnect once
                self._drop()
                if attempt == 2:
                    raise TransientError(f"smtp: server disconnected: {exc}") from exc
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = next(iter(exc.recipients.values()))
                raise self._classify(code, reply) from exc
            except smtplib.SMTPResponseException as exc:
                self._reset(conn)
                raise self._classify(exc.smtp_code, exc.smtp_error) from exc
            except (smtplib.SMTPException, OSError) as exc:
                self._drop()
                raise TransientError(f"smtp: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    def _reset(self, conn: smtplib.SMTP) -> None:
        try:
            conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    @staticmethod
    def _classify(code: int, reply: bytes | str) -> Exception:
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
        reason = f"smtp {code}: {text}"
        if code in _THROTTLE_CODES:
            return ThrottledError(reason, retry_after=30.0)
        if code == 530 or code == 535:
            return ConfigurationError(reason)
        if 400 <= code < 500:
            return TransientError(reason)
        return PermanentError(reason)

    def parse_result(self, raw: dict[str, Any], outbound: Outbound) -> SendResult:
        assert isinstance(outbound, OutboundEmail)
        return SendResult(provider_message_id=outbound.message_id_header.strip("<>"))

    def check(self) -> str:
        conn = self._connection(fresh=True)
        try:
            code, _ = conn.noop()
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise TransientError(f"smtp: NOOP failed: {exc}") from exc
        if code != 250:
            raise TransientError(f"smtp: NOOP answered {code}")
        user = self.settings.get("username")
        return f"connected to {self._key[0]}:{self._key[1]}" + (
            f", logged in as {user}" if user else ""
        )

    def close(self) -> None:
        self._drop()
