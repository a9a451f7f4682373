"""A local stand-in for the DNS parts of the Cloudflare API v4, for tests.

Approach
--------
``CloudflareStandIn`` runs an ``http.server.ThreadingHTTPServer`` on a free port
of 127.0.0.1 in a background thread. The request handler only does HTTP: it logs
``(method, path?query)``, reads the JSON body and hands everything to
``CloudflareStandIn._handle``, which authenticates, routes and answers with a
``(status, envelope)`` pair. State (zones, records, tokens) lives in plain dicts
behind one lock, so requests from many client threads see consistent data.

Shapes follow the public API: every response is the v4 envelope
``{"success", "errors": [{"code", "message"}], "messages", "result"}``; list
endpoints add ``result_info`` (``page``, ``per_page``, ``count``,
``total_count``, ``total_pages``). Record names are FQDNs without trailing dot
("@" and names relative to the zone are completed, as the real API does); TXT
content is stored exactly as sent; hostname content of CNAME/MX/NS loses a
trailing dot. Records are listed in creation order, which keeps pagination
stable.

Errors reproduced: 10000 "Authentication error" (403) for a missing, unknown or
revoked token and for a token used on a zone outside its scope; 7003 (404) for an
unknown zone id; 81044 (404) for an unknown record; 81058 (400) for an identical
record (same type, name and content); 81053 (400) when a CNAME would share its
name with another record, either way round; 9005 (400) for an A/AAAA content that
is not an address of that family; 1004 (400) for other validation errors, including
``page``/``per_page`` out of range (``per_page`` is 1..``per_page_max`` for
records, 1..50 for zones); 9207 (400) for a body that is not a JSON object; 7000
(404) for an unknown route; 7001 (405) for a method a route does not take.

Deliberately left out: ``match=any``, ``order``/``direction``, tag and
comment filters, batch endpoints, record ``data`` objects (SRV/CAA fields),
proxied-only behaviour beyond the flag itself.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import ipaddress
import json
import math
import socket
import threading
import types
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

__all__ = ["CloudflareStandIn"]

_HOST = "127.0.0.1"
_PREFIX = "/client/v4"
_ZONES_PER_PAGE_DEFAULT = 20
_ZONES_PER_PAGE_MAX = 50
_RECORDS_PER_PAGE_DEFAULT = 100
_NAME_SERVERS = ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"]
_PROXIABLE = frozenset({"A", "AAAA", "CNAME"})
_HOSTNAME_CONTENT = frozenset({"CNAME", "MX", "NS", "PTR"})
_RECORD_TYPES = frozenset(
    {"A", "AAAA", "CAA", "CERT", "CNAME", "DNSKEY", "DS", "HTTPS", "LOC", "MX", "NAPTR"}
    | {"NS", "PTR", "SMIMEA", "SRV", "SSHFP", "SVCB", "TLSA", "TXT", "URI"}
)
_HANDLER_TIMEOUT_SECONDS = 10.0
_POLL_SECONDS = 0.05

Json = dict[str, Any]


class _ApiError(Exception):
    """An API failure: HTTP status plus one Cloudflare error code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _auth_error() -> _ApiError:
    return _ApiError(403, 10000, "Authentication error")


