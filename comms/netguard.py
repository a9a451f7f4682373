"""SSRF guard for outbound HTTP to tenant-chosen URLs (webhook provider, consumers).

A destination is refused when any address its name resolves to is loopback,
private, link-local, multicast, reserved, shared (CGNAT), unspecified or a
cloud metadata address, IPv4 or IPv6 (IPv4-mapped included), unless an
operator allowlist (``COMMS_WEBHOOK_ALLOW_NETWORKS``) permits it. The address
checked is the address connected to: the request is pinned to it, so a DNS
answer cannot change between the check and the connection.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Sequence

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class BlockedDestination(Exception):
    """The destination resolves to an address comms must not call."""


def allowed_networks() -> list[str]:
    raw = os.environ.get("COMMS_WEBHOOK_ALLOW_NETWORKS", "")
    return [part.strip() for part in raw.split(",") if part.strip()]


def _refusal(ip: IPAddress) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _refusal(ip.ipv4_mapped)
    if ip in _METADATA:
        return "a cloud metadata address"
    checks = [
        ("loopback", ip.is_loopback), ("private", ip.is_private),
        ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified), ("reserved", ip.is_reserved),
        ("shared (CGNAT)", isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT),
    ]  # fmt: skip
    for label, hit in checks:
        if hit:
            return label
    return None


def resolve_public(host: str, port: int, *, allow: Sequence[str] = ()) -> str:
    """Resolve ``host`` and return the address to pin, or raise BlockedDestination."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BlockedDestination(f"{host} does not resolve: {exc.strerror}") from None
    allowed = [ipaddress.ip_network(net, strict=False) for net in allow]
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for text in addresses:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
        if any(ip in net for net in allowed):
            continue
        why = _refusal(ip)
        if why is not None:
            raise BlockedDestination(f"{host} resolves to {ip}, {why}")
    return addresses[0]


class PinnedTransport(httpx.HTTPTransport):
    """Connects to the checked address while keeping the Host header and TLS name."""

    def __init__(self, allow: Sequence[str] | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.allow = list(allow) if allow is not None else allowed_networks()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        ip = resolve_public(host, port, allow=self.allow)
        request.headers["Host"] = request.url.netloc.decode()
        if request.url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": host}
        request.url = request.url.copy_with(host=ip)
        return super().handle_request(request)
