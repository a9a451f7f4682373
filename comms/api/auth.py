"""Bearer API keys: who a request speaks for."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from comms.api.problems import Problem
from comms.db import unit_of_work
from comms.tenants import Principal, principal_for

_bearer = HTTPBearer(auto_error=False)


def _unauthorized(what: str) -> Problem:
    return Problem(
        401, "Unauthorized", f"send a valid {what} as `Authorization: Bearer <key>`",
        headers={"WWW-Authenticate": "Bearer"},
    )  # fmt: skip


def principal(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """A tenant or the operator; 401 for anything else."""
    found = None
    if credentials:
        with unit_of_work() as session:
            found = principal_for(session, credentials.credentials)
    if found is None:
        raise _unauthorized("API key")
    return found


def tenant_id(who: Annotated[Principal, Depends(principal)]) -> uuid.UUID:
    """The tenant of a tenant API key; operator keys are refused here."""
    if who.tenant_id is None:
        raise _unauthorized("tenant API key")
    return who.tenant_id
