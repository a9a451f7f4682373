"""The record set a sending domain needs, and reading SPF and DMARC properly.

For ``acme.example`` in SES region R with DKIM tokens t1..t3:

======================================  =====  ============================================
name                                    type   value
======================================  =====  ============================================
``t1._domainkey.acme.example``          CNAME  ``t1.dkim.amazonses.com`` (x3)
``bounce.acme.example``                 MX     ``10 feedback-smtp.R.amazonses.com`` (MAIL FROM)
``bounce.acme.example``                 TXT    ``v=spf1 include:amazonses.com ~all``
``_dmarc.acme.example``                 TXT    ``v=DMARC1; p=quarantine; rua=mailto:<rua>``
``news.acme.example``                   MX     ``10 <our inbound listener host>``
``news.acme.example``                   TXT    ``v=spf1 include:amazonses.com ~all``
``_comms-challenge.acme.example``       TXT    ``comms-verification=<per-tenant challenge>``
======================================  =====  ============================================

The challenge record proves that *this tenant* controls the domain: SES
identities belong to our AWS account, so without it a second tenant could
claim a domain another tenant already verified.

SPF (RFC 7208) and DMARC (RFC 7489) values are parsed into terms and tags,
not matched as strings, so that drift checks tell a harmless rewrite from a
weakened policy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

RecordType = Literal["CNAME", "MX", "TXT"]
SES_SPF_INCLUDE = "include:amazonses.com"
#: DMARC policies from weakest to strongest
POLICY_STRENGTH = {"none": 0, "quarantine": 1, "reject": 2}


@dataclass(frozen=True)
class Record:
    name: str  # FQDN, ASCII, no trailing dot
    type: RecordType
    value: str  # presentation value without quotes; MX as "priority host"
    purpose: str
    ttl: int = 3600

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.type)


def to_ascii(domain: str) -> str:
    """The IDNA (punycode) form of a domain name, lower case, without the trailing dot."""
    name = domain.strip().rstrip(".").lower()
    if not name:
        raise ValueError("a domain name is required")
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"{domain!r} is not a valid domain name: {exc}") from None
    labels = ascii_name.split(".")
    if len(labels) < 2 or any(not label or len(label) > 63 for label in labels):
        raise ValueError(f"{domain!r} is not a valid domain name")
    if any(not all(c.isalnum() or c == "-" for c in label) for label in labels):
        raise ValueError(f"{domain!r} is not a valid domain name")
    return ascii_name


def spf_value() -> str:
    return f"v=spf1 {SES_SPF_INCLUDE} ~all"


def expected_records(
    domain: str,
    *,
    region: str,
    dkim_tokens: list[str],
    challenge: str,
    rua: str,
    inbound_host: str,
) -> list[Record]:
    records = [
        Record(f"{t}._domainkey.{domain}", "CNAME", f"{t}.dkim.amazonses.com", "dkim")
        for t in dkim_tokens
    ]
    records += [
        Record(f"bounce.{domain}", "MX", f"10 feedback-smtp.{region}.amazonses.com", "mail-from"),
        Record(f"bounce.{domain}", "TXT", spf_value(), "mail-from-spf"),
        Record(f"_dmarc.{domain}", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:{rua}", "dmarc"),
        Record(f"news.{domain}", "MX", f"10 {inbound_host}", "reply-mx"),
        Record(f"news.{domain}", "TXT", spf_value(), "reply-spf"),
        Record(f"_comms-challenge.{domain}", "TXT", f"comms-verification={challenge}", "ownership"),
    ]
    return records


def render(records: list[Record], fmt: str) -> str:
    """``table``, ``zone`` (BIND zone-file lines) or ``json``."""
    if fmt == "json":
        return json.dumps([r.to_json() for r in records], indent=2)
    if fmt == "zone":
        lines = []
        for r in records:
            value = f'"{r.value}"' if r.type == "TXT" else r.value
            if r.type in ("CNAME", "MX"):
                value = value + "."
            lines.append(f"{r.name}.\t{r.ttl}\tIN\t{r.type}\t{value}")
        return "\n".join(lines)
    width = max(len(r.name) for r in records)
    return "\n".join(f"{r.name:<{width}}  {r.type:<5}  {r.value}" for r in records)


# -- SPF and DMARC -------------------------------------------------------------
def unquote_txt(value: str) -> str:
    """A TXT value as one string: quoted chunks joined, as resolvers present them."""
    text = value.strip()
    if '"' not in text:
        return text
    chunks: list[str] = []
    current: list[str] = []
    inside = False
    escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            if inside:
                chunks.append("".join(current))
                current = []
            inside = not inside
        elif inside:
            current.append(ch)
    return "".join(chunks)


def parse_spf(value: str) -> list[str] | None:
    """The terms of an SPF record (lower case, qualifiers kept), or None if it is not SPF."""
    terms = unquote_txt(value).split()
    if not terms or terms[0].lower() != "v=spf1":
        return None
    return [t.lower() for t in terms[1:]]


def spf_includes_ses(value: str) -> bool:
    terms = parse_spf(value) or []
    return any(t.lstrip("+") == SES_SPF_INCLUDE for t in terms)


def parse_dmarc(value: str) -> dict[str, str] | None:
    """DMARC tags (``p``, ``sp``, ``pct``, ``rua``...), or None if it is not a DMARC record."""
    text = unquote_txt(value)
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if "=" not in part:
            continue
        key, _, val = part.partition("=")
        tags[key.strip().lower()] = val.strip()
    if tags.get("v", "").upper() != "DMARC1" or "p" not in tags:
        return None
    return tags


def dmarc_strength(tags: dict[str, str]) -> int:
    """0 none, 1 quarantine, 2 reject; a pct below 100 weakens quarantine/reject by one."""
    strength = POLICY_STRENGTH.get(tags.get("p", "none").lower(), 0)
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        pct = 100
    if pct < 100 and strength > 0:
        strength -= 1
    return strength
