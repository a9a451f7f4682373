"""DNS providers behind a small registry, and live DNS lookups.

A DNS provider lists, creates, updates and deletes single records in the zone
that holds a domain; :func:`comms.domains.service.sync` decides what to do
with them, so every provider writes only these four hooks. Registered through
the ``comms.dns_providers`` entry-point group (the built-ins are listed here
too), like the sending providers.

Errors: :class:`DnsAuthError` when the provider refuses our credentials (a
revoked or under-scoped token) — the domain's DNS sync pauses with the reason
until new credentials are saved; :class:`DnsError` for anything else.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

import httpx

from comms.domains.records import Record, unquote_txt
from comms.settings import get_settings


class DnsError(Exception):
    pass


class DnsAuthError(DnsError):
    """The DNS provider refused our credentials: sync pauses until new ones are saved."""


class ManualDns(DnsError):
    """The manual provider never writes: the records are for a person to publish."""


@dataclass(frozen=True)
class Existing:
    id: str
    name: str
    type: str
    value: str


def normalise(rtype: str, value: str) -> str:
    """Comparable form: TXT unquoted, names lower case without the trailing dot."""
    if rtype == "TXT":
        return unquote_txt(value)
    if rtype == "MX":
        parts = value.split()
        if len(parts) == 2:
            return f"{int(parts[0])} {parts[1].rstrip('.').lower()}"
    return value.strip().rstrip(".").lower()


def _rrset_id(name: str, rtype: str, value: str) -> str:
    return f"{name}|{rtype}|{normalise(rtype, value)}"


class DnsProvider(abc.ABC):
    name: ClassVar[str]
    settings_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        for required in self.settings_schema.get("required", []):
            if not settings.get(required):
                raise DnsError(f"{self.name}: setting {required!r} is required")

    @classmethod
    def secret_fields(cls) -> set[str]:
        props: dict[str, dict[str, Any]] = cls.settings_schema.get("properties", {})
        return {k for k, spec in props.items() if spec.get("secret")}

    @abc.abstractmethod
    def find(self, domain: str, name: str, rtype: str) -> list[Existing]: ...

    @abc.abstractmethod
    def create(self, domain: str, record: Record) -> str: ...

    @abc.abstractmethod
    def update(self, domain: str, record_id: str, record: Record) -> str: ...

    @abc.abstractmethod
    def delete(self, domain: str, record_id: str) -> None: ...

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release connections."""


# -- manual --------------------------------------------------------------------
class ManualProvider(DnsProvider):
    """Reads live DNS; publishing is for a person (``comms domain records``)."""

    name = "manual"

    def find(self, domain: str, name: str, rtype: str) -> list[Existing]:
        return [Existing(_rrset_id(name, rtype, v), name, rtype, v) for v in lookup(name, rtype)]

    def create(self, domain: str, record: Record) -> str:
        raise ManualDns(f"publish {record.name} {record.type} {record.value} by hand")

    def update(self, domain: str, record_id: str, record: Record) -> str:
        raise ManualDns(f"change {record.name} {record.type} to {record.value} by hand")

    def delete(self, domain: str, record_id: str) -> None:
        raise ManualDns(f"delete {record_id} by hand")


