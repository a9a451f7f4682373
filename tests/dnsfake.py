"""A small authoritative DNS server on loopback, for tests that talk real DNS.

Approach
--------
``AuthoritativeDns`` binds one TCP and one UDP socket to the same free port on
127.0.0.1 and serves each from its own ``socketserver`` thread (TCP connections
get a thread each). Every message, whatever the transport, goes through
``_Engine.handle_wire``, which parses it with dnspython, answers it and renders
the reply; the record set is a dict ``{owner name: {rdtype: Rdataset}}`` guarded
by one lock (dnspython names hash and compare case-insensitively, so lookups are
case-insensitive for free).

Queries (opcode QUERY) are answered like an authoritative server would: REFUSED
for names outside every added zone; otherwise the AA flag is set and the answer
is the RRset, or the CNAME at the name (chased while the target stays inside a
served zone), or NODATA (NOERROR, empty answer, SOA in authority) when the name
exists -- including empty non-terminals such as ``_domainkey.acme.example.``
when only ``s1._domainkey.acme.example.`` has records -- or NXDOMAIN (SOA in
authority). Not implemented: wildcards, delegations below the apex, DNSSEC, zone
transfers, NOTIFY (those get NOTIMP).

RFC 2136 UPDATE messages for a served zone apply the update section (add RRs,
delete an RRset, delete all RRsets at a name, delete single RRs), following the
RFC's special cases (apex SOA/NS are never deleted, CNAME and other data do not
mix, an added SOA replaces the old one); prerequisites are ignored. The apex SOA
serial is bumped after each update that changed something.

TSIG: each message carrying a TSIG record is verified with
``dns.message.from_wire(wire, keyring=...)`` against ``tsig_keys``
(hmac-sha256). A bad signature or unknown key is answered the RFC 8945 way:
NOTAUTH with an unsigned TSIG whose error field is BADSIG/BADKEY/BADTIME, which
dnspython's client raises as ``dns.tsig.PeerBadSignature``/``PeerBadKey``/
``PeerBadTime``. When ``tsig_keys`` is given, an unsigned UPDATE is answered
REFUSED. Replies to correctly signed messages are signed with the same key
(``dns.message.make_response`` does that), so ``dns.query.tcp(update, ...)``
with a keyring accepts them. Every key may update every served zone.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
import types
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.resolver
import dns.rrset
import dns.tsig
import dns.update
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TSIG import TSIG

__all__ = ["AuthoritativeDns"]

_HOST = "127.0.0.1"
_MAX_CNAME_CHAIN = 8
_TCP_IDLE_SECONDS = 5.0
_POLL_SECONDS = 0.05
_UDP_DEFAULT_PAYLOAD = 512
_TCP_MAX_MESSAGE = 65535
_SOA_TTL = 300
_NS_TTL = 300
# Types that can only appear in questions; an UPDATE must not add them.
_META_TYPES = frozenset(
    {
        dns.rdatatype.ANY,
        dns.rdatatype.AXFR,
        dns.rdatatype.IXFR,
        dns.rdatatype.MAILA,
        dns.rdatatype.MAILB,
        dns.rdatatype.OPT,
        dns.rdatatype.TSIG,
        dns.rdatatype.TKEY,
    }
)
_TSIG_ERRORS: tuple[tuple[type[Exception], dns.rcode.Rcode], ...] = (
    (dns.message.UnknownTSIGKey, dns.rcode.BADKEY),
    (dns.tsig.BadKey, dns.rcode.BADKEY),
    (dns.tsig.BadAlgorithm, dns.rcode.BADKEY),
    (dns.tsig.BadSignature, dns.rcode.BADSIG),
    (dns.tsig.BadTime, dns.rcode.BADTIME),
)

_Node = dict[dns.rdatatype.RdataType, dns.rdataset.Rdataset]


def _name(text: str) -> dns.name.Name:
    """An absolute name from ``text``; a name without trailing dot is taken as absolute."""
    return dns.name.from_text(text)


def _rdtype(text: str) -> dns.rdatatype.RdataType:
    return dns.rdatatype.from_text(text.upper())


class _Engine:
    """The record set plus the message handling; shared by both transports."""

    def __init__(self, keyring: dict[dns.name.Name, dns.tsig.Key]) -> None:
        self.keyring = keyring
        self.lock = threading.RLock()
        self.zones: set[dns.name.Name] = set()
        self.records: dict[dns.name.Name, _Node] = {}

    # ----------------------------------------------------------- record set
    def zone_for(self, name: dns.name.Name) -> dns.name.Name | None:
        """The closest served zone containing ``name`` (caller holds the lock)."""
        best: dns.name.Name | None = None
        for origin in self.zones:
            if name.is_subdomain(origin) and (best is None or len(origin) > len(best)):
                best = origin
        return best

    def name_exists(self, name: dns.name.Name) -> bool:
        """True if ``name`` owns records or is an empty non-terminal above some."""
        return any(owner.is_subdomain(name) for owner in self.records)

    def soa(self, origin: dns.name.Name) -> dns.rdataset.Rdataset:
        rds = self.records.get(origin, {}).get(dns.rdatatype.SOA)
        if rds is None:  # deleted by hand: synthesise again
            rds = self.synthetic_soa(origin, serial=1)
            self.records.setdefault(origin, {})[dns.rdatatype.SOA] = rds
        return rds

    @staticmethod
    def synthetic_soa(origin: dns.name.Name, serial: int) -> dns.rdataset.Rdataset:
        ns1 = dns.name.from_text("ns1", origin)
        mbox = dns.name.from_text("hostmaster", origin)
        text = f"{ns1} {mbox} {serial} 3600 600 86400 300"
        return dns.rdataset.from_text_list("IN", "SOA", _SOA_TTL, [text])

    def bump_serial(self, origin: dns.name.Name) -> None:
        rds = self.soa(origin)
        old = cast(SOA, rds[0])
        new = old.replace(serial=(old.serial + 1) % 2**32)
        self.records[origin][dns.rdatatype.SOA] = dns.rdataset.from_rdata(rds.ttl, new)

    # ------------------------------------------------------------- dispatch
    def handle_wire(self, wire: bytes, udp: bool) -> bytes | None:
        """Answer one DNS message; None when there is nothing sensible to send back."""
        try:
            raw = dns.message.from_wire(wire, keyring=False)  # parse; TSIG not checked yet
        except dns.message.ShortHeader:
            return None
        except Exception:
            return _header_only_reply(wire, dns.rcode.FORMERR)

        message = raw
        if raw.had_tsig:
            try:
                message = dns.message.from_wire(wire, keyring=self.keyring)
            except Exception as exc:
                for exc_type, code in _TSIG_ERRORS:
                    if isinstance(exc, exc_type):
                        return _tsig_error_reply(raw, code)
                return _header_only_reply(wire, dns.rcode.FORMERR)

        try:
            response = dns.message.make_response(message, our_payload=_TCP_MAX_MESSAGE)
            opcode = message.opcode()
            if opcode == dns.opcode.QUERY:
                self.answer_query(message, response)
            elif opcode == dns.opcode.UPDATE:
                self.apply_update(cast(dns.update.UpdateMessage, message), response)
            else:
                response.set_rcode(dns.rcode.NOTIMP)
            return _render(response, message, udp)
        except Exception:  # a bug in this fake: say so instead of letting the client time out
            return _header_only_reply(wire, dns.rcode.SERVFAIL)

    # ---------------------------------------------------------------- query
    def answer_query(self, query: dns.message.Message, response: dns.message.Message) -> None:
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return
        question = query.question[0]
        if question.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
            response.set_rcode(dns.rcode.REFUSED)
            return
        qtype = question.rdtype
        with self.lock:
            zone = self.zone_for(question.name)
            if zone is None:
                response.set_rcode(dns.rcode.REFUSED)
                return
            response.flags |= dns.flags.AA
            name = question.name
            for _ in range(_MAX_CNAME_CHAIN):
                node = self.records.get(name)
                if node is None:
                    if not self.name_exists(name):
                        response.set_rcode(dns.rcode.NXDOMAIN)
                    self.add_negative_soa(response, zone)
                    return
                if qtype == dns.rdatatype.ANY:
                    for rds in node.values():
                        response.answer.append(_rrset(name, rds))
                    return
                if qtype in node:
                    response.answer.append(_rrset(name, node[qtype]))
                    return
                cname = node.get(dns.rdatatype.CNAME)
                if cname is None or qtype == dns.rdatatype.CNAME:
                    self.add_negative_soa(response, zone)  # NODATA
                    return
                response.answer.append(_rrset(name, cname))
                target = cast(CNAME, cname[0]).target
                next_zone = self.zone_for(target)
                if next_zone is None:
                    return  # out of our data: the resolver follows it
                name, zone = target, next_zone
            response.set_rcode(dns.rcode.SERVFAIL)  # CNAME loop

    def add_negative_soa(self, response: dns.message.Message, zone: dns.name.Name) -> None:
        soa = self.soa(zone)
        minimum = cast(SOA, soa[0]).minimum
        response.authority.append(dns.rrset.from_rdata_list(zone, min(soa.ttl, minimum), list(soa)))

    # --------------------------------------------------------------- update
    def apply_update(self, update: dns.update.UpdateMessage, response: dns.message.Message) -> None:
        if self.keyring and not update.had_tsig:
            response.set_rcode(dns.rcode.REFUSED)
            return
        if len(update.zone) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return
        origin = update.zone[0].name
        with self.lock:
            if origin not in self.zones:
                response.set_rcode(dns.rcode.NOTAUTH)
                return
            for rrset in update.update:
                if not rrset.name.is_subdomain(origin):
                    response.set_rcode(dns.rcode.NOTZONE)
                    return
                if rrset.deleting is None and rrset.rdtype in _META_TYPES:
                    response.set_rcode(dns.rcode.FORMERR)
                    return
            changed = False
            for rrset in update.update:
                changed = self.apply_rrset(origin, rrset) or changed
            if changed:
                self.bump_serial(origin)

    def apply_rrset(self, origin: dns.name.Name, rrset: dns.rrset.RRset) -> bool:
        """Apply one update-section RRset (RFC 2136 section 3.4.2); True if data changed."""
        name, rdtype = rrset.name, rrset.rdtype
        node = self.records.get(name, {})
        apex = name == origin
        if rrset.deleting == dns.rdataclass.ANY:
            if rdtype == dns.rdatatype.ANY:
                doomed = [t for t in node if not (apex and t in _APEX_TYPES)]
            else:
                doomed = [rdtype] if rdtype in node and not (apex and rdtype in _APEX_TYPES) else []
            for t in doomed:
                del node[t]
            self._drop_if_empty(name)
            return bool(doomed)
        if rrset.deleting == dns.rdataclass.NONE:
            existing = node.get(rdtype)
            if existing is None or (apex and rdtype == dns.rdatatype.SOA):
                return False
            kept = [rd for rd in existing if rd not in rrset]
            if len(kept) == len(existing) or (apex and rdtype == dns.rdatatype.NS and not kept):
                return False
            if kept:
                node[rdtype] = dns.rdataset.from_rdata_list(existing.ttl, kept)
            else:
                del node[rdtype]
            self._drop_if_empty(name)
            return True
        # add
        if rdtype == dns.rdatatype.CNAME:
            if any(t != dns.rdatatype.CNAME for t in node):
                return False  # CNAME and other data: the add is ignored
            merged = list(rrset)[:1]
        elif dns.rdatatype.CNAME in node:
            return False
        elif rdtype == dns.rdatatype.SOA:
            if not apex:
                return False
            merged = list(rrset)[:1]
        else:
            existing = node.get(rdtype)
            merged = list(rrset) if existing is None else [*existing]
            if existing is not None:
                merged += [rd for rd in rrset if rd not in existing]
        self.records.setdefault(name, {})[rdtype] = dns.rdataset.from_rdata_list(rrset.ttl, merged)
        return True

    def _drop_if_empty(self, name: dns.name.Name) -> None:
        if name in self.records and not self.records[name]:
            del self.records[name]


_APEX_TYPES = frozenset({dns.rdatatype.SOA, dns.rdatatype.NS})


def _rrset(name: dns.name.Name, rds: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    return dns.rrset.from_rdata_list(name, rds.ttl, list(rds))


def _render(response: dns.message.Message, request: dns.message.Message, udp: bool) -> bytes:
    """Wire form of ``response``; over UDP a reply that does not fit the requester's
    payload size (512, or its EDNS size) is sent empty with TC set, prompting TCP."""
    if not udp:
        return response.to_wire(max_size=_TCP_MAX_MESSAGE)
    limit = (
        max(_UDP_DEFAULT_PAYLOAD, request.payload) if request.edns >= 0 else _UDP_DEFAULT_PAYLOAD
    )
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        response.answer.clear()
        response.authority.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit)


def _header_only_reply(wire: bytes, rcode: dns.rcode.Rcode) -> bytes | None:
    """A bare header echoing the request id and opcode, for messages we cannot parse."""
    if len(wire) < 12:
        return None
    (msg_id, flags) = struct.unpack("!HH", wire[:4])
    opcode_bits = flags & 0x7800
    return struct.pack("!HHHHHH", msg_id, 0x8000 | opcode_bits | int(rcode), 0, 0, 0, 0)


def _tsig_error_reply(request: dns.message.Message, error: dns.rcode.Rcode) -> bytes:
    """NOTAUTH with an unsigned TSIG carrying ``error`` (RFC 8945 section 5.2)."""
    response = dns.message.make_response(request)  # request.keyring is unset: no signing
    response.set_rcode(dns.rcode.NOTAUTH)
    wire = response.to_wire()
    assert request.tsig is not None
    request_tsig = cast(TSIG, request.tsig[0])
    error_tsig = request_tsig.replace(mac=b"", error=int(error), other=b"")
    rdata = error_tsig.to_wire()
    assert rdata is not None
    owner = request.tsig.name.to_wire()
    assert owner is not None
    record = owner + struct.pack("!HHIH", dns.rdatatype.TSIG, dns.rdataclass.ANY, 0, len(rdata))
    (arcount,) = struct.unpack("!H", wire[10:12])
    return wire[:10] + struct.pack("!H", arcount + 1) + wire[12:] + record + rdata


# ------------------------------------------------------------------ transports
class _UdpServer(socketserver.UDPServer):
    allow_reuse_address = False  # on Linux SO_REUSEADDR lets two UDP sockets share a port
    max_packet_size = _TCP_MAX_MESSAGE

    def __init__(self, port: int, engine: _Engine) -> None:
        self.engine = engine
        super().__init__((_HOST, port), _UdpHandler)


class _UdpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = cast(_UdpServer, self.server)
        data, sock = cast(tuple[bytes, socket.socket], self.request)
        reply = server.engine.handle_wire(data, udp=True)
        if reply is not None:
            with contextlib.suppress(OSError):  # the client went away
                sock.sendto(reply, self.client_address)


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, engine: _Engine) -> None:
        self.engine = engine
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((_HOST, port), _TcpHandler)

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle client connections so they can be joined."""
        with self.connections_lock:
            for conn in self.connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class _TcpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = cast(_TcpServer, self.server)
        sock = cast(socket.socket, self.request)
        sock.settimeout(_TCP_IDLE_SECONDS)
        with server.connections_lock:
            server.connections.add(sock)
        try:
            while True:
                header = _recv_exact(sock, 2)
                if header is None:
                    return
                wire = _recv_exact(sock, struct.unpack("!H", header)[0])
                if wire is None:
                    return
                reply = server.engine.handle_wire(wire, udp=False)
                if reply is None:
                    return
                sock.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            return  # timeout, reset, or shut down by stop()
        finally:
            with server.connections_lock:
                server.connections.discard(sock)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


