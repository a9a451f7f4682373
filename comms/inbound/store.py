"""Where raw inbound messages are kept: a local directory, or S3-compatible object storage.

The listener writes each message here *before* it answers ``250``, and the
threading task reads it back by key, so a message that was accepted is never
lost: whatever happens to the listener, the broker or a worker afterwards, the
raw bytes are on disk (fsynced) or in the bucket, and the startup
reconciliation of ``comms inbound serve`` republishes any key that has no
InboundReply row yet.

Keys look like ``inbound/2026/11/25/<uuid>.eml``; the envelope (recipients,
sender, peer) travels beside the message as ``….json``.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from comms.settings import get_settings


@dataclass(frozen=True)
class Envelope:
    recipients: list[str]
    mail_from: str | None
    peer: str | None = None
    helo: str | None = None
    received_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


class RawStore(Protocol):
    def put(self, data: bytes, envelope: Envelope) -> str: ...

    def get(self, key: str) -> tuple[bytes, Envelope]: ...

    def list_keys(self) -> Iterator[str]: ...


def new_key() -> str:
    now = datetime.now(UTC)
    return f"inbound/{now:%Y/%m/%d}/{uuid.uuid4()}.eml"


def _envelope(data: bytes) -> Envelope:
    fields: dict[str, Any] = json.loads(data)
    return Envelope(**fields)


class LocalStore:
    """A directory: each file written to a temporary name, fsynced, then renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @staticmethod
    def _staged(path: Path, data: bytes) -> str:
        """``data`` in a fsynced temporary file beside ``path``; returns its name."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return tmp

    def put(self, data: bytes, envelope: Envelope) -> str:
        key = new_key()
        message, meta = self.root / key, self.root / (key[:-4] + ".json")
        staged_meta = self._staged(meta, json.dumps(asdict(envelope)).encode())
        try:
            staged_message = self._staged(message, data)
        except BaseException:
            Path(staged_meta).unlink(missing_ok=True)
            raise
        # the envelope first: a message file without its envelope is never seen
        os.replace(staged_meta, meta)
        os.replace(staged_message, message)
        dir_fd = os.open(message.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # both renames survive a crash before 250 is answered
        finally:
            os.close(dir_fd)
        return key

    def get(self, key: str) -> tuple[bytes, Envelope]:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise KeyError(key)
        meta = path.with_suffix(".json")
        return path.read_bytes(), _envelope(meta.read_bytes())

    def list_keys(self) -> Iterator[str]:
        for path in sorted(self.root.glob("inbound/*/*/*/*.eml")):
            yield path.relative_to(self.root).as_posix()


class S3Store:
    """A bucket (AWS S3 or any S3-compatible endpoint) under a key prefix."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = boto3.client("s3", endpoint_url=endpoint_url)

    def put(self, data: bytes, envelope: Envelope) -> str:
        key = new_key()
        # S3 PUT is durable when it returns; the envelope rides along as metadata JSON
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.prefix + key[:-4] + ".json",
            Body=json.dumps(asdict(envelope)).encode(),
        )
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)
        return key

    def get(self, key: str) -> tuple[bytes, Envelope]:
        body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        meta = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key[:-4] + ".json")
        return body, _envelope(meta["Body"].read())

    def list_keys(self) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + "inbound/"):
            for item in page.get("Contents", []):
                key = str(item["Key"])[len(self.prefix) :]
                if key.endswith(".eml"):
                    yield key


@lru_cache(maxsize=1)
def get_store() -> RawStore:
    settings = get_settings()
    spec = settings.inbound_store
    if spec.startswith("s3://"):
        bucket, _, prefix = spec[5:].partition("/")
        return S3Store(bucket, prefix, settings.inbound_s3_endpoint_url)
    return LocalStore(Path(spec) if spec else settings.data_dir / "inbound")


def reset_store() -> None:
    get_store.cache_clear()