# -- Cloudflare API v4 ---------------------------------------------------------------
class CloudflareProvider(DnsProvider):
    name = "cloudflare"
    settings_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["api_token"],
        "properties": {
            "api_token": {"type": "string", "secret": True, "description": "Zone:DNS:Edit"},
            "base_url": {"type": "string", "default": "https://api.cloudflare.com/client/v4"},
        },
    }
    PER_PAGE = 100

    def __init__(self, settings: dict[str, Any], transport: httpx.BaseTransport | None = None):
        super().__init__(settings)
        self.client = httpx.Client(
            base_url=str(settings.get("base_url") or "https://api.cloudflare.com/client/v4"),
            headers={"Authorization": f"Bearer {settings['api_token']}"},
            timeout=15.0,
            transport=transport,
        )
        self._zones: dict[str, str] = {}

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DnsError(f"cloudflare: {type(exc).__name__}") from exc
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise DnsError(f"cloudflare answered {response.status_code} without JSON") from None
        if body.get("success"):
            return body
        errors = body.get("errors") or []
        codes = {int(e.get("code", 0)) for e in errors if isinstance(e, dict)}
        text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or "no detail"
        if response.status_code in (401, 403) or codes & {10000, 9109, 10001}:
            raise DnsAuthError(f"cloudflare refused the API token ({text})")
        raise DnsError(f"cloudflare answered {response.status_code} ({text})")

    def _zone(self, domain: str) -> str:
        labels = domain.split(".")
        for i in range(len(labels) - 1):
            candidate = ".".join(labels[i:])
            if candidate in self._zones:
                return self._zones[candidate]
            found = self._call("GET", "/zones", params={"name": candidate})["result"]
            if found:
                self._zones[candidate] = str(found[0]["id"])
                return self._zones[candidate]
        # an API token only lists the zones it may edit: none is an under-scoped token
        raise DnsAuthError(f"cloudflare: the API token sees no zone for {domain} (under-scoped?)")

    def find(self, domain: str, name: str, rtype: str) -> list[Existing]:
        zone = self._zone(domain)
        found: list[Existing] = []
        page = 1
        while True:
            body = self._call(
                "GET", f"/zones/{zone}/dns_records",
                params={"type": rtype, "name.exact": name, "page": page, "per_page": self.PER_PAGE},
            )  # fmt: skip
            for item in body["result"]:
                value = str(item["content"])
                if rtype == "MX":
                    value = f"{item.get('priority', 0)} {value}"
                found.append(Existing(str(item["id"]), str(item["name"]), rtype, value))
            info = body.get("result_info") or {}
            if page >= int(info.get("total_pages") or 1):
                return found
            page += 1

    def _body(self, record: Record) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": record.type, "name": record.name, "ttl": record.ttl,
            "comment": f"managed by comms ({record.purpose})",
        }  # fmt: skip
        if record.type == "MX":
            priority, host = record.value.split()
            body.update(content=host, priority=int(priority))
        elif record.type == "TXT":
            body["content"] = f'"{record.value}"'
        else:
            body.update(content=record.value, proxied=False)
        return body

    def create(self, domain: str, record: Record) -> str:
        zone = self._zone(domain)
        body = self._call("POST", f"/zones/{zone}/dns_records", json=self._body(record))
        return str(body["result"]["id"])

    def update(self, domain: str, record_id: str, record: Record) -> str:
        zone = self._zone(domain)
        self._call("PUT", f"/zones/{zone}/dns_records/{record_id}", json=self._body(record))
        return record_id

    def delete(self, domain: str, record_id: str) -> None:
        zone = self._zone(domain)
        self._call("DELETE", f"/zones/{zone}/dns_records/{record_id}")


