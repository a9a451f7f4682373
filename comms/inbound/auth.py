"""Is a reply really from who it says? DKIM, SPF and DMARC for inbound mail.

Two modes:

- **Behind a trusted MTA** (``COMMS_INBOUND_TRUSTED_AUTHSERV_ID`` set): the
  topmost ``Authentication-Results`` header with that authserv-id is believed
  (RFC 8601), with its ``X-Spam-Score``/``X-Spam-Status`` score. Headers from any
  other authserv-id are ignored, since the sender could have written them.
- **Directly on the internet**: DKIM signatures are verified with dkimpy, SPF
  is evaluated with pyspf for the connecting address and envelope sender, and
  DMARC passes when a passing DKIM or SPF identity aligns (relaxed) with the
  From domain; the policy record is looked up so that a domain without one
  reads ``none`` rather than ``fail``.

DNS goes through ``txt_lookup`` (dnspython), which tests replace.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.policy import compat32

from comms.settings import get_settings

TxtLookup = Callable[[str], list[str]]
_RESULT = re.compile(r"\b(dkim|spf|dmarc)\s*=\s*([a-z]+)", re.IGNORECASE)
_SCORE = re.compile(r"score\s*=\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


@dataclass(frozen=True)
class AuthResults:
    dkim: str = "none"
    spf: str = "none"
    dmarc: str = "none"
    spam_score: float | None = None
    source: str = "none"  # trusted-mta | verified | none


def dns_txt(name: str) -> list[str]:
    """TXT records of ``name`` (empty when there are none or DNS fails)."""
    import dns.exception
    import dns.resolver

    try:
        answer = dns.resolver.resolve(name, "TXT", lifetime=5.0)
    except (dns.exception.DNSException, OSError):
        return []
    return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]


def _organisational(domain: str) -> str:
    # relaxed alignment without a public-suffix list: the last two labels
    # (three for the common second-level suffixes such as co.uk)
    labels = domain.lower().strip(".").split(".")
    if len(labels) >= 3 and len(labels[-2]) <= 3 and len(labels[-1]) == 2:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def aligned(a: str | None, b: str | None) -> bool:
    return bool(a and b) and _organisational(a or "") == _organisational(b or "")


def _domain(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rsplit("@", 1)[1].strip(" >").lower() or None


def _spam_score(msg: Message) -> float | None:
    for name in ("X-Spam-Score", "X-Spam-Status"):
        value = msg.get(name)
        if value is None:
            continue
        text = str(value)
        match = _SCORE.search(text) or re.match(r"\s*(-?\d+(?:\.\d+)?)", text)
        if match:
            return float(match.group(1))
    return None


def _trusted(msg: Message, authserv_id: str) -> AuthResults | None:
    for header in msg.get_all("Authentication-Results") or []:
        text = str(header)
        if text.split(";", 1)[0].strip().split()[0:1] != [authserv_id]:
            continue
        found = {kind.lower(): result.lower() for kind, result in _RESULT.findall(text)[::-1]}
        return AuthResults(
            dkim=found.get("dkim", "none"),
            spf=found.get("spf", "none"),
            dmarc=found.get("dmarc", "none"),
            spam_score=_spam_score(msg),
            source="trusted-mta",
        )
    return None


def _dkim(raw: bytes, lookup: TxtLookup) -> tuple[str, str | None]:
    """(result, signing domain) of the first DKIM signature."""
    import dkim

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes:
        key = name.decode() if isinstance(name, bytes) else name
        records = lookup(key.rstrip("."))
        return records[0].encode() if records else b""

    try:
        verifier = dkim.DKIM(raw)
        signatures = [h for h in verifier.headers if h[0].lower() == b"dkim-signature"]
    except Exception:  # dkimpy raises many kinds on broken mail
        return "permerror", None
    if not signatures:
        return "none", None
    tags = dict(
        part.strip().split("=", 1)
        for part in signatures[0][1].decode("ascii", "replace").replace("\r\n", "").split(";")
        if "=" in part
    )
    domain = tags.get("d", "").strip().lower() or None
    try:
        ok = verifier.verify(dnsfunc=dnsfunc)
    except dkim.ValidationError:  # body hash or signature does not match
        return "fail", domain
    except dkim.DnsTimeoutError:
        return "temperror", domain
    except Exception:  # a malformed signature or key
        return "permerror", domain
    return ("pass" if ok else "fail"), domain


def _spf(client_ip: str | None, mail_from: str | None, helo: str | None) -> str:
    if not client_ip:
        return "none"
    import spf

    try:
        result, _explanation = spf.check2(i=client_ip, s=mail_from or "", h=helo or "unknown")
    except Exception:  # DNS trouble is a temporary error
        return "temperror"
    return str(result)


def _dmarc_policy(domain: str, lookup: TxtLookup) -> str | None:
    for name in (f"_dmarc.{domain}", f"_dmarc.{_organisational(domain)}"):
        for record in lookup(name):
            if record.lower().startswith("v=dmarc1"):
                return record
    return None


def authenticate(
    raw: bytes,
    *,
    client_ip: str | None = None,
    mail_from: str | None = None,
    helo: str | None = None,
    lookup: TxtLookup | None = None,
) -> AuthResults:
    """Authentication results for one raw message; never raises."""
    try:
        msg = message_from_bytes(raw, policy=compat32)
    except Exception:
        return AuthResults()
    authserv_id = get_settings().inbound_trusted_authserv_id
    if authserv_id:
        return _trusted(msg, authserv_id) or AuthResults(source="trusted-mta")
    lookup = lookup or dns_txt
    dkim_result, dkim_domain = _dkim(raw, lookup)
    spf_result = _spf(client_ip, mail_from, helo)
    from_domain = _domain(str(msg.get("From") or ""))
    dmarc = "none"
    if from_domain and _dmarc_policy(from_domain, lookup):
        passes = (dkim_result == "pass" and aligned(dkim_domain, from_domain)) or (
            spf_result == "pass" and aligned(_domain(mail_from), from_domain)
        )
        dmarc = "pass" if passes else "fail"
    return AuthResults(dkim=dkim_result, spf=spf_result, dmarc=dmarc, source="verified")
