"""The SSRF guard refuses every non-public destination unless an operator allows it."""

from __future__ import annotations

import pytest

from comms.netguard import BlockedDestination, resolve_public


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "::1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
     "100.64.0.1", "fe80::1", "::ffff:127.0.0.1", "0.0.0.0",  # noqa: S104 (a refused target)
     "fd00:ec2::254", "224.0.0.1",
     "localhost"],
)  # fmt: skip
def test_non_public_destinations_are_refused(host: str) -> None:
    with pytest.raises(BlockedDestination):
        resolve_public(host, 443)


def test_public_addresses_pass_and_are_pinned() -> None:
    assert resolve_public("93.184.216.34", 443) == "93.184.216.34"
    assert resolve_public("2606:4700::1111", 443) == "2606:4700::1111"


def test_the_operator_allowlist_overrides() -> None:
    assert resolve_public("127.0.0.1", 80, allow=["127.0.0.0/8"]) == "127.0.0.1"
    with pytest.raises(BlockedDestination):
        resolve_public("10.0.0.1", 80, allow=["127.0.0.0/8"])