# -- Route 53 ----------------------------------------------------------------------
class Route53Provider(DnsProvider):
    """Route 53 keeps record *sets*: our record is one value in the set for its name and type."""

    name = "route53"
    settings_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "hosted_zone_id": {"type": "string"},
            "access_key_id": {"type": "string"},
            "secret_access_key": {"type": "string", "secret": True},
            "endpoint_url": {"type": "string"},
        },
    }

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        import boto3

        kwargs: dict[str, Any] = {"region_name": "us-east-1"}
        if settings.get("endpoint_url"):
            kwargs["endpoint_url"] = settings["endpoint_url"]
        if settings.get("access_key_id"):
            kwargs["aws_access_key_id"] = settings["access_key_id"]
            kwargs["aws_secret_access_key"] = settings.get("secret_access_key")
        self.client = boto3.client("route53", **kwargs)

    def close(self) -> None:
        self.client.close()

    def _aws(self, call: str, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            result: dict[str, Any] = getattr(self.client, call)(**kwargs)
            return result
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("AccessDenied", "InvalidClientTokenId", "SignatureDoesNotMatch"):
                raise DnsAuthError(f"route53 refused the credentials ({code})") from exc
            raise DnsError(f"route53: {code or exc}") from exc
        except BotoCoreError as exc:
            raise DnsError(f"route53: {exc}") from exc

    def _zone(self, domain: str) -> str:
        if self.settings.get("hosted_zone_id"):
            return str(self.settings["hosted_zone_id"])
        zones = self._aws("list_hosted_zones_by_name", DNSName=domain)["HostedZones"]
        labels = domain.split(".")
        for i in range(len(labels) - 1):
            candidate = ".".join(labels[i:]) + "."
            for zone in zones:
                if zone["Name"] == candidate:
                    return str(zone["Id"]).split("/")[-1]
            if i == 0:
                zones = self._aws("list_hosted_zones_by_name", DNSName=".".join(labels[i + 1 :]))[
                    "HostedZones"
                ]
        raise DnsError(f"route53: no hosted zone for {domain}")

    def _values(self, domain: str, name: str, rtype: str) -> tuple[str, list[str], int]:
        zone = self._zone(domain)
        sets = self._aws(
            "list_resource_record_sets", HostedZoneId=zone, StartRecordName=name,
            StartRecordType=rtype, MaxItems="1",
        )["ResourceRecordSets"]  # fmt: skip
        for rrset in sets:
            if rrset["Name"].rstrip(".").lower() == name and rrset["Type"] == rtype:
                values = [str(r["Value"]) for r in rrset.get("ResourceRecords", [])]
                return zone, values, int(rrset.get("TTL", 3600))
        return zone, [], 3600

    def find(self, domain: str, name: str, rtype: str) -> list[Existing]:
        _, values, _ = self._values(domain, name, rtype)
        return [Existing(_rrset_id(name, rtype, v), name, rtype, v) for v in values]

    def _write(self, zone: str, name: str, rtype: str, values: list[str], ttl: int) -> None:
        if values:
            change = {
                "Action": "UPSERT",
                "ResourceRecordSet": {
                    "Name": name, "Type": rtype, "TTL": ttl,
                    "ResourceRecords": [{"Value": v} for v in values],
                },
            }  # fmt: skip
        else:
            _, old, old_ttl = self._values(name, name, rtype)
            change = {
                "Action": "DELETE",
                "ResourceRecordSet": {
                    "Name": name, "Type": rtype, "TTL": old_ttl,
                    "ResourceRecords": [{"Value": v} for v in old],
                },
            }  # fmt: skip
        self._aws(
            "change_resource_record_sets", HostedZoneId=zone, ChangeBatch={"Changes": [change]}
        )

    @staticmethod
    def _wire(record: Record) -> str:
        return f'"{record.value}"' if record.type == "TXT" else record.value

    def create(self, domain: str, record: Record) -> str:
        zone, values, _ = self._values(domain, record.name, record.type)
        self._write(zone, record.name, record.type, [*values, self._wire(record)], record.ttl)
        return _rrset_id(record.name, record.type, record.value)

    def update(self, domain: str, record_id: str, record: Record) -> str:
        zone, values, _ = self._values(domain, record.name, record.type)
        kept = [v for v in values if _rrset_id(record.name, record.type, v) != record_id]
        self._write(zone, record.name, record.type, [*kept, self._wire(record)], record.ttl)
        return _rrset_id(record.name, record.type, record.value)

    def delete(self, domain: str, record_id: str) -> None:
        name, rtype, _ = record_id.split("|", 2)
        zone, values, ttl = self._values(domain, name, rtype)
        kept = [v for v in values if _rrset_id(name, rtype, v) != record_id]
        if len(kept) != len(values):
            self._write(zone, name, rtype, kept, ttl)


# -- RFC 2136 dynamic updates --------------------------------------------------------
class Rfc2136Provider(DnsProvider):
    """TSIG-signed dynamic updates (BIND, PowerDNS, Knot); reads go to the same server."""

    name = "rfc2136"
    settings_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["server", "zone"],
        "properties": {
            "server": {"type": "string", "description": "IP address of the primary"},
            "port": {"type": "integer", "default": 53},
            "zone": {"type": "string"},
            "tsig_name": {"type": "string"},
            "tsig_secret": {"type": "string", "secret": True, "description": "base64"},
            "tsig_algorithm": {"type": "string", "default": "hmac-sha256"},
        },
    }

    def _keyring(self) -> tuple[Any, Any]:
        import dns.name
        import dns.tsigkeyring

        if not self.settings.get("tsig_name"):
            return None, None
        name = str(self.settings["tsig_name"])
        keyring = dns.tsigkeyring.from_text({name: str(self.settings.get("tsig_secret", ""))})
        algorithm = dns.name.from_text(str(self.settings.get("tsig_algorithm") or "hmac-sha256"))
        return keyring, algorithm

    def _send(self, update: Any) -> None:
        import dns.exception
        import dns.query
        import dns.rcode

        try:
            answer = dns.query.tcp(
                update, str(self.settings["server"]), timeout=10,
                port=int(self.settings.get("port") or 53),
            )  # fmt: skip
        except dns.exception.DNSException as exc:
            if type(exc).__module__ == "dns.tsig":  # BADSIG, BADKEY, BADTIME from the peer
                raise DnsAuthError(f"rfc2136: the server rejected our TSIG key ({exc})") from exc
            raise DnsError(f"rfc2136: {type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise DnsError(f"rfc2136: {exc}") from exc
        rcode = answer.rcode()
        if rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH):
            raise DnsAuthError(f"rfc2136: update {dns.rcode.to_text(rcode)} (key or policy)")
        if rcode != dns.rcode.NOERROR:
            raise DnsError(f"rfc2136: update answered {dns.rcode.to_text(rcode)}")

    def _update(self) -> Any:
        import dns.update

        keyring, algorithm = self._keyring()
        if keyring is None:
            return dns.update.Update(str(self.settings["zone"]))
        return dns.update.Update(
            str(self.settings["zone"]), keyring=keyring, keyalgorithm=algorithm
        )

    def find(self, domain: str, name: str, rtype: str) -> list[Existing]:
        values = lookup(
            name, rtype, nameservers=[str(self.settings["server"])],
            port=int(self.settings.get("port") or 53),
        )  # fmt: skip
        return [Existing(_rrset_id(name, rtype, v), name, rtype, v) for v in values]

    @staticmethod
    def _wire(record: Record) -> str:
        if record.type == "TXT":
            return f'"{record.value}"'
        if record.type == "MX":
            priority, host = record.value.split()
            return f"{priority} {host}."
        return record.value + "."

    def create(self, domain: str, record: Record) -> str:
        update = self._update()
        update.add(record.name + ".", record.ttl, record.type, self._wire(record))
        self._send(update)
        return _rrset_id(record.name, record.type, record.value)

    def update(self, domain: str, record_id: str, record: Record) -> str:
        self.delete(domain, record_id)
        return self.create(domain, record)

    def delete(self, domain: str, record_id: str) -> None:
        name, rtype, value = record_id.split("|", 2)
        update = self._update()
        wire = f'"{value}"' if rtype == "TXT" else value
        if rtype == "MX":
            priority, host = value.split()
            wire = f"{priority} {host}."
        elif rtype == "CNAME":
            wire = value + "."
        update.delete(name + ".", rtype, wire)
        self._send(update)


