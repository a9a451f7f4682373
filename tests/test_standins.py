"""The local DNS server and Cloudflare API stand-ins behave as the tests relying on them assume.

Each test starts its own stand-in on a free loopback port (cheap: a socket and a
thread), talks to it with the real client libraries (dnspython, httpx) and checks
the observable protocol behaviour. No database fixtures are used.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.tsig
import dns.tsigkeyring
import dns.update
import httpx
import pytest

from tests.cloudflare_standin import CloudflareStandIn
from tests.dnsfake import AuthoritativeDns

KEY_NAME = "comms-ddns."
SECRET = b"0123456789abcdef0123456789abcdef"
ZONE = "acme.example."


def keyring(secret: bytes = SECRET, name: str = KEY_NAME) -> dict[dns.name.Name, Any]:
    """A client keyring the way callers build one: base64 secret via dnspython."""
    return dns.tsigkeyring.from_text({name: base64.b64encode(secret).decode()})


def signed_update(ring: dict[dns.name.Name, Any] | None = None) -> dns.update.UpdateMessage:
    return dns.update.UpdateMessage(
        ZONE, keyring=ring or keyring(), keyalgorithm=dns.tsig.HMAC_SHA256
    )


@pytest.fixture
def dns_server() -> Iterator[AuthoritativeDns]:
    with AuthoritativeDns(tsig_keys={KEY_NAME: SECRET}) as server:
        server.add_zone(ZONE)
        server.set("_dmarc.acme.example.", "TXT", ['"v=DMARC1; p=quarantine"'])
        server.set("news.acme.example.", "MX", ["10 inbound.comms.example."])
        server.set("links.acme.example.", "CNAME", ["track.acme.example."])
        server.set("track.acme.example.", "A", ["192.0.2.10"])
        server.set("s1._domainkey.acme.example.", "TXT", ['"v=DKIM1; k=rsa; p=AAAA"'])
        yield server


def ask(server: AuthoritativeDns, name: str, rdtype: str, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(query, "127.0.0.1", port=server.port, timeout=2)
    return dns.query.udp(query, "127.0.0.1", port=server.port, timeout=2)


# --------------------------------------------------------------------- DNS
def test_resolver_answers_txt_mx_and_cname(dns_server: AuthoritativeDns) -> None:
    resolver = dns_server.resolver()
    txt = resolver.resolve("_DMARC.Acme.Example.", "TXT")
    assert [r.to_text() for r in txt] == ['"v=DMARC1; p=quarantine"']
    mx = resolver.resolve("news.acme.example.", "MX")
    assert [r.to_text() for r in mx] == ["10 inbound.comms.example."]
    a = resolver.resolve("links.acme.example.", "A")
    assert a.canonical_name == dns.name.from_text("track.acme.example.")
    assert [r.to_text() for r in a] == ["192.0.2.10"]
    response = a.response
    assert response.flags & dns.flags.AA
    assert [rrset.rdtype for rrset in response.answer] == [
        dns.rdatatype.CNAME,
        dns.rdatatype.A,
    ]
    cname = resolver.resolve("links.acme.example.", "CNAME")
    assert [r.to_text() for r in cname] == ["track.acme.example."]


def test_nxdomain_and_nodata_carry_the_soa(dns_server: AuthoritativeDns) -> None:
    resolver = dns_server.resolver()
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("missing.acme.example.", "TXT")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("news.acme.example.", "TXT")

    nx = ask(dns_server, "missing.acme.example.", "A")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert nx.flags & dns.flags.AA
    assert [r.rdtype for r in nx.authority] == [dns.rdatatype.SOA]

    nodata = ask(dns_server, "news.acme.example.", "A")
    assert nodata.rcode() == dns.rcode.NOERROR
    assert nodata.answer == []
    assert [r.rdtype for r in nodata.authority] == [dns.rdatatype.SOA]

    # an empty non-terminal exists: NODATA, not NXDOMAIN
    ent = ask(dns_server, "_domainkey.acme.example.", "TXT")
    assert ent.rcode() == dns.rcode.NOERROR
    assert ent.answer == []


def test_names_outside_served_zones_are_refused(dns_server: AuthoritativeDns) -> None:
    response = ask(dns_server, "www.example.org.", "A")
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA
    with pytest.raises(dns.resolver.NoNameservers):
        dns_server.resolver().resolve("www.example.org.", "A")


def test_apex_soa_and_ns_are_synthesised_and_tcp_works(dns_server: AuthoritativeDns) -> None:
    response = ask(dns_server, ZONE, "NS", tcp=True)
    assert response.rcode() == dns.rcode.NOERROR
    assert [r.to_text() for r in response.answer[0]] == ["ns1.acme.example."]
    soa = dns_server.get(ZONE, "SOA")
    assert soa == ["ns1.acme.example. hostmaster.acme.example. 1 3600 600 86400 300"]


def test_set_get_delete(dns_server: AuthoritativeDns) -> None:
    dns_server.set("news.acme.example", "TXT", ['"v=spf1 include:comms.example -all"'], ttl=60)
    assert dns_server.get("NEWS.acme.example.", "txt") == ['"v=spf1 include:comms.example -all"']
    answer = dns_server.resolver().resolve("news.acme.example.", "TXT")
    assert answer.rrset is not None and answer.rrset.ttl == 60
    dns_server.delete("news.acme.example.", "TXT")
    assert dns_server.get("news.acme.example.", "TXT") == []
    assert dns_server.get("news.acme.example.", "MX") == ["10 inbound.comms.example."]
    dns_server.delete("news.acme.example.")
    assert ask(dns_server, "news.acme.example.", "MX").rcode() == dns.rcode.NXDOMAIN
    with pytest.raises(ValueError, match="not in a served zone"):
        dns_server.set("www.example.org.", "A", ["192.0.2.1"])


def test_signed_update_is_applied_and_the_reply_is_signed(dns_server: AuthoritativeDns) -> None:
    update = signed_update()
    update.add("bounce", 300, "MX", "10 feedback.comms.example.")
    update.replace("_dmarc", 300, "TXT", '"v=DMARC1; p=reject"')
    update.delete("news", "MX")  # delete RRset
    update.delete("s1._domainkey", "TXT", '"v=DKIM1; k=rsa; p=AAAA"')  # delete one RR
    response = dns.query.tcp(update, "127.0.0.1", port=dns_server.port, timeout=2)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.had_tsig  # verified by dnspython against the request's key

    assert dns_server.get("bounce.acme.example.", "MX") == ["10 feedback.comms.example."]
    assert dns_server.get("_dmarc.acme.example.", "TXT") == ['"v=DMARC1; p=reject"']
    assert dns_server.get("news.acme.example.", "MX") == []
    assert dns_server.get("s1._domainkey.acme.example.", "TXT") == []
    assert dns_server.get(ZONE, "SOA")[0].split()[2] == "2"  # serial bumped once

    over_udp = signed_update()
    over_udp.add("bounce", 300, "MX", "20 feedback2.comms.example.")
    assert dns.query.udp(over_udp, "127.0.0.1", port=dns_server.port, timeout=2).rcode() == 0
    assert sorted(dns_server.get("bounce.acme.example.", "MX")) == [
        "10 feedback.comms.example.",
        "20 feedback2.comms.example.",
    ]


def test_unsigned_update_is_refused_and_not_applied(dns_server: AuthoritativeDns) -> None:
    update = dns.update.UpdateMessage(ZONE)
    update.add("evil", 300, "A", "192.0.2.66")
    update.delete("_dmarc", "TXT")
    response = dns.query.tcp(update, "127.0.0.1", port=dns_server.port, timeout=2)
    assert response.rcode() == dns.rcode.REFUSED
    assert dns_server.get("evil.acme.example.", "A") == []
    assert dns_server.get("_dmarc.acme.example.", "TXT") == ['"v=DMARC1; p=quarantine"']


def test_wrong_key_update_is_notauth_and_not_applied(dns_server: AuthoritativeDns) -> None:
    wrong_secret = signed_update(keyring(secret=b"not-the-secret-at-all-0123456789"))
    wrong_secret.add("evil", 300, "A", "192.0.2.66")
    with pytest.raises(dns.tsig.PeerBadSignature):
        dns.query.tcp(wrong_secret, "127.0.0.1", port=dns_server.port, timeout=2)

    unknown_key = signed_update(keyring(name="someone-else."))
    unknown_key.add("evil", 300, "A", "192.0.2.66")
    with pytest.raises(dns.tsig.PeerBadKey):
        dns.query.udp(unknown_key, "127.0.0.1", port=dns_server.port, timeout=2)

    # on the wire: NOTAUTH with an (unsigned) TSIG carrying BADSIG
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(wrong_secret.to_wire(), ("127.0.0.1", dns_server.port))
        reply = dns.message.from_wire(sock.recv(65535), keyring=False)
    assert reply.rcode() == dns.rcode.NOTAUTH
    assert reply.tsig_error == dns.rcode.BADSIG
    assert dns_server.get("evil.acme.example.", "A") == []


def test_update_for_a_zone_not_served_is_notauth(dns_server: AuthoritativeDns) -> None:
    update = dns.update.UpdateMessage(
        "example.org.", keyring=keyring(), keyalgorithm=dns.tsig.HMAC_SHA256
    )
    update.add("www", 300, "A", "192.0.2.1")
    response = dns.query.tcp(update, "127.0.0.1", port=dns_server.port, timeout=2)
    assert response.rcode() == dns.rcode.NOTAUTH


def test_unsigned_updates_are_accepted_without_keys() -> None:
    with AuthoritativeDns() as server:
        server.add_zone(ZONE)
        update = dns.update.UpdateMessage(ZONE)
        update.add("open", 300, "TXT", '"ok"')
        response = dns.query.udp(update, "127.0.0.1", port=server.port, timeout=2)
        assert response.rcode() == dns.rcode.NOERROR
        assert server.get("open.acme.example.", "TXT") == ['"ok"']


def test_mutations_and_queries_from_many_threads(dns_server: AuthoritativeDns) -> None:
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            resolver = dns_server.resolver()
            for step in range(15):
                name = f"t{index}-{step}.acme.example."
                dns_server.set(name, "TXT", [f'"{step}"'])
                answer = resolver.resolve(name, "TXT")
                assert [r.to_text() for r in answer] == [f'"{step}"']
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# -------------------------------------------------------------- Cloudflare
TOKEN = "token-all"
SCOPED = "token-other-zone"


@pytest.fixture
def cloudflare() -> Iterator[CloudflareStandIn]:
    tokens = {TOKEN: {"*"}, SCOPED: {"other.example"}}
    with CloudflareStandIn(tokens=tokens, per_page_max=100) as standin:
        standin.add_zone("acme.example")
        standin.add_zone("other.example")
        yield standin


@pytest.fixture
def api(cloudflare: CloudflareStandIn) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=cloudflare.base_url, headers=headers, timeout=5) as client:
        yield client


def zone_id(api: httpx.Client, name: str = "acme.example") -> str:
    body = api.get("/zones", params={"name": name, "status": "active"}).json()
    return str(body["result"][0]["id"])


def create(api: httpx.Client, zid: str, **record: Any) -> httpx.Response:
    return api.post(f"/zones/{zid}/dns_records", json=record)


def test_zone_lookup(cloudflare: CloudflareStandIn, api: httpx.Client) -> None:
    response = api.get("/zones", params={"name": "acme.example", "status": "active"})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["errors"] == [] and body["messages"] == []
    [zone] = body["result"]
    assert len(zone["id"]) == 32 and int(zone["id"], 16) >= 0
    assert zone["name"] == "acme.example" and zone["status"] == "active"
    assert zone["name_servers"]
    assert body["result_info"] == {
        "page": 1,
        "per_page": 20,
        "count": 1,
        "total_count": 1,
        "total_pages": 1,
    }
    assert api.get("/zones", params={"name": "nope.example"}).json()["result"] == []
    assert ("GET", "/client/v4/zones?name=acme.example&status=active") in cloudflare.requests


def test_create_record_and_duplicate(cloudflare: CloudflareStandIn, api: httpx.Client) -> None:
    zid = zone_id(api)
    response = create(
        api, zid, type="MX", name="news.acme.example", content="inbound.comms.example.",
        ttl=300, priority=10, comment="managed by comms",
    )  # fmt: skip
    assert response.status_code == 200
    record = response.json()["result"]
    assert record["type"] == "MX" and record["name"] == "news.acme.example"
    assert record["content"] == "inbound.comms.example"
    assert record["priority"] == 10 and record["ttl"] == 300 and record["proxied"] is False
    assert record["zone_id"] == zid and record["zone_name"] == "acme.example"
    assert record["comment"] == "managed by comms"
    assert len(record["id"]) == 32 and record["created_on"] == record["modified_on"]

    txt = create(api, zid, type="TXT", name="_dmarc", content='"v=DMARC1; p=none"', ttl=1)
    assert txt.json()["result"]["name"] == "_dmarc.acme.example"  # relative name completed
    assert txt.json()["result"]["content"] == '"v=DMARC1; p=none"'  # stored as given
    assert "priority" not in txt.json()["result"]

    duplicate = create(
        api, zid, type="TXT", name="_dmarc.acme.example", content='"v=DMARC1; p=none"'
    )
    assert duplicate.status_code == 400
    assert duplicate.json()["success"] is False
    assert duplicate.json()["errors"] == [
        {"code": 81058, "message": "An identical record already exists."}
    ]

    cname_over_txt = create(api, zid, type="CNAME", name="_dmarc.acme.example", content="x.example")
    assert cname_over_txt.json()["errors"][0]["code"] == 81053
    assert create(api, zid, type="CNAME", name="links", content="t.comms.example").is_success
    a_over_cname = create(api, zid, type="A", name="links.acme.example", content="192.0.2.1")
    assert a_over_cname.status_code == 400
    assert a_over_cname.json()["errors"][0]["code"] == 81053

    stored = cloudflare.records("acme.example.")
    assert [(r["type"], r["name"]) for r in stored] == [
        ("MX", "news.acme.example"),
        ("TXT", "_dmarc.acme.example"),
        ("CNAME", "links.acme.example"),
    ]


def test_pagination_with_result_info(api: httpx.Client) -> None:
    zid = zone_id(api)
    for i in range(5):
        assert create(api, zid, type="TXT", name=f"r{i}.acme.example", content=f'"{i}"').is_success
    seen: list[str] = []
    page = 1
    while True:
        body = api.get(f"/zones/{zid}/dns_records", params={"page": page, "per_page": 2}).json()
        info = body["result_info"]
        assert info["page"] == page and info["per_page"] == 2
        assert info["total_count"] == 5 and info["total_pages"] == 3
        assert info["count"] == len(body["result"])
        seen += [r["name"] for r in body["result"]]
        if page >= info["total_pages"]:
            break
        page += 1
    assert page == 3
    assert seen == [f"r{i}.acme.example" for i in range(5)]

    too_big = api.get(f"/zones/{zid}/dns_records", params={"per_page": 101})
    assert too_big.status_code == 400
    assert too_big.json()["errors"][0]["code"] == 1004


def test_filters(api: httpx.Client) -> None:
    zid = zone_id(api)
    create(api, zid, type="TXT", name="news.acme.example", content='"v=spf1 -all"')
    create(api, zid, type="MX", name="news.acme.example", content="in.comms.example", priority=10)
    create(api, zid, type="TXT", name="sub.news.acme.example", content='"x"')

    def names(**params: str) -> list[tuple[str, str]]:
        body = api.get(f"/zones/{zid}/dns_records", params=params).json()
        return [(r["type"], r["name"]) for r in body["result"]]

    assert names(**{"name.exact": "news.acme.example"}) == [
        ("TXT", "news.acme.example"),
        ("MX", "news.acme.example"),
    ]
    assert names(name="news.acme.example", type="MX") == [("MX", "news.acme.example")]
    assert names(type="TXT", content='"x"') == [("TXT", "sub.news.acme.example")]
    assert names(**{"name.exact": "nothing.acme.example"}) == []


def test_patch_put_get_delete(cloudflare: CloudflareStandIn, api: httpx.Client) -> None:
    zid = zone_id(api)
    record = create(
        api, zid, type="TXT", name="_dmarc", content='"v=DMARC1; p=none"', ttl=300, comment="c"
    ).json()["result"]
    url = f"/zones/{zid}/dns_records/{record['id']}"

    patched = api.patch(url, json={"content": '"v=DMARC1; p=reject"'}).json()["result"]
    assert patched["id"] == record["id"]
    assert patched["content"] == '"v=DMARC1; p=reject"'
    assert patched["ttl"] == 300 and patched["comment"] == "c"  # merged

    put = api.put(url, json={"type": "TXT", "name": "_dmarc.acme.example", "content": '"a"'})
    assert put.json()["result"]["ttl"] == 1 and put.json()["result"]["comment"] is None  # replaced
    assert api.get(url).json()["result"]["content"] == '"a"'

    deleted = api.delete(url)
    assert deleted.status_code == 200 and deleted.json()["result"] == {"id": record["id"]}
    assert cloudflare.records("acme.example") == []
    missing = api.get(url)
    assert missing.status_code == 404
    assert missing.json()["errors"] == [{"code": 81044, "message": "Record does not exist."}]
    assert api.delete(url).status_code == 404

    unknown_zone = api.get(f"/zones/{'0' * 32}/dns_records")
    assert unknown_zone.status_code == 404
    assert unknown_zone.json()["errors"][0]["code"] == 7003


def test_invalid_revoked_and_under_scoped_tokens(cloudflare: CloudflareStandIn) -> None:
    acme = cloudflare.add_zone("acme.example")

    def call(token: str | None, path: str) -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.get(cloudflare.base_url + path, headers=headers, timeout=5)

    auth_error = [{"code": 10000, "message": "Authentication error"}]
    for token in (None, "made-up"):
        response = call(token, "/zones")
        assert response.status_code == 403 and response.json()["errors"] == auth_error

    scoped = call(SCOPED, f"/zones/{acme}/dns_records")
    assert scoped.status_code == 403 and scoped.json()["errors"] == auth_error
    visible = call(SCOPED, "/zones").json()["result"]
    assert [z["name"] for z in visible] == ["other.example"]

    assert call(TOKEN, f"/zones/{acme}/dns_records").status_code == 200
    cloudflare.revoke(TOKEN)
    revoked = call(TOKEN, f"/zones/{acme}/dns_records")
    assert revoked.status_code == 403 and revoked.json()["errors"] == auth_error