def _validation(message: str) -> _ApiError:
    return _ApiError(400, 1004, f"DNS Validation Error: {message}")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _norm_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _envelope(result: Any, result_info: Json | None = None) -> Json:
    body: Json = {"success": True, "errors": [], "messages": [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return body


def _error_envelope(error: _ApiError) -> Json:
    return {
        "success": False,
        "errors": [{"code": error.code, "message": error.message}],
        "messages": [],
        "result": None,
    }


def _int_param(query: dict[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _validation(f"{key} must be an integer") from None
    if not low <= value <= high:
        raise _validation(f"{key} must be between {low} and {high}")
    return value


def _paginate(items: list[Json], query: dict[str, str], default: int, most: int) -> Json:
    """One page of ``items`` as a list-endpoint envelope with ``result_info``."""
    per_page = _int_param(query, "per_page", default, 1, most)
    page = _int_param(query, "page", 1, 1, 1_000_000)
    chunk = items[(page - 1) * per_page : page * per_page]
    info = {
        "page": page,
        "per_page": per_page,
        "count": len(chunk),
        "total_count": len(items),
        "total_pages": math.ceil(len(items) / per_page),
    }
    return _envelope(copy.deepcopy(chunk), info)


class _Zone:
    def __init__(self, name: str) -> None:
        self.id = uuid.uuid4().hex
        self.name = name
        self.created_on = _now()
        self.records: list[Json] = []  # creation order

    def as_json(self) -> Json:
        return {
            "id": self.id,
            "name": self.name,
            "status": "active",
            "paused": False,
            "type": "full",
            "name_servers": list(_NAME_SERVERS),
            "created_on": self.created_on,
            "modified_on": self.created_on,
        }

    def find(self, record_id: str) -> Json:
        for record in self.records:
            if record["id"] == record_id:
                return record
        raise _ApiError(404, 81044, "Record does not exist.")


class _Server(ThreadingHTTPServer):
    """Tracks open connections so ``stop`` can end idle keep-alive ones promptly."""

    daemon_threads = True

    def __init__(self, standin: CloudflareStandIn) -> None:
        self.standin = standin
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((_HOST, 0), _Handler)

    def close_connections(self) -> None:
        with self.connections_lock:
            for conn in self.connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    continue


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out separately: no 40 ms stalls
    timeout = _HANDLER_TIMEOUT_SECONDS
    server_version = "cloudflare-standin"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        server = cast(_Server, self.server)
        with server.connections_lock:
            server.connections.add(self.connection)

    def finish(self) -> None:
        server = cast(_Server, self.server)
        with server.connections_lock:
            server.connections.discard(self.connection)
        with contextlib.suppress(OSError):  # the peer (or stop()) already closed it
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log; ``requests`` is the log."""

    def _serve(self) -> None:
        standin = cast(_Server, self.server).standin
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        status, payload = standin._handle(
            self.command, self.path, self.headers.get("Authorization"), body
        )
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class CloudflareStandIn:
    """http.server (ThreadingHTTPServer) on 127.0.0.1:<free port> in a thread, following
    Cloudflare API v4 request/response shapes for zones and DNS records.

    ``tokens`` maps API tokens to the zone names each may use (``"*"`` = all); a
    token not in the dict is invalid. With ``tokens=None`` any bearer token is
    accepted for all zones (until revoked).
    """

    def __init__(self, tokens: dict[str, set[str]] | None = None, per_page_max: int = 100) -> None:
        self._tokens: dict[str, set[str]] | None = (
            None
            if tokens is None
            else {
                token: {_norm_name(z) if z != "*" else z for z in zones}
                for token, zones in tokens.items()
            }
        )
        self._revoked: set[str] = set()
        self._per_page_max = per_page_max
        self._lock = threading.Lock()
        self._zones: dict[str, _Zone] = {}  # by id
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        self.requests: list[tuple[str, str]] = []

    # ----------------------------------------------------------- lifecycle
    def start(self) -> CloudflareStandIn:
        if self._server is not None:
            raise RuntimeError("already started")
        server = _Server(self)
        self._server = server
        self.base_url = f"http://{_HOST}:{server.server_address[1]}{_PREFIX}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_SECONDS},
            name=f"cloudflare-standin-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end open connections, close the socket, join threads. Idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()  # joins the per-connection threads
        if thread is not None:
            thread.join()

    def __enter__(self) -> CloudflareStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------- test hooks
    def add_zone(self, name: str) -> str:
        """Create an active zone (idempotent by name) and return its 32-hex id."""
        zone_name = _norm_name(name)
        with self._lock:
            for zone in self._zones.values():
                if zone.name == zone_name:
                    return zone.id
            zone = _Zone(zone_name)
            self._zones[zone.id] = zone
            return zone.id

    def records(self, zone_name: str) -> list[dict[str, Any]]:
        """Deep copies of the zone's records, in creation order (KeyError if no such zone)."""
        wanted = _norm_name(zone_name)
        with self._lock:
            for zone in self._zones.values():
                if zone.name == wanted:
                    return copy.deepcopy(zone.records)
        raise KeyError(zone_name)

    def revoke(self, token: str) -> None:
        """Make ``token`` fail authentication from now on."""
        with self._lock:
            self._revoked.add(token)

    # ------------------------------------------------------------ handling
    def _handle(
        self, method: str, raw_path: str, authorization: str | None, body: bytes
    ) -> tuple[int, Json]:
        with self._lock:
            self.requests.append((method, raw_path))
            try:
                return self._dispatch(method, raw_path, authorization, body)
            except _ApiError as error:
                return error.status, _error_envelope(error)
            except Exception as exc:  # a bug in this stand-in: answer 500 rather than hang up
                return 500, _error_envelope(_ApiError(500, 10001, f"Internal error: {exc!r}"))

    def _dispatch(
        self, method: str, raw_path: str, authorization: str | None, body: bytes
    ) -> tuple[int, Json]:
        split = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        path = split.path.rstrip("/")
        if not path.startswith(_PREFIX + "/"):
            raise _ApiError(404, 7000, "No route for that URI")
        parts = path[len(_PREFIX) + 1 :].split("/")
        scope = self._authenticate(authorization)
        if parts[0] != "zones":
            raise _ApiError(404, 7000, "No route for that URI")
        if len(parts) == 1:
            self._allow(method, "GET")
            return 200, self._list_zones(scope, query)
        zone = self._zones.get(parts[1])
        if zone is None:
            raise _ApiError(
                404,
                7003,
                f"Could not route to {path[len(_PREFIX) :]}, perhaps your object identifier "
                "is invalid?",
            )
        if "*" not in scope and zone.name not in scope:
            raise _auth_error()
        if len(parts) == 2:
            self._allow(method, "GET")
            return 200, _envelope(zone.as_json())
        if parts[2] != "dns_records" or len(parts) > 4:
            raise _ApiError(404, 7000, "No route for that URI")
        if len(parts) == 3:
            self._allow(method, "GET", "POST")
            if method == "GET":
                return 200, self._list_records(zone, query)
            return 200, _envelope(self._create(zone, _json_object(body)))
        record = zone.find(parts[3])
        self._allow(method, "GET", "PUT", "PATCH", "DELETE")
        if method == "GET":
            return 200, _envelope(copy.deepcopy(record))
        if method == "DELETE":
            zone.records.remove(record)
            return 200, _envelope({"id": record["id"]})
        changes = _json_object(body)
        if method == "PATCH":
            changes = {**_editable(record), **changes}
        return 200, _envelope(self._replace(zone, record, changes))

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise _ApiError(405, 7001, "Method not allowed for this route")

    def _authenticate(self, authorization: str | None) -> set[str]:
        """The zone names the bearer token may use; raises 10000 when it is not valid."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or token in self._revoked:
            raise _auth_error()
        if self._tokens is None:
            return {"*"}
        scope = self._tokens.get(token)
        if scope is None:
            raise _auth_error()
        return scope

    # --------------------------------------------------------------- zones
    def _list_zones(self, scope: set[str], query: dict[str, str]) -> Json:
        """Zones the token can see, filtered by ``name``/``status``."""
        zones = [z for z in self._zones.values() if "*" in scope or z.name in scope]
        if "name" in query:
            zones = [z for z in zones if z.name == _norm_name(query["name"])]
        if query.get("status", "active") != "active":
            zones = []
        items = [z.as_json() for z in zones]
        return _paginate(items, query, _ZONES_PER_PAGE_DEFAULT, _ZONES_PER_PAGE_MAX)

    # ------------------------------------------------------------- records
    def _list_records(self, zone: _Zone, query: dict[str, str]) -> Json:
        filters: list[Callable[[Json], bool]] = []
        if query.get("type"):
            filters.append(_field_is("type", query["type"].upper()))
        for key in ("name", "name.exact"):
            if query.get(key):
                filters.append(_field_is("name", _norm_name(query[key])))
        for key, test in _NAME_MATCHERS.items():
            if query.get(key):
                filters.append(_name_matches(test, query[key].lower()))
        for key in ("content", "content.exact"):
            if key in query:
                filters.append(_field_is("content", query[key]))
        items = [r for r in zone.records if all(f(r) for f in filters)]
        return _paginate(items, query, _RECORDS_PER_PAGE_DEFAULT, self._per_page_max)

    def _create(self, zone: _Zone, body: Json) -> Json:
        fields = self._validate(zone, body, exclude=None)
        stamp = _now()
        record: Json = {"id": uuid.uuid4().hex, "zone_id": zone.id, "zone_name": zone.name}
        record.update(fields)
        record["created_on"] = stamp
        record["modified_on"] = stamp
        zone.records.append(record)
        return copy.deepcopy(record)

    def _replace(self, zone: _Zone, record: Json, body: Json) -> Json:
        fields = self._validate(zone, body, exclude=record)
        keep = {k: record[k] for k in ("id", "zone_id", "zone_name", "created_on")}
        record.clear()
        record.update(keep)
        record.update(fields)
        record["modified_on"] = _now()
        return copy.deepcopy(record)

    def _validate(self, zone: _Zone, body: Json, exclude: Json | None) -> Json:
        """Normalised record fields from a request body; raises the API's errors."""
        rtype = body.get("type")
        if not isinstance(rtype, str) or rtype.upper() not in _RECORD_TYPES:
            raise _validation("type must be a supported DNS record type")
        rtype = rtype.upper()
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _validation("name is required")
        fqdn = _norm_name(name)
        if fqdn == "@" or fqdn == "":
            fqdn = zone.name
        elif fqdn != zone.name and not fqdn.endswith("." + zone.name):
            fqdn = f"{fqdn}.{zone.name}"
        content = body.get("content")
        if not isinstance(content, str) or not content:
            raise _validation("content is required")
        if rtype in ("A", "AAAA"):
            family = ipaddress.IPv4Address if rtype == "A" else ipaddress.IPv6Address
            try:
                family(content)
            except ValueError:
                raise _ApiError(
                    400, 9005, f"Content for {rtype} record must be a valid IP address."
                ) from None
        if rtype in _HOSTNAME_CONTENT:
            content = content.rstrip(".")
        ttl = body.get("ttl", 1)
        if (
            not isinstance(ttl, int)
            or isinstance(ttl, bool)
            or not (ttl == 1 or 30 <= ttl <= 86400)
        ):
            raise _validation("ttl must be between 30 and 86400 seconds, or 1 for Automatic")
        proxied = body.get("proxied", False)
        if not isinstance(proxied, bool):
            raise _validation("proxied must be a boolean")
        if proxied and rtype not in _PROXIABLE:
            raise _validation(f"{rtype} records cannot be proxied")
        comment = body.get("comment")
        if comment is not None and not isinstance(comment, str):
            raise _validation("comment must be a string")
        fields: Json = {
            "name": fqdn,
            "type": rtype,
            "content": content,
            "proxiable": rtype in _PROXIABLE,
            "proxied": proxied,
            "ttl": ttl,
            "locked": False,
            "comment": comment,
            "tags": [],
            "meta": {"auto_added": False, "source": "primary"},
        }
        if rtype == "MX":
            priority = body.get("priority")
            if (
                not isinstance(priority, int)
                or isinstance(priority, bool)
                or not 0 <= priority <= 65535
            ):
                raise _validation("priority must be an integer between 0 and 65535 for MX")
            fields["priority"] = priority
        others = [r for r in zone.records if r is not exclude and r["name"] == fqdn]
        if any(r["type"] == rtype and r["content"] == content for r in others):
            raise _ApiError(400, 81058, "An identical record already exists.")
        if others and (rtype == "CNAME" or any(r["type"] == "CNAME" for r in others)):
            raise _ApiError(
                400, 81053, "An A, AAAA, or CNAME record with that host already exists."
            )
        return fields


_NAME_MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "name.contains": str.__contains__,
    "name.startswith": str.startswith,
    "name.endswith": str.endswith,
}


def _field_is(field: str, wanted: str) -> Callable[[Json], bool]:
    def check(record: Json) -> bool:
        return bool(record[field] == wanted)

    return check


def _name_matches(test: Callable[[str, str], bool], fragment: str) -> Callable[[Json], bool]:
    def check(record: Json) -> bool:
        return test(str(record["name"]), fragment)

    return check


def _json_object(body: bytes) -> Json:
    try:
        value = json.loads(body or b"null")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise _ApiError(400, 9207, "Request body is invalid.")
    return value


def _editable(record: Json) -> Json:
    """The fields of ``record`` a PATCH body may override."""
    keys = ("type", "name", "content", "ttl", "proxied", "comment", "priority")
    return {k: record[k] for k in keys if k in record}
