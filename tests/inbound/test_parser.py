"""The inbound-reply parser against a corpus of real-world shaped mail, plus fuzzing.

Each ``corpus/*.eml`` file has an entry in ``corpus/expected.json``. Supported keys:
``text`` (exact), ``text_contains`` / ``text_excludes`` / ``full_text_contains`` /
``full_text_excludes`` (substring lists), ``auto_reply``, ``auto_reply_reason``, ``bounce``
(null or the Bounce fields), ``reply_token``, ``html_present``, ``headers_malformed``, any
other ``to_json()`` key (compared exactly), and ``recipients`` (the SMTP envelope
recipients passed to the parser).
"""

from __future__ import annotations

import json
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comms.inbound.parser import Bounce, ParsedReply, html_to_text, parse_message, strip_quotes

CORPUS = Path(__file__).parent / "corpus"
EXPECTED: dict[str, dict[str, Any]] = json.loads(
    (CORPUS / "expected.json").read_text(encoding="utf-8")
)
CORPUS_BYTES = {name: (CORPUS / name).read_bytes() for name in sorted(EXPECTED)}
SUBSTRING_CHECKS = {
    "text_contains": ("text", True),
    "text_excludes": ("text", False),
    "full_text_contains": ("full_text", True),
    "full_text_excludes": ("full_text", False),
}


def check(parsed: ParsedReply) -> dict[str, Any]:
    """Invariants every result keeps; returns the JSON form."""
    data = parsed.to_json()
    json.dumps(data, ensure_ascii=False).encode("utf-8")  # serialisable and valid Unicode
    assert parsed.text == parsed.text.strip()
    assert not (parsed.auto_reply and parsed.bounce)
    if parsed.bounce is not None:
        assert all(r == r.lower() for r in parsed.bounce.recipients)
    return data


def test_corpus_is_complete() -> None:
    on_disk = {p.name for p in CORPUS.glob("*.eml")}
    assert on_disk == set(EXPECTED)
    assert len(on_disk) >= 30


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus(name: str) -> None:
    expected = dict(EXPECTED[name])
    parsed = parse_message(CORPUS_BYTES[name], recipients=expected.pop("recipients", ()))
    data = check(parsed)
    for key, value in expected.items():
        if key in SUBSTRING_CHECKS:
            field, present = SUBSTRING_CHECKS[key]
            for fragment in value:
                assert (fragment in data[field]) is present, (key, fragment, data[field])
        elif key == "html_present":
            assert (parsed.html is not None) is value
        elif key == "headers_malformed":
            assert parsed.headers_malformed is value
        else:
            assert data[key] == value, (key, data[key])


def test_well_formed_mail_is_not_flagged_malformed() -> None:
    parsed = parse_message(CORPUS_BYTES["gmail_alternative.eml"])
    assert parsed.headers_malformed is False
    assert parsed.to == ["reply+AbC123.xyz_-@news.acme.example"]


def test_envelope_recipient_wins_over_headers() -> None:
    parsed = parse_message(
        CORPUS_BYTES["gmail_alternative.eml"], recipients=["<REPLY+first@acme.example>"]
    )
    assert parsed.reply_token == "first"


def test_strip_quotes_keeps_interleaved_answers_and_signature() -> None:
    text = "On Mon, 3 Mar 2025, Bob wrote:\n> Q1?\nA1\n> Q2?\nA2\n\n-- \nAnn\n"
    assert strip_quotes(text) == "A1\nA2\n\n-- \nAnn"


def test_strip_quotes_bare_wrote_needs_quoted_lines() -> None:
    assert strip_quotes("Here is what Bob wrote:\nsomething new") == (
        "Here is what Bob wrote:\nsomething new"
    )
    assert strip_quotes("Hi\n\nBob Smith <bob@x.example> wrote:\n> old") == "Hi"


def test_html_to_text_drops_scripts_and_unescapes() -> None:
    markup = "<style>p{}</style><script>alert(1)</script><p>a &lt; b</p><div>c<br>d</div>"
    assert html_to_text(markup) == "a < b\n\nc\nd"


@pytest.mark.parametrize(
    ("header", "subject", "expected"),
    [
        ("Auto-Submitted: auto-generated", "Hi", "Auto-Submitted: auto-generated"),
        ("Auto-Submitted: no", "Hi", None),
        ("X-Autorespond: 1", "Hi", "X-Autorespond: 1"),
        ("X-Autoresponder: yes", "Hi", "X-Autoresponder: yes"),
        ("Precedence: junk", "Hi", "Precedence: junk"),
        ("Precedence: first-class", "Hi", None),
        (
            "X-MS-Exchange-Inbox-Rules-Loop: a@b.example",
            "Hi",
            "X-MS-Exchange-Inbox-Rules-Loop: a@b.example",
        ),
        ("X-Auto-Response-Suppress: All", "Hi", None),
        ("X-Mailer: x", "Out of Office: Re: your order", "subject: out of office"),
        ("X-Mailer: x", "Jane Doe is out of the office", "subject: out of the office"),
        ("X-Mailer: x", "[Auto-Reply] Re: your order", "subject: auto-reply"),
        ("X-Mailer: x", "Afwezig: Re: bestelling", "subject: afwezig"),
        ("X-Mailer: x", "Automatisch antwoord: Re: bestelling", "subject: automatisch antwoord"),
        ("X-Mailer: x", "Risposta automatica: Re: ordine", "subject: risposta automatica"),
        ("X-Mailer: x", "Re: How do I set up an auto-reply?", None),
        ("X-Mailer: x", "Re: Absence of invoice", None),
    ],
)
def test_auto_reply_rules(header: str, subject: str, expected: str | None) -> None:
    raw = f"From: a@b.example\nTo: c@d.example\nSubject: {subject}\n{header}\n\nbody\n"
    parsed = parse_message(raw.encode())
    assert parsed.auto_reply_reason == expected
    assert parsed.auto_reply is (expected is not None)


