"""The SES provider: boto3 ``sesv2`` SendEmail with Raw content.

Raw content keeps our Message-ID and List-Unsubscribe headers intact. Message
tags carry tenant, message and delivery ids so SES events map back to the
delivery. With no keys in the settings the standard AWS credential chain is
used (the system default); a tenant's own keys make it BYOP.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from comms.models import Channel
from comms.providers.base import Outbound, OutboundEmail, Provider, SendResult
from comms.providers.errors import (
    ConfigurationError,
    PermanentError,
    ProviderError,
    ThrottledError,
    TransientError,
)
from comms.providers.smtp import build_mime

_THROTTLED = {"TooManyRequestsException", "Throttling", "ThrottlingException",
              "LimitExceededException"}  # fmt: skip
_PERMANENT = {"MessageRejected", "BadRequestException", "MailFromDomainNotVerifiedException",
              "NotFoundException", "InvalidParameterValue"}  # fmt: skip
_CONFIGURATION = {"AccountSuspendedException", "SendingPausedException", "AccessDeniedException",
                  "UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch",
                  "ExpiredToken", "ExpiredTokenException", "AccessDenied"}  # fmt: skip

_clients: dict[tuple[str, str, str], Any] = {}
_clients_lock = threading.Lock()


def classify(exc: Exception) -> ProviderError:
    """A botocore failure → our exception tree (the message never holds credentials)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        reason = f"ses {code}: {error.get('Message', '')}".strip()
        if code in _THROTTLED:
            return ThrottledError(reason, retry_after=1.0)
        if code in _PERMANENT:
            return PermanentError(reason)
        if code in _CONFIGURATION:
            return ConfigurationError(reason)
        return TransientError(reason)
    if isinstance(exc, NoCredentialsError):
        return ConfigurationError("ses: no AWS credentials found")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        return TransientError(f"ses: {type(exc).__name__}")
    return TransientError(f"ses: {type(exc).__name__}")


class SesProvider(Provider):
    tracks_engagement = True  # open and click tracking of its own
    name = "ses"
    channel = Channel.EMAIL
    settings_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "region": {"type": "string", "default": "us-east-1"},
            "configuration_set": {"type": "string"},
            "access_key_id": {"type": "string"},
            "secret_access_key": {"type": "string", "secret": True},
            "session_token": {"type": "string", "secret": True},
            "endpoint_url": {"type": "string", "description": "VPC endpoint or a test server"},
            "rate": {"type": "number", "default": 14, "description": "SES sending rate per second"},
            "burst": {"type": "number"},
        },
    }

    @property
    def client(self) -> Any:
        region = str(self.settings.get("region") or "us-east-1")
        key = (region, str(self.settings.get("access_key_id", "")),
               str(self.settings.get("endpoint_url", "")))  # fmt: skip
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                kwargs: dict[str, Any] = {
                    "region_name": region,
                    "config": Config(
                        retries={"max_attempts": 2, "mode": "standard"},
                        connect_timeout=5, read_timeout=15,
                    ),
                }  # fmt: skip
                if self.settings.get("endpoint_url"):
                    kwargs["endpoint_url"] = self.settings["endpoint_url"]
                if self.settings.get("access_key_id"):
                    kwargs.update(
                        aws_access_key_id=self.settings["access_key_id"],
                        aws_secret_access_key=self.settings.get("secret_access_key"),
                        aws_session_token=self.settings.get("session_token"),
                    )
                client = boto3.session.Session().client("sesv2", **kwargs)
                _clients[key] = client
            return client

    def build_payload(self, outbound: Outbound) -> dict[str, Any]:
        assert isinstance(outbound, OutboundEmail)
        request: dict[str, Any] = {
            "FromEmailAddress": outbound.sender,
            "Destination": {"ToAddresses": [outbound.recipient]},
            "Content": {"Raw": {"Data": build_mime(outbound).as_bytes()}},
            "EmailTags": [
                {"Name": "tenant_id", "Value": str(outbound.tenant_id)},
                {"Name": "message_id", "Value": str(outbound.message_id)},
                {"Name": "delivery_id", "Value": str(outbound.delivery_id)},
            ],
        }
        if self.settings.get("configuration_set"):
            request["ConfigurationSetName"] = self.settings["configuration_set"]
        return request

    def call(self, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            response: dict[str, Any] = self.client.send_email(**payload)
        except (ClientError, BotoCoreError) as exc:
            raise classify(exc) from exc
        return response

    def parse_result(self, raw: dict[str, Any], outbound: Outbound) -> SendResult:
        return SendResult(provider_message_id=str(raw["MessageId"]))

    def check(self) -> str:
        region = self.settings.get("region") or "us-east-1"
        try:
            account = self.client.get_account()
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                raise classify(exc) from exc
            # some SES-compatible endpoints lack GetAccount: listing identities is as harmless
            try:
                identities = self.client.list_email_identities().get("EmailIdentities", [])
            except (ClientError, BotoCoreError) as inner:
                raise classify(inner) from inner
            return f"SES in {region}: credentials work, {len(identities)} identities"
        except BotoCoreError as exc:
            raise classify(exc) from exc
        enabled = account.get("SendingEnabled")
        quota = (account.get("SendQuota") or {}).get("Max24HourSend")
        return f"SES account in {region}: sending {'enabled' if enabled else 'PAUSED'}" + (
            f", quota {quota:g}/24h" if quota is not None else ""
        )