class AuthoritativeDns:
    """UDP+TCP DNS server on 127.0.0.1:<free port>, in a background thread, serving an
    in-memory record set.

    ``tsig_keys`` maps key names to hmac-sha256 secrets; when given, RFC 2136 updates
    must be signed with one of them. Use as a context manager or call ``start``/``stop``.
    """

    def __init__(self, tsig_keys: dict[str, bytes] | None = None) -> None:
        keyring = {
            _name(key_name): dns.tsig.Key(_name(key_name), secret, dns.tsig.HMAC_SHA256)
            for key_name, secret in (tsig_keys or {}).items()
        }
        self._engine = _Engine(keyring)
        self.port: int = 0
        self._udp: _UdpServer | None = None
        self._tcp: _TcpServer | None = None
        self._threads: list[threading.Thread] = []

    # ----------------------------------------------------------- lifecycle
    def start(self) -> AuthoritativeDns:
        """Bind TCP to a free port, UDP to the same port (retrying on a clash), serve."""
        if self._tcp is not None:
            raise RuntimeError("already started")
        for _ in range(50):
            tcp = _TcpServer(0, self._engine)
            port = int(tcp.server_address[1])
            try:
                udp = _UdpServer(port, self._engine)
            except OSError:
                tcp.server_close()
                continue
            break
        else:
            raise RuntimeError("no port free for both UDP and TCP")
        self._tcp, self._udp, self.port = tcp, udp, port
        for server, label in ((tcp, "tcp"), (udp, "udp")):
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": _POLL_SECONDS},
                name=f"dnsfake-{label}-{port}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving, close every socket, join every thread. Idempotent."""
        tcp, udp = self._tcp, self._udp
        self._tcp = self._udp = None
        if tcp is None or udp is None:
            return
        tcp.shutdown()
        udp.shutdown()
        tcp.close_connections()
        tcp.server_close()  # joins the per-connection threads
        udp.server_close()
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def __enter__(self) -> AuthoritativeDns:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    # --------------------------------------------------------------- data
    def add_zone(self, origin: str) -> None:
        """Serve ``origin`` authoritatively, with a synthesised SOA and NS ns1.<origin>."""
        zone = _name(origin)
        with self._engine.lock:
            if zone in self._engine.zones:
                return
            self._engine.zones.add(zone)
            node = self._engine.records.setdefault(zone, {})
            node.setdefault(dns.rdatatype.SOA, _Engine.synthetic_soa(zone, serial=1))
            ns = dns.rdataset.from_text_list("IN", "NS", _NS_TTL, [f"ns1.{zone}"])
            node.setdefault(dns.rdatatype.NS, ns)

    def set(self, name: str, rdtype: str, values: list[str], ttl: int = 300) -> None:
        """Replace the RRset ``name``/``rdtype`` with ``values`` (presentation format).

        Relative names inside values are taken relative to the zone; an empty
        ``values`` deletes the RRset. Raises ValueError if ``name`` is outside every
        added zone.
        """
        owner = _name(name)
        with self._engine.lock:
            zone = self._engine.zone_for(owner)
            if zone is None:
                raise ValueError(f"{owner} is not in a served zone; call add_zone first")
            if not values:
                self.delete(name, rdtype)
                return
            rds = dns.rdataset.from_text_list(
                "IN", rdtype.upper(), ttl, values, origin=zone, relativize=False
            )
            self._engine.records.setdefault(owner, {})[rds.rdtype] = rds

    def delete(self, name: str, rdtype: str | None = None) -> None:
        """Delete one RRset, or every RRset at ``name`` when ``rdtype`` is None."""
        owner = _name(name)
        with self._engine.lock:
            node = self._engine.records.get(owner)
            if node is None:
                return
            if rdtype is None:
                node.clear()
            else:
                node.pop(_rdtype(rdtype), None)
            self._engine._drop_if_empty(owner)

    def get(self, name: str, rdtype: str) -> list[str]:
        """The RRset's values in presentation format (e.g. ``'"v=spf1 -all"'``), or []."""
        with self._engine.lock:
            rds = self._engine.records.get(_name(name), {}).get(_rdtype(rdtype))
            return [] if rds is None else [rd.to_text() for rd in rds]

    def resolver(self) -> dns.resolver.Resolver:
        """A dnspython resolver asking only this server (no /etc/resolv.conf)."""
        if self.port == 0:
            raise RuntimeError("start the server first")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [_HOST]
        resolver.port = self.port
        resolver.timeout = 2.0
        resolver.lifetime = 4.0
        return resolver
