"""The producer contract: task names, their queues and JSON arguments.

A producer service publishes these by name (Celery ``send_task`` or any client
that speaks the Celery message protocol with JSON bodies); it needs only the
broker URL. Arguments are JSON objects validated by ``comms.commands``.

| task name               | queue     | args                                |
|-------------------------|-----------|-------------------------------------|
| ``comms.send_email``    | send      | ``[EmailCommand as JSON object]``   |
| ``comms.send_sms``      | send      | ``[SmsCommand as JSON object]``     |
| ``comms.deliver``       | send      | ``["<delivery uuid>"]`` (internal)  |
| ``comms.fanout``        | fanout    | ``["<campaign uuid>", "<cursor>", seq]`` |
| ``comms.sweep``         | scheduled | ``[]`` (beat)                       |
| ``comms.engagement``    | events    | ``["<event uuid>"]`` (internal)     |
"""

from __future__ import annotations

from typing import Final

SEND_EMAIL: Final = "comms.send_email"
SEND_SMS: Final = "comms.send_sms"
DELIVER: Final = "comms.deliver"
FANOUT: Final = "comms.fanout"
SWEEP: Final = "comms.sweep"
ENGAGEMENT: Final = "comms.engagement"
INBOUND: Final = "comms.inbound"
FORWARD_REPLY: Final = "comms.forward_reply"
DOMAIN_DRIFT: Final = "comms.domain_drift"

QUEUES: Final = ("send", "fanout", "events", "inbound", "scheduled")

ROUTES: Final[dict[str, str]] = {
    SEND_EMAIL: "send",
    SEND_SMS: "send",
    DELIVER: "send",
    FANOUT: "fanout",
    SWEEP: "scheduled",
    ENGAGEMENT: "events",
    INBOUND: "inbound",
    FORWARD_REPLY: "inbound",
    DOMAIN_DRIFT: "scheduled",
}


def queue_for(task_name: str) -> str:
    return ROUTES[task_name]
