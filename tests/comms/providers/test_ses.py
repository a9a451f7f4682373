"""The SES provider against a local moto server over HTTP (raw sends read back from it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from comms.devstack import free_port
from comms.providers import (
    ConfigurationError,
    OutboundEmail,
    PermanentError,
    ThrottledError,
    TransientError,
)
from comms.providers.ses import SesProvider, classify

SECRET = "moto-secret-key-Zx9"

# moto's server pulls in Flask/werkzeug, whose own deprecations are not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _settings(url: str, **extra: Any) -> dict[str, Any]:
    return {"region": "us-east-1", "access_key_id": "testing", "secret_access_key": SECRET,
            "endpoint_url": url, **extra}  # fmt: skip


def _email(sender: str = "news@verified.example") -> OutboundEmail:
    d = uuid.uuid4()
    return OutboundEmail(
        delivery_id=d, tenant_id=uuid.uuid4(), message_id=uuid.uuid4(), sender=sender,
        recipient="ann@example.org", subject="Hello", text="Hi Ann",
        headers={"List-Unsubscribe": "<https://comms.example/u/x>"},
        message_id_header=f"<{d}@comms.example>",
    )  # fmt: skip


def test_raw_send_keeps_our_headers_and_tags(moto_url: str) -> None:
    ses = boto3.client("ses", region_name="us-east-1", endpoint_url=moto_url,
                       aws_access_key_id="testing", aws_secret_access_key=SECRET)  # fmt: skip
    ses.verify_domain_identity(Domain="verified.example")
    outbound = _email()
    result = SesProvider(_settings(moto_url)).send(outbound)
    assert result.provider_message_id
    sent = httpx.get(f"{moto_url}/moto-api/data.json").json()["ses"]["RawMessage"]
    (mine,) = [m for m in sent if outbound.message_id_header in m["raw_data"]]
    assert "ann@example.org" in mine["destinations"]
    assert "List-Unsubscribe: <https://comms.example/u/x>" in mine["raw_data"]
    # moto keeps no tags; the request we build carries them
    tags = SesProvider(_settings(moto_url)).build_payload(outbound)["EmailTags"]
    assert {"Name": "delivery_id", "Value": str(outbound.delivery_id)} in tags


def test_check_reads_the_account(moto_url: str) -> None:
    assert "SES" in SesProvider(_settings(moto_url)).check()


def test_unverified_sender_is_refused_permanently(moto_url: str) -> None:
    with pytest.raises(PermanentError, match="MessageRejected") as info:
        SesProvider(_settings(moto_url)).send(_email("someone@unverified.example"))
    assert SECRET not in str(info.value)


def test_a_dead_endpoint_is_transient() -> None:
    provider = SesProvider(_settings(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(TransientError):
        provider.send(_email())


@pytest.mark.parametrize(
    ("code", "error"),
    [("Throttling", ThrottledError), ("TooManyRequestsException", ThrottledError),
     ("MessageRejected", PermanentError), ("AccountSuspendedException", ConfigurationError),
     ("SendingPausedException", ConfigurationError), ("InvalidClientTokenId", ConfigurationError),
     ("InternalFailure", TransientError)],
)  # fmt: skip
def test_error_codes_are_classified(code: str, error: type[Exception]) -> None:
    exc = ClientError({"Error": {"Code": code, "Message": "m"}}, "SendEmail")
    assert isinstance(classify(exc), error)
    assert isinstance(classify(EndpointConnectionError(endpoint_url="x")), TransientError)
