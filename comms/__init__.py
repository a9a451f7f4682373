"""comms: multi-tenant email and SMS delivery on a Celery worker fleet."""

__version__ = "0.1.0"
