"""The public HTTP API (FastAPI): ``create_app()`` builds it; ``comms api`` serves it."""

from comms.api.app import create_app

__all__ = ["create_app"]
