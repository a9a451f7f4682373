"""Subscribers: validated import (CSV or JSON batch), all rows or none."""

from __future__ import annotations

import csv
import io
import uuid
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError, field_validator
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from comms.commands import E164, CommandError, field_errors
from comms.models import Subscriber

MAX_BATCH = 10_000


class SubscriberIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    email: EmailStr
    phone: E164 | None = None
    timezone: str | None = Field(None, description="IANA name, e.g. Europe/Paris")
    tags: list[str] = Field(default_factory=list, max_length=50)
    fields: dict[str, str] = Field(default_factory=dict, max_length=100)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{value!r} is not an IANA time zone") from None
        return value or None


class SubscriberBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subscribers: list[SubscriberIn] = Field(min_length=1, max_length=MAX_BATCH)


@dataclass(frozen=True)
class ImportReport:
    received: int
    written: int


def validate_rows(rows: Iterable[dict[str, Any]], *, first_line: int = 1) -> list[SubscriberIn]:
    """Validate every row; raise CommandError listing each bad field as ``line N: field``."""
    good: list[SubscriberIn] = []
    errors: list[dict[str, str]] = []
    for offset, row in enumerate(rows):
        try:
            good.append(SubscriberIn.model_validate(row))
        except ValidationError as exc:
            for err in field_errors(exc):
                errors.append(
                    {
                        "field": f"line {first_line + offset}: {err['field']}",
                        "message": err["message"],
                    }
                )
    if errors:
        raise CommandError(errors)
    return good


def parse_csv(text: str) -> list[SubscriberIn]:
    """CSV with a header: ``email`` required; ``phone``, ``timezone``, ``tags`` (separated by
    ``;``); every other column becomes a merge field."""
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "email" not in reader.fieldnames:
        raise CommandError(
            [{"field": "line 1: header", "message": "an 'email' column is required"}]
        )
    known = {"email", "phone", "timezone", "tags"}
    rows = []
    for record in reader:
        if None in record:  # more cells than header columns
            rows.append({"email": record.get("email"), "extra cells": record[None]})
            continue
        rows.append(
            {
                "email": record["email"],
                "phone": record.get("phone") or None,
                "timezone": record.get("timezone") or None,
                "tags": [t.strip() for t in (record.get("tags") or "").split(";") if t.strip()],
                "fields": {k: v for k, v in record.items() if k not in known and v is not None},
            }
        )
    return validate_rows(rows, first_line=2)


def upsert_subscribers(
    session: Session, tenant_id: uuid.UUID, subscribers: list[SubscriberIn]
) -> ImportReport:
    """Insert or update by (tenant, email); one statement per 1,000 rows, one transaction."""
    unique: dict[str, SubscriberIn] = {}
    for sub in subscribers:
        unique[sub.email.lower()] = sub  # a later row for the same address wins
    written = 0
    items = list(unique.items())
    for start in range(0, len(items), 1000):
        chunk = items[start : start + 1000]
        stmt = insert(Subscriber).values(
            [
                {
                    "id": uuid.uuid4(), "tenant_id": tenant_id, "email": email,
                    "phone": s.phone, "timezone": s.timezone, "tags": s.tags, "fields": s.fields,
                }
                for email, s in chunk
            ]
        )  # fmt: skip
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "email"],
            set_={
                "phone": stmt.excluded.phone,
                "timezone": stmt.excluded.timezone,
                "tags": stmt.excluded.tags,
                "fields": stmt.excluded.fields,
            },
        )
        written += len(session.execute(stmt.returning(Subscriber.id)).all())
    return ImportReport(received=len(subscribers), written=written)
