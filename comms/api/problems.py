"""Errors as ``application/problem+json`` (RFC 9457), never echoing the input."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from comms.commands import field_errors

PROBLEM = "application/problem+json"
PROBLEM_BASE = "https://comms.dev/problems/"
log = structlog.get_logger(__name__)


class Problem(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        slug: str = "about:blank",
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.slug = status, title, detail, slug
        self.errors, self.headers = errors, headers


def problem_response(problem: Problem) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem.slug if problem.slug == "about:blank" else PROBLEM_BASE + problem.slug,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if problem.errors is not None:
        body["errors"] = problem.errors
    return JSONResponse(
        body, status_code=problem.status, media_type=PROBLEM, headers=problem.headers
    )


def validation_problem(errors: list[dict[str, str]]) -> Problem:
    return Problem(
        422,
        "Invalid request",
        "; ".join(f"{e['field']}: {e['message']}" for e in errors),
        "validation",
        errors=errors,
    )


_TITLES = {400: "Bad request", 401: "Unauthorized", 404: "Not found", 405: "Method not allowed"}


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "header", "path")]
            if err.get("type") == "json_invalid":
                return problem_response(
                    Problem(
                        400,
                        "Malformed JSON",
                        "the request body is not valid JSON",
                        "malformed-json",
                    )
                )
            errors.append({"field": ".".join(loc) or "(body)", "message": str(err.get("msg"))})
        return problem_response(validation_problem(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = _TITLES.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) else title
        return problem_response(
            Problem(exc.status_code, title, detail, headers=dict(exc.headers or {}))
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("api.unhandled", error_type=type(exc).__name__)
        return problem_response(
            Problem(500, "Internal error", "something went wrong on our side; it was logged")
        )


__all__ = ["PROBLEM", "Problem", "field_errors", "install", "validation_problem"]
