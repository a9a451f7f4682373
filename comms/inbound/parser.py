"""Parse an inbound reply (raw RFC 5322 bytes) into the parts the product cares about.

Everything here is a pure function of the input bytes: no sockets, no database.

Approach:

* **Never raise.** The message is read with ``email.policy.default``; every header access
  goes through :class:`_Headers`, which falls back to the raw stored value (decoded leniently)
  when the modern header classes fail on a malformed value. Payloads are decoded with the
  declared charset, then UTF-8, then the declared charset (or UTF-8) with
  ``errors="replace"``. All strings that leave this module are valid Unicode without NULs, so
  :meth:`ParsedReply.to_json` is always serialisable and storable.
* **Bounded work.** Hostile input must not stall a worker: over-long top-level header
  fields are cut before the (superlinear) stdlib header parser sees them, HTML is read by a
  linear regex tokenizer instead of ``html.parser`` (quadratic on unclosed tags), and the
  line-marker regexes only look at lines of reasonable length.
* **Body.** The reply's own ``text/plain`` part is preferred (attached messages and
  ``message/delivery-status`` parts are never read as the body); HTML-only mail is converted
  to text after the client-specific quote containers (``blockquote``, ``gmail_quote``,
  ``yahoo_quoted``, ``moz-cite-prefix``, Outlook's ``appendonsend``/``divRplyFwdMsg``)
  have been dropped.
* **Quoted history.** :func:`strip_quotes` walks the lines: ``>``-quoted lines are
  dropped, mobile "Sent from my ..." lines are dropped, and the text is cut at the first line
  that opens the quoted history ("On <date>, <name> wrote:" and its translations, possibly
  wrapped over three lines; Outlook's "-----Original Message-----" and From/Sent/To header
  blocks, optionally under a line of underscores; forwarded-message separators). A
  "... wrote:" line followed by quoted lines *and then* new unquoted text is an inline
  (interleaved) reply: the unquoted answers are kept. Signatures are kept.
* **Auto-replies** are recognised from RFC 3834 ``Auto-Submitted``, the de-facto
  ``X-Autoreply``-style and ``Precedence`` headers, Exchange's rule headers and
  out-of-office subjects in several languages. ``X-Auto-Response-Suppress`` is not a signal:
  ordinary Exchange mail carries it.
* **Bounces** are read from RFC 3464 ``message/delivery-status`` parts when present;
  otherwise a message from MAILER-DAEMON/postmaster or with a bounce-like subject is scanned
  heuristically (qmail, Exim, sendmail formats) for failed recipients and the first SMTP
  reply code. A null ``Return-Path`` alone is *not* enough (RFC 3834 auto-replies use it
  too): it counts only with bounce wording in the body and no auto-reply header. A bounce is
  never also reported as an auto-reply.
"""

from __future__ import annotations

import base64
import email
import email.errors
import email.header
import email.policy
import html
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import Any

__all__ = ["Bounce", "ParsedReply", "html_to_text", "parse_message", "strip_quotes"]

# Marker patterns are only tried on (joined) lines up to this length, which keeps the
# regexes cheap on pathological input such as megabyte-long lines.
_MAX_MARKER_LEN = 400
# Longer header fields are cut before parsing (see _cap_header_fields).
_MAX_HEADER_FIELD = 32_768
# The heuristic bounce scanner reads at most this much of the human-readable body.
_MAX_BOUNCE_SCAN = 20_000


@dataclass(frozen=True)
class Bounce:
    """A delivery failure report for one or more recipients."""

    recipients: list[str]
    status: str | None
    temporary: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "recipients": list(self.recipients),
            "status": self.status,
            "temporary": self.temporary,
        }


@dataclass(frozen=True)
class ParsedReply:
    """What :func:`parse_message` found in one inbound message."""

    from_address: str | None
    from_name: str | None
    to: list[str]
    subject: str | None
    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    text: str
    html: str | None
    full_text: str
    auto_reply: bool
    auto_reply_reason: str | None
    bounce: Bounce | None
    reply_token: str | None
    headers_malformed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "html": self.html,
            "full_text": self.full_text,
            "auto_reply": self.auto_reply,
            "auto_reply_reason": self.auto_reply_reason,
            "bounce": self.bounce.to_json() if self.bounce else None,
            "reply_token": self.reply_token,
            "in_reply_to": self.in_reply_to,
            "references": list(self.references),
            "message_id": self.message_id,
            "from": self.from_address,
            "from_name": self.from_name,
            "to": list(self.to),
            "subject": self.subject,
        }


# --------------------------------------------------------------------------- strings


