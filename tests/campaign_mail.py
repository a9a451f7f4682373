"""Send one real campaign mail through the SMTP provider into a loopback sink, in-process."""

from __future__ import annotations

import email
import uuid
from email.message import EmailMessage
from email.policy import default
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from comms.campaigns import create_campaign, fire
from comms.devsink import SinkHandler, SmtpSink
from comms.models import Delivery
from comms.provider_configs import create_provider_config
from comms.providers.smtp import close_all_connections
from comms.sending import deliver
from schedulers.fanout import fanout_batch


def send_campaign_mail(
    session: Session, tenant_id: uuid.UUID, **campaign: Any
) -> tuple[uuid.UUID, uuid.UUID, EmailMessage]:
    """Create, fire, fan out and deliver a campaign to the tenant's one subscriber.

    ``campaign`` goes to ``create_campaign`` (``sender``, ``subject``, ``text``...).
    Returns the campaign id, the delivery id and the mail as the sink received it.
    """
    handler = SinkHandler()
    with SmtpSink(handler) as sink:
        create_provider_config(
            session, kind="smtp", name="sink", tenant_id=tenant_id,
            settings={"host": "127.0.0.1", "port": sink.port},
        )  # fmt: skip
        row = create_campaign(session, tenant_id, **{"name": "n", "subject": "s", **campaign})
        session.commit()
        fire(session, row.id, tenant_id)
        session.commit()
        fanout_batch(row.id, None, send_queue_depth=0)
        (delivery_id,) = session.scalars(
            select(Delivery.id).where(Delivery.campaign_id == row.id)
        ).all()
        deliver(delivery_id)
        close_all_connections()
    mail = email.message_from_bytes(handler.received[0].raw, policy=default)
    assert isinstance(mail, EmailMessage)
    return row.id, delivery_id, mail