def test_null_return_path_alone_is_not_a_bounce() -> None:
    raw = b"Return-Path: <>\nFrom: a@b.example\nSubject: Re: hi\n\nThanks, received.\n"
    assert parse_message(raw).bounce is None
    raw = b"Return-Path: <>\nFrom: a@b.example\nSubject: hi\n\n<x@y.example>: user unknown\n"
    bounce = parse_message(raw).bounce
    assert bounce == Bounce(recipients=["x@y.example"], status=None, temporary=False)


def test_bounce_to_json() -> None:
    bounce = Bounce(recipients=["a@b.example"], status="5.1.1", temporary=False)
    assert bounce.to_json() == {
        "recipients": ["a@b.example"],
        "status": "5.1.1",
        "temporary": False,
    }


# --------------------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=5000))
def test_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    check(parse_message(raw))


@st.composite
def mutated_corpus(draw: st.DrawFn) -> bytes:
    data = bytearray(CORPUS_BYTES[draw(st.sampled_from(sorted(CORPUS_BYTES)))])
    for _ in range(draw(st.integers(0, 20))):
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        start = draw(st.integers(0, len(data)))
        data[start:start] = draw(st.binary(max_size=200))
    return bytes(data)


@FUZZ
@given(mutated_corpus())
def test_never_raises_on_mutated_corpus(raw: bytes) -> None:
    check(parse_message(raw))


HEADER_NAMES = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Auto-Submitted",
    "Precedence",
    "X-Autoreply",
    "Delivered-To",
    "Return-Path",
    "Content-Type",
    "Content-Transfer-Encoding",
    "X-Failed-Recipients",
]
CHARSETS = ["utf-8", "iso-8859-1", "windows-1252", "shift_jis", "iso-2022-jp", "x-unknown", ""]
ENCODINGS = ["7bit", "8bit", "base64", "quoted-printable", "x-uuencode", "bogus"]
SUBTYPES = ["plain", "html", "delivery-status", "rfc822"]
header_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"),
    max_size=80,
) | st.sampled_from(
    [
        "=?utf-8?q?broken",
        "=?x-nope?B?////?=",
        "<>",
        "reply+Tok@x.example",
        "auto-replied",
        "bulk",
        "Undeliverable: hi",
        "multipart/report; report-type=delivery-status; boundary=b",
        "Thirty-first of Feb",
        '"unterminated <a@b',
    ]
)
body_text = st.text(max_size=400) | st.sampled_from(
    [
        "Hi\n\nOn Mon, 3 Mar 2025 Bob wrote:\n> old\n",
        "<div class='gmail_quote'><blockquote>x</blockquote></div><p>y",
        "Final-Recipient: rfc822; a@b\nAction: failed\nStatus: 5.1.1\n",
        "<a@b.example>:\n550 5.1.1 no\n",
    ]
)


@st.composite
def generated_mime(draw: st.DrawFn) -> bytes:
    lines = [
        f"{draw(st.sampled_from(HEADER_NAMES))}: {draw(header_text)}"
        for _ in range(draw(st.integers(0, 8)))
    ]
    boundary = "b"
    lines.append(f"Content-Type: multipart/{draw(st.sampled_from(['mixed', 'report']))}; ")
    lines.append(f' boundary="{boundary}"; report-type=delivery-status')
    head = "\r\n".join(lines).encode("utf-8", "replace")
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        charset = draw(st.sampled_from(CHARSETS))
        subtype = draw(st.sampled_from(SUBTYPES))
        major = "message" if subtype in ("delivery-status", "rfc822") else "text"
        text = draw(body_text)
        try:
            payload = text.encode(charset or "utf-8")
        except (LookupError, UnicodeError):
            payload = text.encode("utf-8")
        part_head = (
            f"--{boundary}\r\nContent-Type: {major}/{subtype}; charset={charset}\r\n"
            f"Content-Transfer-Encoding: {draw(st.sampled_from(ENCODINGS))}\r\n\r\n"
        ).encode()
        parts.append(part_head + payload + b"\r\n")
    closing = f"--{boundary}--\r\n".encode() if draw(st.booleans()) else b""
    return head + b"\r\n\r\n" + b"".join(parts) + closing


@FUZZ
@given(generated_mime())
def test_never_raises_on_generated_mime(raw: bytes) -> None:
    check(parse_message(raw, recipients=["reply+fuzz@x.example"]))


@FUZZ
@given(
    st.text(max_size=200),
    st.sampled_from(CHARSETS[:-2]),
    st.sampled_from(["base64", "quoted-printable", "8bit"]),
)
def test_round_trips_stdlib_generated_mail(text: str, charset: str, cte: str) -> None:
    msg = EmailMessage()
    msg["From"] = "Ann <ann@example.org>"
    msg["To"] = "reply+Round1@acme.example"
    msg["Subject"] = "Re: hello"
    try:
        msg.set_content(text, charset=charset, cte=cte)
        raw = msg.as_bytes(policy=SMTP)
    except (UnicodeError, ValueError, LookupError):
        return
    parsed = parse_message(raw)
    check(parsed)
    assert parsed.reply_token == "Round1"
    assert parsed.from_address == "ann@example.org"
