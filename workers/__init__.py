"""The Celery fleet: the app, queue routing, thin tasks and process entry points."""
