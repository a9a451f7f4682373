"""The SES side of a sending domain: the identity, its Easy DKIM tokens, MAIL FROM.

Everything goes through ``sesv2`` as production SES wants. Two fall-backs exist
for SES-compatible endpoints that lack parts of v2 (moto, our test stand-in,
is one): when ``CreateEmailIdentity`` answers without DKIM tokens we ask SES v1
``VerifyDomainDkim`` for the same identity's tokens, and when
``PutEmailIdentityMailFromAttributes`` is not implemented we use v1
``SetIdentityMailFromDomain``. Real SES never takes either branch.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from comms.settings import get_settings


class SesIdentityError(Exception):
    pass


_clients: dict[tuple[str, str, str | None], Any] = {}


def _client(service: str, region: str) -> Any:
    """One client per service, region and endpoint (boto3 clients are thread-safe)."""
    import boto3

    key = (service, region, get_settings().domain_ses_endpoint_url)
    if key not in _clients:
        _clients[key] = boto3.client(service, region_name=region, endpoint_url=key[2])
    return _clients[key]


def reset_clients() -> None:
    for client in _clients.values():
        client.close()
    _clients.clear()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def create_identity(domain: str, region: str) -> list[str]:
    """Create (or find) the domain identity with Easy DKIM; its three DKIM tokens."""
    v2 = _client("sesv2", region)
    try:
        try:
            answer = v2.create_email_identity(EmailIdentity=domain)
        except ClientError as exc:
            if _code(exc) != "AlreadyExistsException":
                raise
            answer = v2.get_email_identity(EmailIdentity=domain)
        tokens = list((answer.get("DkimAttributes") or {}).get("Tokens") or [])
        if not tokens:
            tokens = list(_client("ses", region).verify_domain_dkim(Domain=domain)["DkimTokens"])
    except (ClientError, BotoCoreError) as exc:
        raise SesIdentityError(f"SES identity for {domain} in {region}: {exc}") from exc
    return tokens


def set_mail_from(domain: str, region: str) -> None:
    mail_from = f"bounce.{domain}"
    try:
        try:
            _client("sesv2", region).put_email_identity_mail_from_attributes(
                EmailIdentity=domain, MailFromDomain=mail_from,
                BehaviorOnMxFailure="USE_DEFAULT_VALUE",
            )  # fmt: skip
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if _code(exc) not in ("NotImplemented", "404", "InvalidAction") and status != 404:
                raise
            _client("ses", region).set_identity_mail_from_domain(
                Identity=domain, MailFromDomain=mail_from, BehaviorOnMXFailure="UseDefaultValue"
            )
    except (ClientError, BotoCoreError) as exc:
        raise SesIdentityError(f"SES MAIL FROM for {domain}: {exc}") from exc


def identity_status(domain: str, region: str) -> str:
    """``verified``, ``pending``, ``failed`` or ``missing``, as SES sees the identity."""
    try:
        answer = _client("sesv2", region).get_email_identity(EmailIdentity=domain)
    except ClientError as exc:
        if _code(exc) == "NotFoundException":
            return "missing"
        raise SesIdentityError(f"SES identity {domain}: {exc}") from exc
    except BotoCoreError as exc:
        raise SesIdentityError(f"SES identity {domain}: {exc}") from exc
    if answer.get("VerifiedForSendingStatus"):
        return "verified"
    # VerificationStatus is the identity's (DKIM-based) verification as a whole
    status = str(
        answer.get("VerificationStatus")
        or (answer.get("DkimAttributes") or {}).get("Status")
        or "PENDING"
    ).upper()
    if status == "FAILED":
        return "failed"
    return "verified" if status == "SUCCESS" else "pending"


def delete_identity(domain: str, region: str) -> None:
    """Remove the SES identity (the caller checks that no other tenant still uses it)."""
    try:
        _client("sesv2", region).delete_email_identity(EmailIdentity=domain)
    except ClientError as exc:
        if _code(exc) != "NotFoundException":
            raise SesIdentityError(f"SES identity {domain}: {exc}") from exc
    except BotoCoreError as exc:
        raise SesIdentityError(f"SES identity {domain}: {exc}") from exc
