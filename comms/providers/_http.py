"""Shared plumbing for providers that speak HTTP APIs through httpx."""

from __future__ import annotations

from typing import Any

import httpx

from comms.providers.base import Provider
from comms.providers.errors import TransientError


class HttpApiProvider(Provider):
    """A provider with one lazily built ``httpx.Client``; tests inject a transport."""

    default_base_url = ""
    default_timeout = 10.0

    def __init__(
        self, settings: dict[str, Any], transport: httpx.BaseTransport | None = None
    ) -> None:
        super().__init__(settings)
        self._transport = transport
        self._client: httpx.Client | None = None

    @property
    def base_url(self) -> str:
        return str(self.settings.get("base_url") or self.default_base_url).rstrip("/")

    def default_transport(self) -> httpx.BaseTransport | None:
        """The transport used when none is injected (None: httpx's own)."""
        return None

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                transport=self._transport or self.default_transport(),
                timeout=float(self.settings.get("timeout", self.default_timeout)),
                follow_redirects=False,
            )
        return self._client

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.client.request(method, self.base_url + path, **kwargs)
        except httpx.TimeoutException as exc:
            raise TransientError(f"{self.name}: timed out") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"{self.name}: {type(exc).__name__}") from exc

    @staticmethod
    def retry_after(response: httpx.Response, default: float = 1.0) -> float:
        try:
            return float(response.headers.get("Retry-After", default))
        except ValueError:
            return default

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