def _clean(value: str) -> str:
    """Valid Unicode without NULs: 8-bit header bytes smuggled in as surrogates become
    UTF-8 (or U+FFFD), stray surrogates become U+FFFD."""
    try:
        data = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = value.encode("utf-8", "replace")
    return data.decode("utf-8", "replace").replace("\x00", "")


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Declared charset, then UTF-8, then lenient; unknown charsets count as UTF-8."""
    candidates = [charset, "utf-8"] if charset else ["utf-8"]
    for candidate in candidates:
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeError, TypeError, ValueError):
            continue
    try:
        return data.decode(charset or "utf-8", "replace")
    except (LookupError, UnicodeError, TypeError, ValueError):
        return data.decode("utf-8", "replace")


def _decode_raw_header(raw: str) -> str:
    """Decode RFC 2047 encoded words in a raw header value without trusting them."""
    unfolded = re.sub(r"\r?\n[ \t]", " ", raw).strip()
    try:
        chunks = email.header.decode_header(unfolded)
    except Exception:
        return _clean(unfolded)
    parts: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, bytes):
            if charset in (None, "unknown-8bit"):
                parts.append(chunk.decode("utf-8", "replace"))
            else:
                parts.append(_decode_bytes(chunk, charset))
        else:
            parts.append(chunk)
    return _clean("".join(parts))


# --------------------------------------------------------------------------- headers


# Message-level defects that concern the header block (not the MIME structure or payloads).
_HEADER_DEFECTS = (
    email.errors.HeaderDefect,
    email.errors.MissingHeaderBodySeparatorDefect,
    email.errors.MisplacedEnvelopeHeaderDefect,
    email.errors.FirstHeaderLineIsContinuationDefect,
)


class _Headers:
    """Guarded header access that also notes whether any header was malformed."""

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        self.malformed = any(isinstance(d, _HEADER_DEFECTS) for d in msg.defects)

    def raw_all(self, name: str) -> list[str]:
        lname = name.lower()
        try:
            return [str(v) for k, v in self.msg.raw_items() if k.lower() == lname]
        except Exception:
            return []

    def all(self, name: str) -> list[str]:
        """Every value of ``name``, decoded; raw fallback when parsing fails."""
        try:
            values = self.msg.get_all(name) or []
            out: list[str] = []
            for value in values:
                if getattr(value, "defects", None):
                    self.malformed = True
                out.append(_clean(str(value)))
            return out
        except Exception:
            self.malformed = True
            return [_decode_raw_header(v) for v in self.raw_all(name)]

    def get(self, name: str) -> str | None:
        values = self.all(name)
        return values[0].strip() if values else None

    def present(self, name: str) -> bool:
        return bool(self.raw_all(name))

    def addresses(self, name: str) -> list[tuple[str, str]]:
        """(display name, addr-spec) pairs; addr-spec as written (case kept)."""
        pairs: list[tuple[str, str]] = []
        try:
            for header in self.msg.get_all(name) or []:
                if getattr(header, "defects", None):
                    self.malformed = True
                for address in getattr(header, "addresses", ()):
                    pairs.append((_clean(address.display_name), _clean(address.addr_spec)))
        except Exception:
            self.malformed = True
            pairs = []
        if pairs:
            return [(n, a) for n, a in pairs if a and a != "<>"]
        try:
            raw = [_decode_raw_header(v) for v in self.raw_all(name)]
            found = getaddresses(raw)
        except Exception:
            return []
        return [(_clean(n), _clean(a)) for n, a in found if a and "@" in a]


# --------------------------------------------------------------------------- MIME walking


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "text/plain"


def _is_attachment(part: Message) -> bool:
    try:
        return (part.get_content_disposition() or "") == "attachment"
    except Exception:
        return False


_BASE64_LINE_RE = re.compile(r"[A-Za-z0-9+/]*=*")


def _lenient_base64(payload: str) -> bytes:
    """Decode the well-formed lines of a base64 body and skip the rest.

    The stdlib hands back the undecoded text when one stray line spoils the whole body.
    """
    good = "".join(
        line.strip() for line in payload.splitlines() if _BASE64_LINE_RE.fullmatch(line.strip())
    ).replace("=", "")
    if len(good) % 4 == 1:
        good = good[:-1]
    return base64.b64decode(good + "=" * (-len(good) % 4))


def _payload_text(part: Message) -> str:
    try:
        cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    except Exception:
        cte = ""
    try:
        raw_payload = part.get_payload()
        if cte == "base64" and isinstance(raw_payload, str):
            data: Any = _lenient_base64(raw_payload)
        else:
            data = part.get_payload(decode=True)
    except Exception:
        data = None
    if not isinstance(data, bytes):
        try:
            payload = part.get_payload()
        except Exception:
            return ""
        return _clean(payload) if isinstance(payload, str) else ""
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return _clean(_decode_bytes(data, charset))


def _children(part: Message) -> list[Message]:
    try:
        payload = part.get_payload()
    except Exception:
        return []
    return [c for c in payload if isinstance(c, Message)] if isinstance(payload, list) else []


def _body_parts(msg: Message) -> Iterator[Message]:
    """Leaf parts of the reply itself, depth first, never inside message/* parts."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        ctype = _content_type(part)
        if ctype.startswith("message/") or depth > 20:
            continue
        if part.is_multipart():
            children = _children(part)
            if children:
                stack.extend((c, depth + 1) for c in reversed(children))
            continue
        if not _is_attachment(part):
            yield part


def _all_parts(msg: Message) -> Iterator[Message]:
    """Every part, including those of attached messages (bounded depth)."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        yield part
        children = _children(part) if part.is_multipart() and depth <= 20 else []
        if children:
            stack.extend((c, depth + 1) for c in reversed(children))


# --------------------------------------------------------------------------- HTML


# fmt: off
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "fieldset", "figure",
    "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav",
    "ol", "p", "pre", "section", "table", "tbody", "thead", "tfoot", "tr", "ul",
})
# fmt: on
_DROP_TAGS = frozenset({"script", "style", "head", "title", "template"})
# Containers of quoted history (Gmail, Yahoo, Thunderbird's "On ... wrote:" line); the
# Thunderbird quote itself is a <blockquote type="cite">.
_QUOTE_CLASSES = frozenset(
    {"gmail_quote", "gmail_quote_container", "yahoo_quoted", "moz-cite-prefix"}
)
# Outlook on the web / new Outlook: everything from this element on is the quoted message.
_OUTLOOK_CUT_IDS = frozenset({"appendonsend", "divrplyfwdmsg"})


# One regex scan over the markup. Every alternative is bounded or ends the input, so the
# scan is linear; the stdlib HTMLParser is quadratic on unclosed tags and comments
# (30 KB of "<a " takes seconds, 120 KB minutes). An unclosed tag ends after its bounded
# attribute run, as browsers recover.
_HTML_TOKEN_RE = re.compile(
    r"<!--.*?(?:-->|\Z)"
    r"|<[!?][^>]{0,2000}>?"
    r"|<(/?)([a-zA-Z][^\s/>]{0,64})((?:[^>\"']|\"[^\"]{0,4000}\"?|'[^']{0,4000}'?){0,1000})>?",
    re.DOTALL,
)
_ATTR_RE = re.compile(r"""([^\s=/>"']+)(?:\s*=\s*("[^"]*"?|'[^']*'?|[^\s>]+))?""")
# Elements whose content is not markup: skipped up to their end tag.
_RAW_TEXT_END = {
    tag: re.compile(rf"</{tag}\b[^>]{{0,100}}>?", re.IGNORECASE) for tag in ("script", "style")
}


def _attributes(source: str) -> list[tuple[str, str | None]]:
    return [
        (name.lower(), html.unescape(value.strip("\"'")) if value else None)
        for name, value in _ATTR_RE.findall(source)
    ]


class _TextExtractor:
    def __init__(self, drop_quotes: bool) -> None:
        self.drop_quotes = drop_quotes
        self.out: list[str] = []
        self.skip_tag: str | None = None
        self.skip_depth = 0
        self.drop_depth = 0
        self.pre_depth = 0
        self.stopped = False

    def _newline(self, count: int = 1) -> None:
        tail = "".join(self.out[-8:]).rstrip(" ")
        have = len(tail) - len(tail.rstrip("\n"))
        if have < count:
            self.out.append("\n" * (count - have))

    def _is_quote(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        if tag == "blockquote":
            return True
        if tag != "div":
            return False
        classes: set[str] = set()
        for name, value in attrs:
            if name == "class" and value:
                classes.update(value.split())
        return bool(classes & _QUOTE_CLASSES)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.stopped:
            return
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth += 1
            return
        if self.drop_quotes:
            ids = {(v or "").lower() for n, v in attrs if n == "id"}
            if ids & _OUTLOOK_CUT_IDS:
                self.stopped = True
                return
            if self._is_quote(tag, attrs):
                self.skip_tag, self.skip_depth = tag, 1
                return
        if tag in _DROP_TAGS:
            self.drop_depth += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag == "p":
            self._newline(2)
        elif tag in _BLOCK_TAGS:
            self._newline()
            if tag == "pre":
                self.pre_depth += 1
        elif tag in ("td", "th"):
            self.out.append(" ")

    def feed(self, markup: str) -> None:
        pos = 0
        while pos < len(markup) and not self.stopped:
            match = _HTML_TOKEN_RE.search(markup, pos)
            if match is None:
                self.handle_data(html.unescape(markup[pos:]))
                return
            if match.start() > pos:
                self.handle_data(html.unescape(markup[pos : match.start()]))
            pos = match.end()
            closing, name, attrs = match.group(1, 2, 3)
            if not name:
                continue  # comment, doctype, processing instruction
            tag = name.lower()
            if closing:
                self.handle_endtag(tag)
                continue
            self_closing = attrs.rstrip().endswith("/")
            if not self_closing or tag in ("br", "hr", "img", "meta", "link", "input"):
                self.handle_starttag(tag, _attributes(attrs))
            if tag in _RAW_TEXT_END and not self_closing:
                end = _RAW_TEXT_END[tag].search(markup, pos)
                pos = end.end() if end else len(markup)
                self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.stopped:
            return
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skip_tag = None
            return
        if tag in _DROP_TAGS:
            self.drop_depth = max(0, self.drop_depth - 1)
        elif tag == "p":
            self._newline(2)
        elif tag in _BLOCK_TAGS:
            self._newline()
            if tag == "pre":
                self.pre_depth = max(0, self.pre_depth - 1)

    def handle_data(self, data: str) -> None:
        if self.stopped or self.skip_tag is not None or self.drop_depth:
            return
        if not self.pre_depth:
            data = re.sub(r"[ \t\r\n\f]+", " ", data)
        self.out.append(data)


def html_to_text(markup: str, *, drop_quotes: bool = False) -> str:
    """Readable text of an HTML body; with ``drop_quotes`` the quoted history is left out."""
    extractor = _TextExtractor(drop_quotes)
    extractor.feed(markup)
    text = "".join(extractor.out).replace("\xa0", " ")
    # a lone "--" is the signature separator "-- " whose trailing space HTML collapsed
    lines = [line.strip() if line.strip() != "--" else "-- " for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# --------------------------------------------------------------------------- quote stripping

_WROTE_PATTERNS = [
    # English (Gmail, Apple Mail, Thunderbird): "On <date>, <name> wrote:"
    r"on\b.*\d.*\bwrote\s*:",
    # French: "Le <date>, <name> a écrit :"
    r"le\b.*\d.*\ba\s+[ée]crit\s*:",
    # German: "Am <date> schrieb <name>:"
    r"am\b.*\d.*\bschrieb\b.*:",
    # Spanish: "El <date>, <name> escribió:"
    r"el\b.*\d.*\bescribi[óo]\s*:",
    # Italian: "Il <date> <name> ha scritto:"
    r"il\b.*\d.*\bha\s+scritto\s*:",
    # Portuguese: "Em <date>, <name> escreveu:"
    r"em\b.*\d.*\bescreveu\s*:",
    # Dutch: "Op <date> schreef <name>:"
    r"op\b.*\d.*\bschreef\b.*:",
    # Swedish: "Den <date> skrev <name>:"
    r"den\b.*\d.*\bskrev\b.*:",
    # Japanese Gmail: "2025年3月17日(月) 9:00 <name>:"
    r"\d{4}年\d{1,2}月\d{1,2}日.*[:\uff1a]",
]
_WROTE_RE = re.compile(r"^\s*(?:" + "|".join(_WROTE_PATTERNS) + r")\s*$", re.IGNORECASE)
# "<name> wrote:" alone: a cut marker only when quoted lines (or nothing) follow it.
_BARE_WROTE_RE = re.compile(r"^\s*\S.{0,150}\bwrote\s*:\s*$", re.IGNORECASE)

_SEPARATOR_RE = re.compile(
    r"^\s*-{2,}\s*(?:original message|ursprüngliche nachricht|message d'origine|"
    r"mensaje original|messaggio originale|mensagem original|oorspronkelijk bericht|"
    r"originalmeddelande|forwarded message|weitergeleitete nachricht|message transféré|"
    r"mensaje reenviado)\s*-{2,}\s*$|^\s*begin forwarded message\s*:\s*$|"
    # where a bounce's returned copy of the original message starts (qmail, Exim, sendmail)
    r"^[\s-]*(?:below this line is a copy of the message|this is a copy of the message\b|"
    r"original message follows)",
    re.IGNORECASE,
)
_UNDERSCORES_RE = re.compile(r"^\s*_{10,}\s*$")
_HDR_FROM_RE = re.compile(r"^\s*\*?(?:from|de|von|van|da|från|od)\s*:\*?\s*\S", re.IGNORECASE)
_HDR_DATE_RE = re.compile(
    r"^\s*\*?(?:sent|date|envoy[ée]|gesendet|datum|enviado|enviada|fecha|inviato|data|"
    r"verzonden|skickat)\s*:",
    re.IGNORECASE,
)
_HDR_TO_RE = re.compile(
    r"^\s*\*?(?:to|à|a|an|para|aan|till|subject|objet|betreff|asunto|oggetto|assunto|"
    r"onderwerp|ämne)\s*:",
    re.IGNORECASE,
)
_MOBILE_SIGNATURE_RE = re.compile(
    r"^\s*(?:sent from my \S.*|sent from (?:yahoo mail|mail for windows|outlook)\b.*|"
    r"get outlook for (?:ios|android)\b.*|envoy[ée] de mon \S.*|von meinem \S.* gesendet|"
    r"enviado desde mi \S.*|inviato da(?:l mio)? \S.*|enviado do meu \S.*|"
    r"verzonden met \S.*|skickat från min \S.*)\s*$",
    re.IGNORECASE,
)


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _outlook_block(lines: list[str], i: int) -> bool:
    """``From:`` at line i followed within a few lines by a Sent/Date and a To/Subject."""
    if not _HDR_FROM_RE.match(lines[i]):
        return False
    window = lines[i + 1 : i + 7]
    return any(_HDR_DATE_RE.match(w) for w in window) and any(_HDR_TO_RE.match(w) for w in window)


def _wrote_marker(lines: list[str], i: int) -> int:
    """How many lines (1-3) the "On ... wrote:" header at line i spans, or 0."""
    if not lines[i].strip():
        return 0
    joined = ""
    for span in range(1, 4):
        if i + span > len(lines):
            break
        joined = (joined + " " + lines[i + span - 1].strip()).strip()
        if len(joined) > _MAX_MARKER_LEN:
            break
        if _WROTE_RE.match(joined):
            return span
    return 0


def _next_content(lines: list[str], j: int) -> str | None:
    for line in lines[j:]:
        if line.strip():
            return line
    return None


def _interleaved(lines: list[str], j: int) -> bool:
    """After a "wrote:" marker: quoted lines and then new unquoted text (inline answers)."""
    seen_quote = False
    for line in lines[j:]:
        if not line.strip() or _MOBILE_SIGNATURE_RE.match(line):
            continue
        if _is_quoted(line):
            seen_quote = True
        else:
            return seen_quote
    return False


def _marker(lines: list[str], i: int) -> tuple[str, int] | None:
    """("wrote" | "block", number of lines) when line i opens the quoted history."""
    line = lines[i]
    if len(line) > _MAX_MARKER_LEN:
        return None
    if _SEPARATOR_RE.match(line) or _outlook_block(lines, i):
        return "block", 1
    if _UNDERSCORES_RE.match(line):
        nxt = next((k for k in range(i + 1, len(lines)) if lines[k].strip()), None)
        if nxt is not None and _outlook_block(lines, nxt):
            return "block", 1
        return None
    span = _wrote_marker(lines, i)
    if span:
        return "wrote", span
    if _BARE_WROTE_RE.match(line):
        following = _next_content(lines, i + 1)
        if following is None or _is_quoted(following):
            return "wrote", 1
    return None


def strip_quotes(text: str) -> str:
    """The new text of a reply: quoted history, quoted lines and mobile footers removed."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _is_quoted(line) or _MOBILE_SIGNATURE_RE.match(line):
            i += 1
            continue
        found = _marker(lines, i)
        if found is not None:
            kind, span = found
            if kind == "wrote" and _interleaved(lines, i + span):
                i += span
                continue
            break
        kept.append(line if line == "-- " else line.rstrip())
        i += 1
    result = "\n".join(kept)
    return re.sub(r"\n{3,}", "\n\n", result).strip()


# --------------------------------------------------------------------------- auto-replies

_OOO_START = (
    r"out of (?:the )?office|automatic reply|auto-?reply|auto[- ]?response|"
    r"abwesenheitsnotiz|automatische antwort|réponse automatique|absence|"
    r"respuesta automática|fuera de la oficina|risposta automatica|fora do escritório|"
    r"resposta automática|afwezig|automatisch antwoord|on vacation|vacation"
)
_OOO_SUBJECT_START_RE = re.compile(
    r"^\s*(?:\[[^\]]{0,40}\]\s*)?(" + _OOO_START + r")\b", re.IGNORECASE
)
# Anywhere in the subject: phrases that are unambiguous, or any of them used as a prefix
# ("Re: x (Automatic reply: y)") or bracketed ("[Out of Office]").
_OOO_SUBJECT_ANY_RE = re.compile(
    r"(out of (?:the )?office|abwesenheitsnotiz|fuera de la oficina|fora do escritório|"
    r"(?:automatic reply|auto-?reply|auto[- ]?response|automatische antwort|"
    r"réponse automatique|respuesta automática|risposta automatica|resposta automática|"
    r"automatisch antwoord)(?=\s*:)|(?<=[\[(])(?:" + _OOO_START + r")(?=[\])]))",
    re.IGNORECASE,
)
_AUTO_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder")
_EXCHANGE_HEADERS = ("X-MS-Exchange-Inbox-Rules-Loop", "X-MS-Exchange-Generated-Message-Source")
_BULK_PRECEDENCE = frozenset({"bulk", "junk", "auto_reply", "list"})


def _auto_reply_reason(headers: _Headers, subject: str | None) -> str | None:
    auto_submitted = headers.get("Auto-Submitted")
    if auto_submitted is not None:
        value = auto_submitted.split(";")[0].strip().lower()
        if value != "no":
            return f"Auto-Submitted: {value or 'present'}"
    for name in _AUTO_HEADERS:
        if headers.present(name):
            return f"{name}: {headers.get(name) or ''}".rstrip(": ")
    precedence = (headers.get("Precedence") or "").strip().lower()
    if precedence in _BULK_PRECEDENCE:
        return f"Precedence: {precedence}"
    for name in _EXCHANGE_HEADERS:
        if headers.present(name):
            return f"{name}: {headers.get(name) or ''}".rstrip(": ")
    if subject:
        subject = subject[:1000]
        match = _OOO_SUBJECT_START_RE.search(subject) or _OOO_SUBJECT_ANY_RE.search(subject)
        if match:
            return f"subject: {match.group(1).lower()}"
    return None


# --------------------------------------------------------------------------- bounces

_ENHANCED_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_RE = re.compile(
    r"(?<![\w.:/#-])([45][0-5]\d)(?:[ -]+#?([245]\.\d{1,3}\.\d{1,3})(?![\d.]))?(?=[\s\-:,;.]|$)"
)
_ADDR_RE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
# Anchored at the start: a human "Re: my parcel was undeliverable" is not a bounce.
_BOUNCE_SUBJECT_RE = re.compile(
    r"^\s*(?:\[[^\]]{0,40}\]\s*)?(?:undeliver|returned mail|delivery status notification|"
    r"mail delivery failed|delivery failure|failure notice|non.?delivery|"
    r"mail delivery (?:failure|system)|delivery has failed|message not delivered|"
    r"warning: message .{0,100} delayed|delayed mail)",
    re.IGNORECASE,
)
_BOUNCE_SENDER_RE = re.compile(r"^(?:mailer-daemon|postmaster)$", re.IGNORECASE)
_BOUNCE_PHRASE_RE = re.compile(
    r"could ?n[o']t be delivered|couldn't be delivered|wasn't able to deliver|"
    r"following address(?:\(es\)|es)? (?:failed|had permanent)|address(?:\(es\)|es)? failed|"
    r"recipient address rejected|delivery to the following recipient|"
    r"user unknown|unknown user|no such user|does not exist|mailbox unavailable|"
    r"address not found|rcpt to|undeliverable|permanent fatal error|delivery has failed|"
    r"message could not be delivered|not able to deliver|delivery failed",
    re.IGNORECASE,
)
# Where the human-readable part of a non-standard bounce ends and the returned copy begins.
_RETURNED_COPY_RE = re.compile(
    r"below this line is a copy of the message|this is a copy of the message|"
    r"original message follows|unsent message below|^\s*-+\s*original message\s*-+\s*$|"
    r"^\s*return-path:|^\s*received: from",
    re.IGNORECASE,
)
_ADDRESS_LINE_RE = re.compile(r"^\s*<?([^\s<>@]+@[^\s<>@]+?)>?\s*:?\s*$")


def _status_of(text: str) -> str | None:
    match = _ENHANCED_RE.search(text)
    return match.group(0) if match else None


def _dsn_blocks(part: Message) -> list[dict[str, str]]:
    """The fields of a message/delivery-status part, one dict per block (lower-case names)."""
    try:
        payload = part.get_payload()
    except Exception:
        return []
    if isinstance(payload, list):
        text = "\n\n".join(
            "\n".join(f"{k}: {v}" for k, v in block.raw_items())
            for block in payload
            if isinstance(block, Message)
        )
    else:
        text = _payload_text(part)
    blocks: list[dict[str, str]] = []
    for chunk in re.split(r"\r?\n\s*\r?\n", text):
        fields: dict[str, str] = {}
        name = None
        for line in chunk.splitlines():
            if line[:1] in (" ", "\t") and name:
                fields[name] += " " + line.strip()
            elif ":" in line:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                fields.setdefault(name, value.strip())
        if fields:
            blocks.append(fields)
    return blocks


def _dsn_address(value: str) -> str | None:
    address = value.partition(";")[2] if ";" in value else value
    address = _clean(address).strip().strip("<>").strip().lower()
    return address if "@" in address else None


def _standard_bounce(msg: Message) -> tuple[bool, Bounce | None]:
    """(whether a delivery-status part listed any recipient, the bounce it reports).

    The bounce is None when the report lists only delivered/relayed recipients."""
    saw_recipient = False
    recipients: list[str] = []
    statuses: list[tuple[str | None, bool]] = []
    for part in _all_parts(msg):
        if _content_type(part) not in (
            "message/delivery-status",
            "message/global-delivery-status",
        ):
            continue
        for fields in _dsn_blocks(part):
            address_field = fields.get("final-recipient") or fields.get("original-recipient")
            if not address_field:
                continue
            saw_recipient = True
            action = fields.get("action", "").strip().lower()
            status = _status_of(fields.get("status", "")) or _status_of(
                fields.get("diagnostic-code", "")
            )
            if action in ("failed", "delayed") or (
                not action and status is not None and status[0] in "45"
            ):
                address = _dsn_address(address_field)
                if address and address not in recipients:
                    recipients.append(address)
                temporary = action == "delayed" or (status or "").startswith("4")
                statuses.append((status, temporary))
    if not statuses:
        return saw_recipient, None
    permanent = [s for s in statuses if not s[1]]
    status = (permanent or statuses)[0][0]
    return True, Bounce(recipients=recipients, status=status, temporary=not permanent)


def _heuristic_bounce(body: str, exclude: set[str], subject: str) -> Bounce:
    """Failed recipients and SMTP code from a free-text bounce (qmail, Exim, sendmail...)."""
    lines: list[str] = []
    for line in body[:_MAX_BOUNCE_SCAN].splitlines():
        if _RETURNED_COPY_RE.search(line):
            break
        lines.append(line)
    recipients: list[str] = []

    def add(address: str) -> None:
        address = address.strip("<>.,;:()[]'\"").lower()
        if "@" in address and address not in exclude and address not in recipients:
            recipients.append(address)

    for i, line in enumerate(lines):
        standalone = _ADDRESS_LINE_RE.match(line)
        if standalone:
            add(standalone.group(1))
        elif _BOUNCE_PHRASE_RE.search(line):
            found = _ADDR_RE.findall(line)
            for address in found:
                add(address)
            if not found and line.rstrip().endswith(":"):
                for follow in lines[i + 1 : i + 4]:
                    for address in _ADDR_RE.findall(follow):
                        add(address)
    status: str | None = None
    temporary: bool | None = None
    for line in lines:
        smtp = _SMTP_RE.search(line)
        if smtp:
            code, enhanced = smtp.group(1), smtp.group(2)
            status = enhanced or _status_of(line) or f"{code[0]}.0.0"
            temporary = status.startswith("4")
            break
        enhanced_only = _status_of(line)
        if enhanced_only:
            status, temporary = enhanced_only, enhanced_only.startswith("4")
            break
    if temporary is None:
        words = f"{subject}\n" + "\n".join(lines)
        temporary = bool(
            re.search(
                r"\b(?:delayed|temporar|will (?:keep|continue) trying|still trying)", words, re.I
            )
        ) and not re.search(r"permanent", words, re.I)
    return Bounce(recipients=recipients, status=status, temporary=temporary)


# --------------------------------------------------------------------------- reply token

_REPLY_TOKEN_RE = re.compile(r"^reply\+([^@]+)@", re.IGNORECASE)


def _token_of(address: str) -> str | None:
    bare = parseaddr(address)[1] or address
    match = _REPLY_TOKEN_RE.match(bare.strip().strip("<>").strip())
    if match:
        token = "".join(match.group(1).split())
        return token or None
    return None


def _reply_token(headers: _Headers, recipients: Sequence[str]) -> str | None:
    for recipient in recipients:
        token = _token_of(_clean(str(recipient)))
        if token:
            return token
    for name in ("Delivered-To", "X-Original-To", "To", "Cc"):
        for _, address in headers.addresses(name):
            token = _token_of(address)
            if token:
                return token
    return None


# --------------------------------------------------------------------------- entry point


def _ids(value: str | None) -> list[str]:
    if not value:
        return []
    bracketed = re.findall(r"<[^<>\s]*>", value)
    return bracketed or value.split()


def _cap_header_fields(raw: bytes) -> tuple[bytes, bool]:
    """Truncate over-long fields of the top-level header block.

    The modern header parser is superlinear (tens of thousands of encoded words or
    addresses take minutes and gigabytes), so no field gets more than _MAX_HEADER_FIELD.
    """
    end = re.search(rb"\r?\n\r?\n", raw)
    head_end = end.start() if end else len(raw)
    if head_end <= _MAX_HEADER_FIELD:
        return raw, False
    head = raw[:head_end]
    fields = re.split(rb"\r?\n(?![ \t])", head)
    if all(len(field) <= _MAX_HEADER_FIELD for field in fields):
        return raw, False
    newline = b"\r\n" if b"\r\n" in head else b"\n"
    capped = newline.join(field[:_MAX_HEADER_FIELD] for field in fields)
    return capped + raw[head_end:], True


def _parse(raw: bytes) -> tuple[Message, bool]:
    """The parsed message, and whether its header block had to be truncated."""
    raw, capped = _cap_header_fields(raw)
    try:
        return email.message_from_bytes(raw, policy=email.policy.default), capped
    except Exception:  # the feed parser is lenient; this is the never-raise backstop
        return email.message_from_bytes(b"", policy=email.policy.default), True


def parse_message(raw: bytes, *, recipients: Sequence[str] = ()) -> ParsedReply:
    """Parse one inbound message; never raises, whatever ``raw`` holds.

    ``recipients`` are the SMTP envelope RCPT TO addresses; they are searched first for the
    ``reply+TOKEN@`` address.
    """
    msg, capped = _parse(bytes(raw))
    headers = _Headers(msg)
    headers.malformed |= capped

    from_pairs = headers.addresses("From")
    from_name, from_address = from_pairs[0] if from_pairs else ("", "")
    subject = headers.get("Subject")
    in_reply_to_ids = _ids(headers.get("In-Reply-To"))
    headers.get("Date")  # only parsed for its defects

    plain: str | None = None
    markup: str | None = None
    for part in _body_parts(msg):
        ctype = _content_type(part)
        if ctype == "text/plain" and plain is None:
            candidate = _payload_text(part)
            plain = candidate if candidate.strip() else None
        elif ctype == "text/html" and markup is None:
            markup = _payload_text(part)
        if plain is not None and markup is not None:
            break

    if plain is not None:
        full_text = plain.replace("\r\n", "\n").replace("\r", "\n").strip()
        text = strip_quotes(full_text)
    elif markup is not None:
        full_text = html_to_text(markup)
        text = strip_quotes(html_to_text(markup, drop_quotes=True))
    else:
        full_text = text = ""

    reason = _auto_reply_reason(headers, subject)
    bounce = _bounce(msg, headers, from_address.strip().lower(), subject or "", full_text, reason)

    return ParsedReply(
        from_address=from_address.strip().lower() or None,
        from_name=from_name.strip() or None,
        to=[address for _, address in headers.addresses("To")],
        subject=subject,
        message_id=headers.get("Message-ID"),
        in_reply_to=in_reply_to_ids[0] if in_reply_to_ids else None,
        references=_ids(headers.get("References")),
        text=text,
        html=markup,
        full_text=full_text,
        auto_reply=reason is not None and bounce is None,
        auto_reply_reason=reason if bounce is None else None,
        bounce=bounce,
        reply_token=_reply_token(headers, recipients),
        headers_malformed=headers.malformed,
    )


def _bounce(
    msg: Message,
    headers: _Headers,
    from_address: str | None,
    subject: str,
    body: str,
    auto_reply_reason: str | None,
) -> Bounce | None:
    has_report, standard = _standard_bounce(msg)
    if has_report:
        return standard
    local_part = (from_address or "").partition("@")[0]
    null_sender = any(v.strip() in ("<>", "") for v in headers.raw_all("Return-Path"))
    looks_like_bounce = (
        bool(_BOUNCE_SENDER_RE.match(local_part))
        or bool(_BOUNCE_SUBJECT_RE.search(subject[:1000]))
        or (
            null_sender
            and auto_reply_reason is None
            and bool(_BOUNCE_PHRASE_RE.search(body[:_MAX_BOUNCE_SCAN]))
        )
    )
    if not looks_like_bounce:
        return None
    exclude = {from_address} if from_address else set()
    bounce = _heuristic_bounce(body, exclude, subject)
    # Exim names the failed recipients in a header as well.
    failed = [
        address.lower()
        for _, address in headers.addresses("X-Failed-Recipients")
        if address.lower() not in bounce.recipients
    ]
    if failed:
        bounce = Bounce(bounce.recipients + failed, bounce.status, bounce.temporary)
    return bounce