BUILTIN: dict[str, type[DnsProvider]] = {
    "manual": ManualProvider,
    "cloudflare": CloudflareProvider,
    "route53": Route53Provider,
    "rfc2136": Rfc2136Provider,
}


def dns_provider_class(kind: str) -> type[DnsProvider]:
    if kind in BUILTIN:
        return BUILTIN[kind]
    for ep in entry_points(group="comms.dns_providers"):
        if ep.name == kind:
            cls: type[DnsProvider] = ep.load()
            return cls
    raise DnsError(f"unknown DNS provider {kind!r} (known: {', '.join(sorted(BUILTIN))})")


# -- live DNS ----------------------------------------------------------------------
def lookup(
    name: str, rtype: str, *, nameservers: list[str] | None = None, port: int | None = None
) -> list[str]:
    """Values of ``name``/``rtype`` in live DNS (empty when it does not exist)."""
    import dns.exception
    import dns.resolver

    settings = get_settings()
    servers = nameservers if nameservers is not None else settings.dns_nameservers
    resolver = dns.resolver.Resolver(configure=not servers)
    if servers:
        resolver.nameservers = servers
        resolver.port = port if port is not None else settings.dns_port
    resolver.lifetime = 5.0
    try:
        answer = resolver.resolve(name, rtype, raise_on_no_answer=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers):
        return []
    except dns.exception.DNSException as exc:
        raise DnsError(f"DNS lookup {name} {rtype}: {type(exc).__name__}") from exc
    if answer.rrset is None:
        return []
    values = []
    for rdata in answer.rrset:
        if rtype == "TXT":
            values.append(b"".join(rdata.strings).decode("utf-8", "replace"))
        else:
            values.append(normalise(rtype, rdata.to_text()))
    return values


def suggest_provider(domain: str) -> str:
    """Which DNS provider probably serves ``domain``, from its NS records."""
    labels = domain.split(".")
    for i in range(len(labels) - 1):
        try:
            servers = lookup(".".join(labels[i:]), "NS")
        except DnsError:
            return "manual"
        if servers:
            joined = " ".join(servers)
            if "cloudflare.com" in joined:
                return "cloudflare"
            if "awsdns" in joined:
                return "route53"
            return "manual"
    return "manual"
