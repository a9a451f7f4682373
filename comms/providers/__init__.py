"""Provider adaptors, found through the ``comms.providers`` entry-point group.

A separate package adds a provider by declaring, in its own pyproject::

    [project.entry-points."comms.providers"]
    myesp = "my_package.module:MyProvider"
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points

from comms.providers.base import (
    Outbound,
    OutboundEmail,
    OutboundSms,
    Provider,
    SendResult,
)
from comms.providers.errors import (
    ConfigurationError,
    PermanentError,
    ProviderError,
    ThrottledError,
    TransientError,
)

__all__ = [
    "ConfigurationError",
    "Outbound",
    "OutboundEmail",
    "OutboundSms",
    "PermanentError",
    "Provider",
    "ProviderError",
    "SendResult",
    "ThrottledError",
    "TransientError",
    "available_providers",
    "provider_class",
]


_unloadable: dict[str, str] = {}


@lru_cache(maxsize=1)
def available_providers() -> dict[str, type[Provider]]:
    """Providers whose entry point loads; the others are remembered with the reason."""
    found: dict[str, type[Provider]] = {}
    for ep in entry_points(group="comms.providers"):
        try:
            cls = ep.load()
        except ImportError as exc:
            # an optional SDK is missing: the provider is unavailable, the rest work
            _unloadable[ep.name] = f"{ep.value} cannot be imported: {exc}"
            continue
        if not (isinstance(cls, type) and issubclass(cls, Provider)):
            raise TypeError(f"entry point {ep.name!r} does not name a Provider subclass")
        found[ep.name] = cls
    return found


def provider_class(kind: str) -> type[Provider]:
    try:
        return available_providers()[kind]
    except KeyError:
        if kind in _unloadable:
            raise ConfigurationError(
                f"provider {kind!r} is unavailable: {_unloadable[kind]}"
            ) from None
        known = ", ".join(sorted(available_providers()))
        raise ConfigurationError(f"unknown provider {kind!r} (installed: {known})") from None
