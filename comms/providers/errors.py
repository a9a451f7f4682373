"""The one exception tree every provider adaptor raises.

    ProviderError
     ├── TransientError          retry later, maybe on the next provider
     │    └── ThrottledError     retry after ``retry_after`` seconds
     ├── PermanentError          the recipient or the content was refused: never retry
     └── ConfigurationError      settings or credentials are wrong: stop, tell the tenant

Errors from the layer below (smtplib, botocore, httpx) are translated at the
adaptor boundary with ``raise ... from``.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "PermanentError",
    "ProviderError",
    "ThrottledError",
    "TransientError",
]


class ProviderError(Exception):
    """Base class; ``reason`` is safe to store and show (it never carries secrets)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientError(ProviderError):
    pass


class ThrottledError(TransientError):
    def __init__(self, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentError(ProviderError):
    pass


class ConfigurationError(ProviderError):
    pass
