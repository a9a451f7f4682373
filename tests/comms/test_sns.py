"""SNS message verification with a locally generated CA (the host rule stays on)."""

from __future__ import annotations

import pytest

from comms.sns import SnsVerificationError, SnsVerifier, is_sns_subscribe_url
from tests.snsutil import TOPIC, Signer, make_signer, notification


@pytest.fixture(scope="module")
def signer() -> Signer:
    return make_signer()


def _verifier(signer: Signer, **kw: object) -> SnsVerifier:
    import httpx

    return SnsVerifier(
        [TOPIC], trusted_ca_pem=signer.ca_pem, http=httpx.Client(transport=signer.transport()),
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("subject", [None, "Amazon SES Email Event Notification"])
def test_genuine_messages_are_accepted(signer: Signer, version: str, subject: str | None) -> None:
    message = signer.sign(notification('{"eventType": "Send"}', subject=subject), version)
    verified = _verifier(signer).verify(message)
    assert verified.topic_arn == TOPIC and verified.message == '{"eventType": "Send"}'


def test_subscription_confirmation_is_signed_over_its_own_fields(signer: Signer) -> None:
    msg = notification("You have chosen to subscribe")
    msg.update(
        Type="SubscriptionConfirmation",
        Token="tok",
        SubscribeURL="https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
    )
    assert _verifier(signer).verify(signer.sign(msg)).token == "tok"


def test_a_flipped_byte_is_a_mismatch(signer: Signer) -> None:
    message = signer.sign(notification('{"eventType": "Bounce"}'))
    message["Message"] = message["Message"].replace("Bounce", "Bounde")
    with pytest.raises(SnsVerificationError, match="signature mismatch"):
        _verifier(signer).verify(message)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/SimpleNotificationService-x.pem",
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.us-east-1.amazonaws.com.evil.com/SimpleNotificationService-x.pem",
    ],
)
def test_certificates_only_from_sns_hosts(signer: Signer, url: str) -> None:
    message = signer.sign(notification("{}"))
    message["SigningCertURL"] = url
    before = signer.fetched
    with pytest.raises(SnsVerificationError, match="host not allowed"):
        _verifier(signer).verify(message)
    assert signer.fetched == before  # never even fetched


def test_a_certificate_from_another_ca_is_not_trusted(signer: Signer) -> None:
    stranger = make_signer()
    message = stranger.sign(notification("{}"))
    import httpx

    verifier = SnsVerifier(
        [TOPIC], trusted_ca_pem=signer.ca_pem, http=httpx.Client(transport=stranger.transport())
    )
    with pytest.raises(SnsVerificationError, match="not trusted"):
        verifier.verify(message)


def test_expired_certificate(signer: Signer) -> None:
    old = make_signer(expired=True)
    import httpx

    verifier = SnsVerifier(
        [TOPIC], trusted_ca_pem=old.ca_pem, http=httpx.Client(transport=old.transport())
    )
    with pytest.raises(SnsVerificationError, match="expired"):
        verifier.verify(old.sign(notification("{}")))


def test_old_timestamps_and_other_topics_are_refused(signer: Signer) -> None:
    with pytest.raises(SnsVerificationError, match="too old"):
        _verifier(signer).verify(signer.sign(notification("{}", minutes_old=120)))
    other = notification("{}")
    other["TopicArn"] = "arn:aws:sns:us-east-1:999999999999:someone-else"
    with pytest.raises(SnsVerificationError, match="topic not allowed"):
        _verifier(signer).verify(signer.sign(other))


def test_missing_fields_and_unknown_types(signer: Signer) -> None:
    message = signer.sign(notification("{}"))
    del message["Signature"]
    with pytest.raises(SnsVerificationError, match="missing field Signature"):
        _verifier(signer).verify(message)
    with pytest.raises(SnsVerificationError, match="unknown message type"):
        _verifier(signer).verify({**signer.sign(notification("{}")), "Type": "Gossip"})


def test_the_certificate_is_fetched_once(signer: Signer) -> None:
    verifier = _verifier(signer)
    before = signer.fetched
    verifier.verify(signer.sign(notification("{}")))
    verifier.verify(signer.sign(notification("{}")))
    assert signer.fetched == before + 1


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=x", True),
        ("http://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription", False),
        ("https://sns.us-east-1.amazonaws.com.evil.com/?Action=ConfirmSubscription", False),
        ("https://127.0.0.1/confirm", False),
    ],
)
def test_subscribe_urls(url: str, ok: bool) -> None:
    assert is_sns_subscribe_url(url) is ok
